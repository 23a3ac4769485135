"""The task behind ``experiments/bench_encoders.py``: text encoders timed side by side.

Each encoder is built as the training config builds it (``conf/model/text_encoder``) and
runs forward + backward of ``encoder(tokens, mask).square().sum()`` on a batch whose every
token is real, at each length and thread count. All in one process, one after another, so
that the encoders see the same machine state. ``competitors=N`` times a busy machine: N
background processes each keep a core busy throughout.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from kernels.common.machine import device_name
from kernels.common.timing import time_ms
from ssm.encoders import parameter_count
from ssm.tasks.build import build

COLUMNS = ("encoder", "length", "threads", "competitors", "batch_size", "params", "median_ms",
           "p20_ms", "p80_ms", "x_ref", "device")


def _check(cfg: DictConfig) -> None:
    if not cfg.encoders:
        raise ValueError("encoders is empty: name at least one text encoder config")
    if cfg.reference not in cfg.encoders:
        raise ValueError(f"reference={cfg.reference!r} is not one of encoders "
                         f"{list(cfg.encoders)}")
    for key in ("lengths", "threads"):
        values = list(cfg[key])
        if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ValueError(f"{key} must be a non-empty list of ints, got {values}")
    if any(v < 1 for v in cfg.lengths) or any(v < 0 for v in cfg.threads):
        raise ValueError(f"lengths must be >= 1 and threads >= 0 (0: torch's default), got "
                         f"lengths={list(cfg.lengths)}, threads={list(cfg.threads)}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if isinstance(cfg.competitors, bool) or not isinstance(cfg.competitors, int) \
            or cfg.competitors < 0:
        raise ValueError(f"competitors must be an int >= 0, got {cfg.competitors!r}")


@contextmanager
def busy_cores(count: int):
    """``count`` background processes, each spinning one core (a Python loop), for as
    long as the block runs: the busy machine that shared CI runners and laptops are."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _encoder(cfg: DictConfig, name: str, length: int, device):
    """The encoder ``name`` for captions of ``length`` tokens (the Transformer's position
    table follows data.max_length, as in the long-caption sweep)."""
    node = OmegaConf.merge(cfg, {"data": {"max_length": length}}).encoders[name]
    torch.manual_seed(cfg.seed)
    return build(node).to(device)


def encoder_step(encoder, length: int, batch_size: int, device):
    """One forward + backward of ``encoder(tokens, mask).square().sum()`` at (batch_size,
    length), every token real, as a function; called once here, so one-time costs (the
    CPU extensions' build, Triton compiles) stay out of what follows."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (batch_size, length), generator=generator).to(device)
    mask = torch.ones(batch_size, length, dtype=torch.bool, device=device)

    def step():
        encoder.zero_grad(set_to_none=True)
        encoder(tokens, mask).square().sum().backward()
    step()
    return step


def time_encoder(encoder, length: int, batch_size: int, device, min_run_time: float):
    """(median, p20, p80) ms of one forward + backward at (batch_size, length)."""
    return time_ms(encoder_step(encoder, length, batch_size, device), device, min_run_time)


def run_bench(cfg: DictConfig, device) -> list[dict]:
    """One row per (threads, length, encoder), with ``x_ref``: median over the reference
    encoder's median at the same length and threads."""
    _check(cfg)
    default_threads = torch.get_num_threads()
    rows = []
    try:
        with busy_cores(cfg.competitors):
            for threads in cfg.threads:
                torch.set_num_threads(threads or default_threads)
                for length in cfg.lengths:
                    rows += _time_length(cfg, length, device)
    finally:
        torch.set_num_threads(default_threads)
    return rows


def _time_length(cfg: DictConfig, length: int, device) -> list[dict]:
    """Every encoder at one length and the current thread count, against the reference."""
    block = []
    for name in cfg.encoders:
        encoder = _encoder(cfg, name, length, device)
        median, p20, p80 = time_encoder(encoder, length, cfg.batch_size, device,
                                        cfg.min_run_time)
        block.append({"encoder": name, "length": length, "threads": torch.get_num_threads(),
                      "competitors": cfg.competitors, "batch_size": cfg.batch_size,
                      "params": parameter_count(encoder), "median_ms": median, "p20_ms": p20,
                      "p80_ms": p80, "device": device_name(device)})
    ref = next(r["median_ms"] for r in block if r["encoder"] == cfg.reference)
    return [{**r, "x_ref": r["median_ms"] / ref} for r in block]


def format_markdown(rows: list[dict], reference: str) -> str:
    """One table per thread count: ms per encoder and length, and the ratio to ``reference``."""
    lines = []
    for threads in dict.fromkeys(r["threads"] for r in rows):
        mine = [r for r in rows if r["threads"] == threads]
        lengths = list(dict.fromkeys(r["length"] for r in mine))
        encoders = list(dict.fromkeys(r["encoder"] for r in mine))
        cell = {(r["encoder"], r["length"]): r for r in mine}
        busy = mine[0].get("competitors", 0)
        lines += [f"### {mine[0]['device'].rsplit(', ', 1)[0]}, {threads} thread"
                  f"{'s' if threads > 1 else ''}, batch {mine[0]['batch_size']}"
                  + (f", {busy} competing process{'es' if busy > 1 else ''}" if busy else ""), "",
                  "| encoder | params | " + " | ".join(f"L = {L}" for L in lengths) + " |",
                  "|---|---:|" + "---:|" * len(lengths)]
        for name in encoders:
            params = cell[(name, lengths[0])]["params"]
            cells = [f"{cell[(name, L)]['median_ms']:.1f} ms ({cell[(name, L)]['x_ref']:.2f}x)"
                     for L in lengths]
            lines.append(f"| {name} | {params:,} | " + " | ".join(cells) + " |")
        lines += ["", f"Median of a forward + backward; in brackets the time over {reference}'s.",
                  ""]
    return "\n".join(lines)


def run(cfg: DictConfig, out_dir) -> str:
    """The entry point's task: ``mode=time`` times the encoders (:func:`bench_encoders`),
    ``mode=profile`` profiles one Mamba layer and ``mode=steps`` just runs it, for
    instruction counters (``ssm.tasks.profile_layer``). Returns what to print."""
    if cfg.mode == "profile":
        from ssm.tasks.profile_layer import run_profile
        return run_profile(cfg, out_dir)
    if cfg.mode == "steps":
        from ssm.tasks.profile_layer import run_steps
        return run_steps(cfg)
    if cfg.mode != "time":
        raise ValueError(f"mode must be 'time', 'profile' or 'steps', got {cfg.mode!r}")
    return format_markdown(bench_encoders(cfg, out_dir), cfg.reference)


def bench_encoders(cfg: DictConfig, out_dir) -> list[dict]:
    """Time the encoders; write encoder_bench.csv and encoder_bench.md into ``out_dir``."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = run_bench(cfg, device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "encoder_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "encoder_bench.md").write_text(format_markdown(rows, cfg.reference))
    return rows
