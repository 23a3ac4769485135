"""Export a run's checkpoint as model.safetensors + config.json (no Hydra needed to load):
python experiments/export.py checkpoint=outputs/train/<stamp>/checkpoints/last.pt output=DIR"""
from __future__ import annotations

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from omegaconf import DictConfig

from ssm.tasks.export import export_checkpoint


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(f"exported to {export_checkpoint(cfg.checkpoint, cfg.output)}")


if __name__ == "__main__":
    main()
