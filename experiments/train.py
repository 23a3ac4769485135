"""Train a CLIP model: python experiments/train.py [overrides]

Single process, a Hydra multirun (-m), or torchrun --nproc_per_node N experiments/train.py.
Returns cfg.optimize_metric (t2i_r5 by default) for sweepers such as Optuna.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from ssm.train.run import train  # noqa: E402


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    results = train(cfg, Path(hydra_cfg.runtime.output_dir), group=group)
    return float(results.get(cfg.optimize_metric, float("nan")))


if __name__ == "__main__":
    main()
