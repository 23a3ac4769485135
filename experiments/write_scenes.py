"""A folder of synthetic scene PNGs and captions.txt to try search on:
python experiments/write_scenes.py out=scenes n=40"""
from __future__ import annotations

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from omegaconf import DictConfig

from ssm.tasks.search import write_scenes


@hydra.main(config_path="../conf", config_name="write_scenes", version_base="1.3")
def main(cfg: DictConfig) -> None:
    folder = write_scenes(cfg.out, cfg.n, cfg.seed, cfg.image_size)
    print(f"wrote {cfg.n} scenes and captions.txt to {folder}")


if __name__ == "__main__":
    main()
