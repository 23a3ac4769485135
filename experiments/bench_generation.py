"""Caption decoders' generation speed and memory: python experiments/bench_generation.py [overrides]

Writes generation_bench.csv, generation_bench.md and generation_bench.png into the Hydra run
dir and prints the table. ``lengths=[64,256]``, ``batch_sizes=[1]``, ``repeats=1`` for a
shorter run; ``~decoders.mamba_state`` leaves a decoder out.
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ssm.report.generation import write_generation_report
from ssm.tasks.bench_generation import bench_generation


@hydra.main(config_path="../conf", config_name="bench_generation", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    rows = bench_generation(cfg, out_dir)
    markdown = write_generation_report(rows, out_dir)
    print(markdown.read_text())
    print(f"wrote {out_dir / 'generation_bench.csv'}, {markdown.name} and generation_bench.png")


if __name__ == "__main__":
    main()
