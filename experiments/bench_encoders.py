"""Text encoders timed side by side: python experiments/bench_encoders.py [overrides]

Writes encoder_bench.csv and encoder_bench.md into the Hydra run dir and prints the tables.
``threads=[1]`` for one thread only; ``lengths=[64,1024]``; ``encoders.mamba.width=256``;
``competitors=1`` with a process spinning a core beside. ``mode=profile``: one Mamba
layer's forward + backward under torch.profiler instead (profile.md and op tables).
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ssm.tasks.bench_encoders import run


@hydra.main(config_path="../conf", config_name="bench_encoders", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    print(run(cfg, out_dir))
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
