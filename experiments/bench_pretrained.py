"""Load time of a pretrained Mamba LM as a text tower, and its error against transformers:
python experiments/bench_pretrained.py [d_model=768 n_layer=24 vocab_size=50280]"""
from __future__ import annotations

import json

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ssm.tasks.bench_pretrained import bench_pretrained


@hydra.main(config_path="../conf", config_name="bench_pretrained", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(json.dumps(bench_pretrained(cfg, HydraConfig.get().runtime.output_dir), indent=2))


if __name__ == "__main__":
    main()
