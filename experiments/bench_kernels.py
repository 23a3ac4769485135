"""Selective-scan benchmark entry point: python experiments/bench_kernels.py [overrides]

Writes kernel_bench.csv and kernel_bench.md into the Hydra run dir and prints the table.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from ssm.bench.kernel_bench import check_correctness, format_table, run_benchmark, write_csv  # noqa: E402
from ssm.bench.roofline import device_name  # noqa: E402


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is visible")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def bench(cfg: DictConfig, out_dir: Path) -> list[dict]:
    """Run the configured check and benchmark; write CSV and Markdown into ``out_dir``."""
    device = resolve_device(cfg.device)
    title = f"Selective scan on {device_name(device)}"
    report = []
    if cfg.check.enabled:
        if device.type != "cuda":
            raise ValueError("check.enabled needs device=cuda (the interpreter check is pytest's)")
        checked = check_correctness(device, cfg.check.lengths, cfg.check.groups,
                                    OmegaConf.to_container(cfg.check.extra_shapes))
        worst = max(checked, key=lambda r: r["rel_err"] / r["tolerance"])
        line = (f"correctness: {len(checked)} cases pass; worst {worst['rel_err']:.2e} "
                f"({worst['worst']}, {worst['case']}, tolerance {worst['tolerance']:.0e})")
        print(line, flush=True)
        report.append(line)
    rows = run_benchmark(OmegaConf.to_container(cfg.shapes), list(cfg.backends), list(cfg.modes),
                         device, cfg.reference_max_elements, cfg.cpu_min_run_time)
    table = format_table(rows, title)
    print(table, flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / cfg.output_csv)
    (out_dir / "kernel_bench.md").write_text("\n\n".join(report + [table]) + "\n")
    return rows


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    bench(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
