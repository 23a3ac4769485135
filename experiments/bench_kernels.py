"""Selective-scan benchmark entry point: python experiments/bench_kernels.py [overrides]

Writes kernel_bench.csv, kernel_bench.md and one kernel_bench_<mode>.png per mode into the
Hydra run dir and prints the table (titled with the machine's name).
``plot_only=PATH/kernel_bench.csv`` only redraws the PNGs from that CSV, into the run dir.
"""
from __future__ import annotations

from pathlib import Path

import _paths  # noqa: F401  (the checkout on sys.path; first)
import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from kernels.bench.kernel_bench import (CsvAppender, candidate_variants, check_correctness,
                                        check_settings, expand_shapes, format_table,
                                        run_benchmark, run_decode_benchmark)
from kernels.bench.plots import plot_csv, plot_rows
from kernels.common.machine import device_name


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is visible")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def _check(cfg: DictConfig, device: torch.device) -> tuple[str, list[dict]]:
    """The correctness check's report line and its failing cases."""
    variants = candidate_variants() if cfg.check.get("variants") else []
    checked = check_correctness(device, cfg.check.lengths, cfg.check.groups,
                                OmegaConf.to_container(cfg.check.extra_shapes), strict=False,
                                variants=variants,
                                variant_shape=OmegaConf.to_container(cfg.check.variant_shape))
    failures = [r for r in checked if not r["ok"]]
    worst = max(checked, key=lambda r: r["rel_err"] / r["tolerance"])
    head = (f"correctness: {len(checked)} cases pass" if not failures else
            f"correctness: FAILED, {len(failures)} of {len(checked)} cases over tolerance")
    line = (f"{head}; worst {worst['rel_err']:.2e} ({worst['worst']}, {worst['case']}, "
            f"tolerance {worst['tolerance']:.0e})")
    for r in failures:
        line += f"\n  {r['case']}: {r['worst']} {r['rel_err']:.2e} > {r['tolerance']:.0e}"
    return line, failures


def bench(cfg: DictConfig, out_dir: Path) -> list[dict]:
    """Run the configured check and benchmark; write CSV, Markdown and PNGs into ``out_dir``.

    A failed correctness check is reported, the timings still run and are written, and
    then an AssertionError is raised (a GPU session gets its numbers and a failing exit).
    """
    out_dir = Path(out_dir)
    if cfg.get("plot_only"):
        paths = plot_csv(cfg.plot_only, out_dir)
        print("plots: " + ", ".join(str(p) for p in paths), flush=True)
        return []
    device = resolve_device(cfg.device)
    # Bad settings fail here, before a minutes-long check.
    listed = OmegaConf.to_container(cfg.shapes) if cfg.shapes else []
    sweeps = OmegaConf.to_container(cfg.sweeps) if cfg.get("sweeps") else []
    main_shapes = expand_shapes(listed) if listed else []
    swept = [s for s in expand_shapes(listed, sweeps) if s not in main_shapes]
    variants = candidate_variants() if cfg.variants else []
    check_settings(list(cfg.backends) + variants, list(cfg.modes))
    if cfg.check.enabled and device.type != "cuda":
        raise ValueError("check.enabled needs device=cuda (the interpreter check is pytest's)")
    title = f"Selective scan on {device_name(device)}"
    report, failures = [], []
    if cfg.check.enabled:
        line, failures = _check(cfg, device)
        print(line, flush=True)
        report.append(line)
    # Each row is appended to the CSV as soon as it is measured: a killed run keeps them.
    append = CsvAppender(out_dir / cfg.output_csv)

    def on_row(row):
        append(row)
        timing = (f"{row['median_ms']:.4f} ms" if "median_ms" in row
                  else f"skipped: {row['skipped']}")
        print(f"  {row['backend']} {row['mode']} ({row['b']}, {row['d']}, {row['l']}, "
              f"{row['n']}) {row['dtype']}: {timing}", flush=True)

    # The candidates on the listed shapes; the sweeps with the configured backends only.
    rows = []
    for shapes, backends in ((main_shapes, list(cfg.backends) + variants),
                             (swept, list(cfg.backends))):
        if shapes:
            rows += run_benchmark(shapes, backends, list(cfg.modes), device,
                                  cfg.reference_max_elements, cfg.cpu_min_run_time, on_row)
    if cfg.decode_shapes:
        rows += run_decode_benchmark(OmegaConf.to_container(cfg.decode_shapes), device, on_row)
    table = format_table(rows, title)
    print(table, flush=True)
    paths = plot_rows([r for r in rows if r["mode"] != "decode"], out_dir)
    plots = "plots: " + ", ".join(p.name for p in paths)
    (out_dir / "kernel_bench.md").write_text("\n\n".join(report + [table, plots]) + "\n")
    print(f"wrote {out_dir / cfg.output_csv}, kernel_bench.md; {plots}", flush=True)
    if failures:
        raise AssertionError(f"correctness check: {len(failures)} cases over tolerance "
                             "(listed above; timings were still written)")
    return rows


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    bench(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
