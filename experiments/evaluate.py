"""Re-evaluate a saved run: python experiments/evaluate.py checkpoint=PATH"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssm.train.run import evaluate_checkpoint  # noqa: E402


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    results, path = evaluate_checkpoint(Path(cfg.checkpoint), cfg.device, cfg.batch_size,
                                        Path(cfg.output) if cfg.output else None)
    print(json.dumps(results, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
