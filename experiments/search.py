"""Search a folder of images with a trained model, or caption one image from a list:
python experiments/search.py checkpoint=PATH images=DIR query="a red circle" k=5
python experiments/search.py checkpoint=PATH image=photo.png captions=captions.txt"""
from __future__ import annotations

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ssm.tasks.search import format_results, search


@hydra.main(config_path="../conf", config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(format_results(search(cfg, HydraConfig.get().runtime.output_dir)))


if __name__ == "__main__":
    main()
