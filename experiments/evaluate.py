"""Re-evaluate a saved run: python experiments/evaluate.py checkpoint=PATH"""
from __future__ import annotations

import json
from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from omegaconf import DictConfig, OmegaConf

from ssm.tasks import evaluate_checkpoint


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    results, path = evaluate_checkpoint(Path(cfg.checkpoint), cfg.device, cfg.batch_size,
                                        Path(cfg.output) if cfg.output else None,
                                        OmegaConf.to_container(cfg.caption, resolve=True))
    print(json.dumps(results, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
