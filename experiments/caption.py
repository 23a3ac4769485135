"""Caption images with a trained model:

    python experiments/caption.py checkpoint=outputs/train/<stamp>/checkpoints/last.pt images=[a.png,b.jpg]

Prints one line per image: its path, a tab, its caption. strategy=beam (or
'strategy={name: sample, top_p: 0.9, seed: 1}') changes the decoding.
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from omegaconf import DictConfig, OmegaConf

from ssm.tasks.caption import caption_images


@hydra.main(config_path="../conf", config_name="caption", version_base="1.3")
def main(cfg: DictConfig) -> None:
    strategy = OmegaConf.to_container(cfg.strategy) if OmegaConf.is_config(cfg.strategy) \
        else cfg.strategy
    images = [cfg.images] if isinstance(cfg.images, str) else list(cfg.images)
    for path, text in caption_images(Path(cfg.checkpoint), images, cfg.max_new_tokens,
                                     strategy, cfg.device):
        print(f"{path}\t{text}")


if __name__ == "__main__":
    main()
