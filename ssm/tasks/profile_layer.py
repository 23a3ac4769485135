"""``python experiments/bench_encoders.py mode=profile``: where one Mamba layer's forward +
backward spends its time, by ``torch.profiler``.

The encoder ``profile.encoder`` is built as training builds it; its first Mamba mixer
runs ``mixer(hidden, seq_lens).square().sum().backward()`` on hidden (batch_size, L,
width) with every token real (the encoder passes seq_lens, so the layer gets them too),
``profile.steps`` times under the profiler after two warm-up steps, at each L of
``profile.lengths``. ``profile.scope=encoder`` profiles the whole encoder instead, on the
time mode's workload (any encoder, the Transformer too). Every profiled op's self time goes to one bucket (:data:`BUCKETS`);
the step's wall time not inside any op (Python, autograd bookkeeping) is the last line.
The profiler's own per-op cost inflates small ops, so compare tables from this command
with each other, not with benchmark timings. ``mode=steps`` runs the same steps with
neither profiler nor clock, a fixed workload for instruction counters.

Only ``ssm.modules.Mamba(d_model, d_state, d_conv, expand)`` and its ``forward(hidden,
seq_lens=...)`` are used, so the same command profiles older checkouts (the "before"
table of docs/benchmarks.md).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.profiler import ProfilerActivity, profile

from ssm.modules import Mamba
from ssm.tasks.bench_encoders import encoder_step
from ssm.tasks.build import build

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv",
           "aten::matmul", "aten::linear", "aten::dot"}
COPIES = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::_to_copy",
          "aten::to", "aten::flip", "aten::stack", "aten::constant_pad_nd", "aten::pad"}
# (bucket, test on the op's name); the first match wins.
BUCKETS = (
    ("matmul", lambda name: name in MATMULS),
    ("selective scan (compiled call)", lambda name: "selectivescan" in name.lower()),
    ("causal conv", lambda name: "conv" in name.lower()),
    ("layout copies", lambda name: name in COPIES),
    ("other torch ops (elementwise, reductions, fills)", lambda name: name.startswith("aten::")),
    ("autograd nodes", lambda name: True),
)
UNTRACED = "outside any op (Python, autograd engine)"


def bucket_of(name: str) -> str:
    return next(bucket for bucket, test in BUCKETS if test(name))


def first_mamba(encoder) -> Mamba:
    layer = next((m for m in encoder.modules() if isinstance(m, Mamba)), None)
    if layer is None:
        raise ValueError(f"profile.encoder builds a {type(encoder).__name__}, which has no "
                         "Mamba layer to profile")
    return layer


def layer_step(layer: Mamba, batch_size: int, length: int):
    """One forward + backward of ``layer`` at (batch_size, length), every token real, as
    a function; its first two calls (one-time costs: the CPU extensions' build, first
    allocations) are made here."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(batch_size, length, layer.d_model, generator=generator)
    hidden.requires_grad_()
    seq_lens = torch.full((batch_size,), length, dtype=torch.long)

    def step():
        layer.zero_grad(set_to_none=True)
        hidden.grad = None
        layer(hidden, seq_lens=seq_lens).square().sum().backward()

    for _ in range(2):
        step()
    return step


def profile_step(step, steps: int) -> dict:
    """Bucket -> ms per call of ``step`` (a forward + backward), plus 'step' (the wall
    time) and 'top' (the profiler's table of the costliest ops)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    result = {bucket: 0.0 for bucket, _ in BUCKETS}
    for event in prof.key_averages():
        result[bucket_of(event.key)] += event.self_cpu_time_total / 1e3 / steps
    result[UNTRACED] = max(0.0, wall_ms - sum(result.values()))
    result["step"] = wall_ms
    result["top"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    return result


def format_profile(results: dict, what: str, batch_size: int, width: int, threads: int) -> str:
    """Markdown: one column per length, ms per step and share of the step per bucket."""
    lengths = list(results)
    lines = [f"### {what[0].upper() + what[1:]}, forward + backward, batch {batch_size}, "
             f"width {width}, "
             f"{threads} thread{'s' if threads > 1 else ''}", "",
             "| bucket | " + " | ".join(f"L = {L}" for L in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for bucket in [b for b, _ in BUCKETS] + [UNTRACED]:
        cells = [f"{results[L][bucket]:.2f} ms ({results[L][bucket] / results[L]['step']:.0%})"
                 for L in lengths]
        lines.append(f"| {bucket} | " + " | ".join(cells) + " |")
    lines.append("| **step (profiled)** | " +
                 " | ".join(f"**{results[L]['step']:.2f} ms**" for L in lengths) + " |")
    return "\n".join(lines) + "\n"


def _steps(cfg: DictConfig):
    """(length, what runs, its step function) for each length of cfg.profile.lengths:
    the first Mamba layer of profile.encoder (scope=layer) or the whole encoder
    (scope=encoder, the time mode's workload)."""
    spec = cfg.profile
    if spec.encoder not in cfg.encoders:
        raise ValueError(f"profile.encoder={spec.encoder!r} is not one of encoders "
                         f"{list(cfg.encoders)}")
    if spec.scope not in ("layer", "encoder"):
        raise ValueError(f"profile.scope must be 'layer' or 'encoder', got {spec.scope!r}")
    if not spec.lengths or any(int(L) < 1 for L in spec.lengths) or spec.steps < 0:
        raise ValueError(f"profile.lengths must be lengths >= 1 and profile.steps >= 0, got "
                         f"{list(spec.lengths)} and {spec.steps}")
    for length in spec.lengths:
        node = OmegaConf.merge(cfg, {"data": {"max_length": length}}).encoders[spec.encoder]
        torch.manual_seed(cfg.seed)
        encoder = build(node)
        if spec.scope == "encoder":
            yield length, (f"the {spec.encoder} encoder", encoder.width), \
                encoder_step(encoder, length, cfg.batch_size, "cpu")
        else:
            layer = first_mamba(encoder)
            yield length, ("one Mamba layer", layer.d_model), \
                layer_step(layer, cfg.batch_size, length)


def run_profile(cfg: DictConfig, out_dir) -> str:
    """Profile at every length of cfg.profile.lengths; write profile.md and the profiler's
    op tables (profile_L<length>.txt) into ``out_dir``; return the Markdown."""
    if cfg.profile.steps < 1:
        raise ValueError(f"profile.steps must be >= 1 to profile, got {cfg.profile.steps}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    with _threads(cfg.profile.threads):
        for length, (what, width), step in _steps(cfg):
            results[length] = profile_step(step, cfg.profile.steps)
            (out_dir / f"profile_L{length}.txt").write_text(results[length].pop("top"))
        table = format_profile(results, what, cfg.batch_size, width, torch.get_num_threads())
    (out_dir / "profile.md").write_text(table)
    return table


def run_steps(cfg: DictConfig) -> str:
    """``mode=steps``: the profiled workload without the profiler or a clock, for
    instruction counters. Under ``valgrind --tool=callgrind``, a run with profile.steps=N
    minus one with profile.steps=0 counts N steps' instructions, deterministically."""
    with _threads(cfg.profile.threads):
        for length, (what, _), step in _steps(cfg):
            for _ in range(cfg.profile.steps):
                step()
    return (f"ran {cfg.profile.steps} forward + backward steps of {what} at lengths "
            f"{list(cfg.profile.lengths)}, batch {cfg.batch_size}")


@contextmanager
def _threads(count: int):
    """torch's intra-op threads set to ``count`` (0: leave the default) inside the block."""
    default = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(default)
