"""The task behind ``experiments/bench_generation.py``: how fast each caption decoder
generates, and in how much memory, as the caption grows.

Each decoder is built as the training config builds it (``conf/model/decoder``), with
random weights (speed does not depend on them), beside the training image tower. For each
batch size and length it generates exactly that many tokens per image (EOS ignored),
one decoder after another in one process; see ``ssm.eval.generation.generation_speed``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from omegaconf import DictConfig

from kernels.common.machine import device_name
from ssm.data import ByteTokenizer
from ssm.encoders import parameter_count
from ssm.eval.generation import generation_speed
from ssm.tasks.build import build

CSV_NAME = "generation_bench.csv"
COLUMNS = ("decoder", "batch_size", "new_tokens", "tokens_per_s", "seconds", "peak_mem_mb",
           "peak_mem_kind", "cache_mb", "params", "device")


def _check(cfg: DictConfig) -> None:
    if not cfg.decoders:
        raise ValueError("decoders is empty: name at least one decoder config")
    for key in ("lengths", "batch_sizes"):
        values = list(cfg[key])
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                             for v in values):
            raise ValueError(f"{key} must be a non-empty list of ints >= 1, got {values}")


def run_bench(cfg: DictConfig, device) -> list[dict]:
    """One row per (decoder, batch size, length)."""
    _check(cfg)
    torch.manual_seed(cfg.seed)
    image_encoder = build(cfg.model.image_encoder).to(device).eval()
    size = cfg.data.image_size
    images = torch.rand(max(cfg.batch_sizes), 3, size, size,
                        generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    tokenizer, machine, rows = ByteTokenizer(), device_name(device), []
    for name in cfg.decoders:
        torch.manual_seed(cfg.seed)
        decoder = build(cfg.decoders[name]).to(device).eval()
        for b in cfg.batch_sizes:
            for n in cfg.lengths:
                speed = generation_speed(image_encoder, decoder, images[:b], n, tokenizer,
                                         cfg.repeats)
                rows.append({"decoder": name, **speed, "params": parameter_count(decoder),
                             "device": machine})
    return rows


def write_rows(rows: list[dict], out_dir) -> Path:
    """generation_bench.csv of the rows in ``out_dir``; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / CSV_NAME, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return out_dir / CSV_NAME


def bench_generation(cfg: DictConfig, out_dir) -> list[dict]:
    """Time the decoders; write generation_bench.csv into ``out_dir``; returns the rows."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = run_bench(cfg, device)
    write_rows(rows, out_dir)
    return rows
