"""Caption-length scaling report: step time and peak memory per text encoder and length.

Reads the job dirs of a sweep (``python experiments/train.py -m +experiment=long_captions``)
through ``ssm.report.runs``: each holds ``.hydra/`` and, when the job finished,
``results.json`` with ``step_ms_median``, ``peak_mem_mb`` and ``peak_mem_kind``; failed,
unfinished and never-started jobs are kept and named. Writes into the sweep dir:

- ``scaling.md``: the table (encoder x caption length: step ms, peak MB, the growth ratio
  t(L) / t(L/4) against the length a quarter as long), the linear-cost verdict for one
  encoder (PASS / FAIL / INCOMPLETE: t(4L) / t(L) <= bar for every L >= from_length), the
  other encoders' ratios as measured, and every job without results, by name;
- ``scaling.csv``: one row per encoder and length, failed cells included;
- ``scaling.png``: step time and peak memory against length, log-log, one line per
  encoder, with a dashed line of slope 1 (cost proportional to L) for reference.

``python experiments/scaling_report.py SWEEP_DIR`` rebuilds the report;
``ssm.report.callbacks.ScalingReport`` is the Hydra callback the preset attaches, which
builds it when the multirun ends (and after each job, so a sweep that stops on a failed
job still leaves a report naming it).
"""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ssm.report.runs import RunRecord, collect_runs, write_atomic

ENCODER_KEY = "model/text_encoder"
LENGTH_KEY = "data.max_length"
PREFERRED_ORDER = ("mamba", "bimamba", "transformer")
NOISY_SPREAD = 1.5  # a cell whose slowest timed step is this much slower than its fastest
MEMORY_KINDS = {
    "cpu_rss_growth": "growth of the process's resident (anonymous) memory above its level "
                      "before training, sampled every 5 ms",
    "cuda_max_allocated": "torch.cuda.max_memory_allocated over training, peak stats reset "
                          "at its start (parameters and optimizer state included)",
}


@dataclass
class Job:
    """One job of a sweep. status (``ssm.report.runs``' words): complete, failed (raised, or
    no step_ms_median in results.json), incomplete (no results.json: killed or still
    running) or missing (asked for by the sweep, never started)."""

    dir: Optional[Path]
    encoder: Optional[str]
    length: Optional[int]
    status: str
    reason: str = ""
    results: dict = field(default_factory=dict)
    batch_size: Optional[int] = None


@dataclass
class Cell:
    """One (encoder, length) of the table: medians over its finished jobs."""

    encoder: str
    length: int
    jobs: list
    step_ms: Optional[float] = None
    step_ms_min: Optional[float] = None
    step_ms_max: Optional[float] = None
    peak_mem_mb: Optional[float] = None
    peak_mem_kind: Optional[str] = None
    tokens_per_caption: Optional[float] = None
    prev_length: Optional[int] = None   # the length a quarter as long, when measured
    ratio: Optional[float] = None       # step_ms / step_ms at prev_length

    @property
    def ok(self) -> bool:
        return self.step_ms is not None

    @property
    def spread(self) -> Optional[float]:
        """Slowest timed step over the fastest (1.0: perfectly steady)."""
        if not self.ok or not self.step_ms_min or self.step_ms_max is None:
            return None
        return self.step_ms_max / self.step_ms_min

    @property
    def status(self) -> str:
        if self.ok:
            return "complete"
        return "/".join(sorted({job.status for job in self.jobs})) or "missing"


# ----------------------------------------------------------------------------- reading

def _check_sweep_dir(sweep_dir) -> Path:
    if sweep_dir is None or not str(sweep_dir):
        raise ValueError("sweep_dir must name a sweep directory, got nothing")
    path = Path(sweep_dir)
    if not path.is_dir():
        raise ValueError(f"sweep_dir {str(path)!r} does not exist or is not a directory")
    return path


def _int(value) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def as_job(record: RunRecord) -> Job:
    """A sweep's RunRecord (``ssm.report.runs``) as a row source of this report. A finished
    job whose results.json lacks step_ms_median counts as failed, with that as reason."""
    results = record.results if isinstance(record.results, dict) else {}
    encoder = record.value(ENCODER_KEY) or results.get("text_encoder")
    status, reason = record.status, record.error
    if status == "complete" and not isinstance(results.get("step_ms_median"), (int, float)):
        status, reason = "failed", "results.json has no step_ms_median"
    if status in ("incomplete", "failed") and record.path is not None:
        steps = record.curve("step")[0]
        step = steps[-1] if steps else None
        reason += (f"; last logged step {step} of {record.value('trainer.max_steps')}"
                   if step is not None else "; no training step logged")
    return Job(record.path, str(encoder) if encoder is not None else None,
               _int(record.value(LENGTH_KEY)), status, reason, results,
               _int(record.value("trainer.batch_size")))


def collect_jobs(sweep_dir) -> list[Job]:
    """Every job of the sweep: its job dirs, failed and unfinished ones included, and
    (status "missing") the grid points its multirun.yaml asked for that have no job dir."""
    return [as_job(r) for r in collect_runs([_check_sweep_dir(sweep_dir)])]


# ----------------------------------------------------------------------------- the table

def _order(encoders) -> list[str]:
    preferred = [e for e in PREFERRED_ORDER if e in encoders]
    return preferred + sorted(e for e in encoders if e not in PREFERRED_ORDER)


def _median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def build_table(jobs: list[Job]) -> list[Cell]:
    """One Cell per (encoder, length) seen, encoders in a fixed order, lengths ascending.
    A cell's numbers are medians over its finished jobs (seeds); ``ratio`` is its step time
    over that of the same encoder at a quarter of the length, when both were measured."""
    keyed = [j for j in jobs if j.encoder is not None and j.length is not None]
    cells = []
    for encoder in _order({j.encoder for j in keyed}):
        for length in sorted({j.length for j in keyed if j.encoder == encoder}):
            mine = [j for j in keyed if (j.encoder, j.length) == (encoder, length)]
            done = [j.results for j in mine if j.status == "complete"]
            kinds = sorted({r.get("peak_mem_kind") for r in done if r.get("peak_mem_kind")})
            cells.append(Cell(
                encoder, length, mine,
                step_ms=_median(r.get("step_ms_median") for r in done),
                step_ms_min=min((r["step_ms_min"] for r in done
                                 if isinstance(r.get("step_ms_min"), (int, float))), default=None),
                step_ms_max=max((r["step_ms_max"] for r in done
                                 if isinstance(r.get("step_ms_max"), (int, float))), default=None),
                peak_mem_mb=_median(r.get("peak_mem_mb") for r in done),
                peak_mem_kind="/".join(kinds) or None,
                tokens_per_caption=_median(r.get("tokens_per_caption") for r in done)))
    by_key = {(c.encoder, c.length): c for c in cells}
    for cell in cells:
        if cell.length % 4 == 0:
            prev = by_key.get((cell.encoder, cell.length // 4))
            if prev is not None:
                cell.prev_length = prev.length
                if cell.ok and prev.ok and prev.step_ms > 0:
                    cell.ratio = cell.step_ms / prev.step_ms
    return cells


@dataclass
class Verdict:
    encoder: str
    bar: float
    from_length: int
    status: str                 # PASS, FAIL, INCOMPLETE (a needed cell has no result), NOT JUDGED
    pairs: list                 # (L, 4L, ratio or None)

    def line(self) -> str:
        return (f"{self.encoder}: t(4L) / t(L) <= {self.bar:g} for every L >= "
                f"{self.from_length}: **{self.status}**")


def linear_verdict(cells: list[Cell], encoder: str = "mamba", bar: float = 4.5,
                   from_length: int = 256) -> Verdict:
    """Whether ``encoder`` grows at most linearly: t(4L) / t(L) <= bar for each L >=
    from_length where the table holds both L and 4L. A pair whose cells did not both finish
    makes the verdict INCOMPLETE (unless another pair already fails); no pair: NOT JUDGED."""
    if not bar > 0:
        raise ValueError(f"bar must be > 0, got {bar!r}")
    if isinstance(from_length, bool) or not isinstance(from_length, int) or from_length < 1:
        raise ValueError(f"from_length must be an int >= 1, got {from_length!r}")
    mine = {c.length: c for c in cells if c.encoder == encoder}
    pairs = [(L, 4 * L, mine[4 * L].ratio) for L in sorted(mine)
             if L >= from_length and 4 * L in mine]
    if not pairs:
        status = "NOT JUDGED"
    elif any(r is not None and r > bar for _, _, r in pairs):
        status = "FAIL"
    elif any(r is None for _, _, r in pairs):
        status = "INCOMPLETE"
    else:
        status = "PASS"
    return Verdict(encoder, bar, from_length, status, pairs)


def loglog_slope(cells: list[Cell], encoder: str, from_length: int = 1) -> Optional[float]:
    """Least-squares slope of log t against log L over the encoder's measured lengths >=
    from_length (1: linear, 2: quadratic); None with fewer than two points."""
    points = [(math.log(c.length), math.log(c.step_ms)) for c in cells
              if c.encoder == encoder and c.ok and c.length >= from_length and c.step_ms > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


# ----------------------------------------------------------------------------- writing

def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _facts(jobs: list[Job]) -> dict:
    done = [j for j in jobs if j.status == "complete"]
    pick = lambda key: sorted({str(j.results.get(key)) for j in done  # noqa: E731
                               if j.results.get(key) is not None})
    return {"device": pick("device"), "batch": sorted({str(j.batch_size) for j in done
                                                      if j.batch_size is not None}),
            "timed_steps": pick("timed_steps"), "kinds": pick("peak_mem_kind")}


def markdown(sweep_dir: Path, jobs: list[Job], cells: list[Cell], verdict: Verdict,
             from_length: int) -> str:
    facts = _facts(jobs)
    lines = ["# Caption-length scaling", "",
             f"Sweep `{sweep_dir}`: {sum(j.status == 'complete' for j in jobs)} of {len(jobs)} jobs "
             f"finished. Device: {', '.join(facts['device']) or 'unknown'}; batch "
             f"{', '.join(facts['batch']) or '?'} captions; every caption is exactly L tokens "
             f"(BOS and EOS included). Step time: the median wall time of a training step "
             f"(batch fetch, forward, backward, optimizer; image tower included) over the "
             f"steps after the warm-up ({', '.join(facts['timed_steps']) or '?'} per job)."]
    for kind in facts["kinds"]:
        lines.append(f"Peak memory ({kind}): {MEMORY_KINDS.get(kind, kind)}.")
    lines += ["", "| encoder | L | step ms | min - max ms | t(L) / t(L/4) | peak MB | "
              "tokens / caption | status |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in cells:
        spread = f"{_fmt(c.step_ms_min)} - {_fmt(c.step_ms_max)}" if c.ok else "-"
        lines.append(f"| {c.encoder} | {c.length} | {_fmt(c.step_ms)} | {spread} | "
                     f"{_fmt(c.ratio, 2)} | {_fmt(c.peak_mem_mb)} | "
                     f"{_fmt(c.tokens_per_caption, 0)} | {c.status} |")
    short = [c for c in cells if c.ok and c.tokens_per_caption is not None
             and abs(c.tokens_per_caption - c.length) > 0.5]
    if short:
        lines += ["", "Warning: captions were not L tokens long in "
                  + ", ".join(f"{c.encoder} L={c.length} ({c.tokens_per_caption:.0f})"
                              for c in short) + " (data.caption_tokens unset?)."]
    noisy = [c for c in cells if c.spread is not None and c.spread > NOISY_SPREAD]
    if noisy:
        lines += ["", f"Unsteady timings (slowest timed step over the fastest > {NOISY_SPREAD:g}): "
                  + ", ".join(f"{c.encoder} L={c.length} ({c.spread:.1f}x)" for c in noisy)
                  + ". Something else was probably using the processor; rerun on an idle "
                    "machine before trusting the ratios of these cells."]
    lines += ["", "## Linear cost", "", verdict.line(), ""]
    for low, high, ratio in verdict.pairs:
        mark = ("no result" if ratio is None else
                ("ok" if ratio <= verdict.bar else f"above {verdict.bar:g}"))
        lines.append(f"- t({high}) / t({low}) = {_fmt(ratio, 2)} ({mark})")
    slope = loglog_slope(cells, verdict.encoder, from_length)
    if slope is not None:
        lines.append(f"- log-log slope from L = {from_length}: {slope:.2f} (1 = linear)")
    others = [e for e in _order({c.encoder for c in cells}) if e != verdict.encoder]
    if others:
        lines += ["", "## Other encoders, as measured", ""]
        for encoder in others:
            ratios = [f"t({c.length}) / t({c.prev_length}) = {_fmt(c.ratio, 2)}"
                      for c in cells if c.encoder == encoder and c.prev_length is not None]
            slope = loglog_slope(cells, encoder, from_length)
            tail = f"; log-log slope from L = {from_length}: {slope:.2f}" if slope else ""
            lines.append(f"- {encoder}: {'; '.join(ratios) or 'no ratio'}{tail}")
    bad = [j for j in jobs if j.status != "complete"]
    lines += ["", "## Jobs without results", ""]
    if bad:
        lines += ["| job | encoder | L | status | reason |", "|---|---|---:|---|---|"]
        for j in bad:
            name = j.dir.name if j.dir is not None else "-"
            lines.append(f"| {name} | {j.encoder or '?'} | {j.length or '?'} | {j.status} | "
                         f"{j.reason} |")
    else:
        lines.append("None: every job finished.")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("encoder", "length", "step_ms", "step_ms_min", "step_ms_max", "ratio",
               "prev_length", "peak_mem_mb", "peak_mem_kind", "tokens_per_caption", "jobs",
               "status", "job_dirs")


def write_csv(path: Path, cells: list[Cell]) -> None:
    def value(v):
        return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)

    rows = [{"encoder": c.encoder, "length": c.length, "step_ms": value(c.step_ms),
             "step_ms_min": value(c.step_ms_min), "step_ms_max": value(c.step_ms_max),
             "ratio": value(c.ratio), "prev_length": value(c.prev_length),
             "peak_mem_mb": value(c.peak_mem_mb), "peak_mem_kind": value(c.peak_mem_kind),
             "tokens_per_caption": value(c.tokens_per_caption), "jobs": len(c.jobs),
             "status": c.status,
             "job_dirs": " ".join(j.dir.name for j in c.jobs if j.dir is not None)}
            for c in cells]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_plot(path: Path, cells: list[Cell], reference_encoder: str = "mamba",
               from_length: int = 256) -> None:
    """Two log-log panels (step ms, peak MB against L), one line per encoder, and a dashed
    slope-1 line through the reference encoder's point at from_length (or its first)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("step_ms", "training step (ms)", axes[0]),
              ("peak_mem_mb", "peak memory (MB)", axes[1]))
    encoders = _order({c.encoder for c in cells})
    for attr, label, ax in panels:
        for encoder in encoders:
            points = [(c.length, getattr(c, attr)) for c in cells if c.encoder == encoder
                      and getattr(c, attr) is not None and getattr(c, attr) > 0]
            if points:
                ax.plot(*zip(*points), marker="o", label=encoder)
        anchor_pool = [c for c in cells if c.encoder == reference_encoder
                       and getattr(c, attr) is not None and getattr(c, attr) > 0]
        anchor = next((c for c in anchor_pool if c.length >= from_length), None) or \
            (anchor_pool[0] if anchor_pool else None)
        lengths = sorted({c.length for c in cells})
        if anchor is not None and len(lengths) > 1:
            y0 = getattr(anchor, attr)
            ax.plot(lengths, [y0 * L / anchor.length for L in lengths], "k--", linewidth=1,
                    label=f"proportional to L (through {reference_encoder} at {anchor.length})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [str(L) for L in lengths])  # the measured lengths, as numbers
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("caption length L (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.suptitle("Caption-length scaling (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(sweep_dir, out_dir=None, bar: float = 4.5, from_length: int = 256,
                 linear_encoder: str = "mamba") -> dict[str, Any]:
    """Build the report of a sweep; write scaling.md, scaling.csv and scaling.png into
    ``out_dir`` (the sweep dir by default). Returns the paths, the verdict and the jobs."""
    sweep_dir = _check_sweep_dir(sweep_dir)
    verdict_args = dict(encoder=linear_encoder, bar=bar, from_length=from_length)
    jobs = collect_jobs(sweep_dir)
    cells = build_table(jobs)
    verdict = linear_verdict(cells, **verdict_args)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "scaling.md", "csv": out / "scaling.csv", "png": out / "scaling.png"}
    text = markdown(sweep_dir, jobs, cells, verdict, from_length)
    write_atomic(paths["md"], lambda p: p.write_text(text))
    write_atomic(paths["csv"], lambda p: write_csv(p, cells))
    write_atomic(paths["png"], lambda p: write_plot(p, cells, linear_encoder, from_length))
    return {"paths": paths, "verdict": verdict, "jobs": jobs, "cells": cells, "markdown": text}

