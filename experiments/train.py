"""Train a CLIP model: python experiments/train.py [overrides]

Single process, a Hydra multirun (-m), or torchrun --nproc_per_node N experiments/train.py.
Returns cfg.optimize_metric (t2i_r5 by default) for sweepers such as Optuna
(-m hparams_search=itc_optuna). ``resume=true hydra.run.dir=DIR`` continues the run in DIR
with its own config. Hydra does not write the run dir's .hydra/ here (conf/train.yaml sets
hydra.output_subdir to null): the task writes it once it has accepted the start, so a
refused start leaves an existing run dir as it was (ssm/tasks/run_dir.py).
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ssm.tasks import train


def objective(results: dict, metric: str, required: bool = True) -> float:
    """results[metric] as a float: the value a sweeper optimises. Ranks other than 0
    evaluate nothing (empty results) and return NaN, which launchers drop (they keep rank
    0's). A missing or non-numeric metric is NaN when nothing reads the value, else an
    error that names it (Optuna cannot take a NaN)."""
    if not results:
        return float("nan")
    value = results.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not required:
        return float("nan")
    if metric not in results:
        numeric = sorted(k for k, v in results.items() if isinstance(v, (int, float)))
        raise ValueError(f"optimize_metric={metric!r} is not in results.json; "
                         f"choose one of {numeric}")
    raise ValueError(f"optimize_metric={metric!r} is {value!r}, not a number")


def _value_is_read(hydra_cfg) -> bool:
    """A sweeper other than Hydra's basic one (which ignores it) reads the returned value."""
    return (hydra_cfg.mode == RunMode.MULTIRUN
            and not str(hydra_cfg.sweeper.get("_target_", "")).endswith("BasicSweeper"))


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    results = train(cfg, Path(hydra_cfg.runtime.output_dir), group=group)
    return objective(results, cfg.optimize_metric, required=_value_is_read(hydra_cfg))


if __name__ == "__main__":
    main()
