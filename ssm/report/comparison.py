"""Comparisons over seeds from finished sweeps: mean +- std per text encoder (or decoder).

``write_comparison_report(sweep_dirs, out_dir, group_by, spec)`` writes comparison.md,
comparison.csv (one row per encoder, or per value of ``group_by``: any Hydra choice or
dotted config key), comparison_runs.csv (one row per job, failed ones included) and the
spec's plots. Runs that failed, were cut short or never started are listed by name in the
Markdown, never dropped silently. ``ReportSpec`` says what a comparison reports: the text
encoder one here (``ENCODERS``), the caption decoder one in ``ssm.report.decoders``.
"""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ssm.encoders.parameters import MATCH_TOLERANCE, parameter_spread, parameters_matched
from ssm.report import plots
from ssm.report.runs import RunRecord, collect_runs

# (results.json key, column label, format)
METRICS = [
    ("t2i_r1", "t2i R@1", ".3f"), ("t2i_r5", "t2i R@5", ".3f"),
    ("i2t_r1", "i2t R@1", ".3f"), ("i2t_r5", "i2t R@5", ".3f"),
    ("order_acc", "word-order probe", ".3f"), ("order_acc_text_only", "text-only baseline", ".3f"),
    ("zeroshot_acc", "zero-shot", ".3f"),
    ("samples_per_s", "samples/s", ".0f"), ("peak_mem_mb", "peak MB", ".0f"),
]
DEFAULT_GROUP = "model/text_encoder"


def _retrieval_notes(records, out_dir) -> list[str]:
    lines = []
    val_pairs = {r.results.get("val_pairs") for r in records if r.status == "complete"} - {None}
    if len(val_pairs) == 1:
        pairs = val_pairs.pop()
        lines.append(f"Retrieval over {pairs} held-out pairs: chance R@1 = {1 / pairs:.3f}, "
                     f"R@5 = {5 / pairs:.3f}. The word-order probe scores a caption against "
                     "the same words reordered; the text-only baseline (a bag-of-bytes model) "
                     "sits at 0.5 by construction.")
    lines.append("Ranks (each run's results.json): ties count against the model, and "
                 "`*_median_rank` over an even number of queries is the mean of the two middle "
                 "ranks; open_clip floors that median and breaks ties by sort order, so do not "
                 "compare its median ranks with these directly.")
    return lines


@dataclass(frozen=True)
class ReportSpec:
    """What a comparison reports. metrics: (results.json key, column label, format);
    params_key: the parameter count held to the matching rule; notes(records, out_dir) ->
    lines and plots(summaries, records, out_dir) -> file names add the comparison's own
    parts."""

    title: str
    label: str                      # what one compared thing is called: "encoder"
    group_by: str                   # the Hydra choice compared by default
    metrics: tuple
    params_key: str
    params_column: str              # the table's column: "params (text)"
    params_label: str               # the matching line: "Text-encoder parameters: ..."
    notes: Callable
    plots: Callable


ENCODERS = ReportSpec("Text encoder comparison", "encoder", DEFAULT_GROUP, tuple(METRICS),
                      "params_text", "params (text)", "Text-encoder", _retrieval_notes,
                      lambda summaries, records, out_dir: plots.comparison_plots(summaries,
                                                                                 out_dir))


def varied_keys(group_by: str) -> tuple[str, str]:
    """The config keys a fair comparison may vary: the compared one and the seed (a Hydra
    choice such as ``model/text_encoder`` is the config node ``model.text_encoder``)."""
    return group_by.replace("/", "."), "seed"


def group_label(group_by: str, spec: ReportSpec = ENCODERS) -> str:
    """The table's name for what is compared: "encoder" for the default, else the key."""
    return spec.label if group_by == spec.group_by else group_by


@dataclass
class GroupSummary:
    name: str
    runs: list            # every RunRecord of this group, whatever its status
    params: int | None    # the spec's parameter count (text encoder, decoder)

    @property
    def complete(self) -> list:
        return [r for r in self.runs if r.status == "complete"]

    def stats(self, key: str) -> tuple[float, float, int]:
        """(mean, sample std, n) of ``key`` over complete runs; std is nan for n < 2."""
        values = [float(r.results[key]) for r in self.complete
                  if isinstance(r.results.get(key), (int, float))]
        if not values:
            return math.nan, math.nan, 0
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return statistics.fmean(values), std, len(values)


def summarize(records: list[RunRecord], group_by: str = DEFAULT_GROUP,
              params_key: str = "params_text") -> list[GroupSummary]:
    """Group records by ``group_by`` (a Hydra choice or a dotted config key), in the order
    the groups first appear."""
    groups: dict[str, list] = {}
    for record in records:
        groups.setdefault(str(record.value(group_by)), []).append(record)
    summaries = []
    for name, runs in groups.items():
        counts = {r.results.get(params_key) for r in runs if r.status == "complete"}
        counts.discard(None)
        summaries.append(GroupSummary(name, runs, max(counts) if counts else None))
    return summaries


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def config_differences(records: list[RunRecord], varied=varied_keys(DEFAULT_GROUP)) -> list[str]:
    """Config keys (outside ``varied``) whose values differ between complete runs."""
    flat = [dict(_flatten(r.config)) for r in records if r.status == "complete"]
    keys = set().union(*flat) if flat else set()
    differ = []
    for key in sorted(keys):
        if any(key == v or key.startswith(v + ".") for v in varied):
            continue
        if len({repr(f.get(key, "<absent>")) for f in flat}) > 1:
            differ.append(key)
    return differ


def _cell(mean: float, std: float, fmt: str) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:{fmt}}" if math.isnan(std) else f"{mean:{fmt}} ± {std:{fmt}}"


def _job_name(record: RunRecord) -> str:
    return str(record.path) if record.path else "(no job dir)"


def format_markdown(summaries, records, sweep_dirs, differences, plot_files,
                    group_by: str = DEFAULT_GROUP, spec: ReportSpec = ENCODERS,
                    out_dir=None) -> str:
    label, metrics = group_label(group_by, spec), spec.metrics
    status_counts = {s: sum(r.status == s for r in records)
                     for s in ("complete", "failed", "incomplete", "missing")}
    title = spec.title if group_by == spec.group_by else f"Comparison by `{group_by}`"
    lines = [f"# {title}", "",
             "Sweep: " + ", ".join(f"`{d}`" for d in sweep_dirs) + ". "
             f"{len(records)} jobs: " + ", ".join(f"{n} {s}" for s, n in status_counts.items()) + ".",
             "Mean ± sample std over seeds (complete runs only; `n/a` where no run finished).", ""]
    header = [label, spec.params_column, "runs"] + [label for _, label, _ in metrics]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        params = f"{s.params:,}" if s.params else "n/a"
        cells = [s.name, params, f"{len(s.complete)}/{len(s.runs)}"]
        cells += [_cell(*s.stats(key)[:2], fmt) for key, _, fmt in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    counts = [s.params for s in summaries if s.params]
    if len(counts) > 1:
        spread = parameter_spread(counts)
        verdict = (f"matched within {MATCH_TOLERANCE:.0%}" if parameters_matched(counts)
                   else f"NOT matched within {MATCH_TOLERANCE:.0%}")
        lines.append(f"{spec.params_label} parameters: largest/smallest − 1 = "
                     f"{spread:.1%}, {verdict}.")
    lines.append("Config: identical across complete runs apart from "
                 + ", ".join(f"`{k}`" for k in varied_keys(group_by)) + "." if not differences else
                 "Config: complete runs also differ in " + ", ".join(f"`{k}`" for k in differences) + ".")
    lines += spec.notes(records, out_dir)
    lines.append("")
    lines += [f"![{name}]({name})" for name in plot_files]
    unfinished = [r for r in records if r.status != "complete"]
    lines += ["", "## Runs not complete", ""]
    if unfinished:
        lines += [f"| job | {label} | seed | status | reason |", "|---|---|---|---|---|"]
        for r in unfinished:
            reason = (r.error or "").replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {_job_name(r)} | {r.value(group_by)} | "
                         f"{r.value('seed')} | {r.status} | {reason} |")
    else:
        lines.append("None: every job finished.")
    lines += ["", "## Per-run results", "", f"| job | {label} | seed | status | "
              + " | ".join(label for _, label, _ in metrics) + " |",
              "|" + "---|" * (4 + len(metrics))]
    for r in records:
        cells = [f"{r.results[k]:{fmt}}" if isinstance(r.results.get(k), (int, float)) else ""
                 for k, _, fmt in metrics]
        lines.append(f"| {_job_name(r)} | {r.value(group_by)} | {r.value('seed')} "
                     f"| {r.status} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csvs(summaries, records, out_dir: Path, group_by: str = DEFAULT_GROUP,
               spec: ReportSpec = ENCODERS) -> None:
    label, metrics = group_label(group_by, spec), spec.metrics
    with open(out_dir / "comparison.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([label, spec.params_key, "runs_complete", "runs_total"]
                        + [f"{k}_{s}" for k, _, _ in metrics for s in ("mean", "std")])
        for s in summaries:
            row = [s.name, s.params or "", len(s.complete), len(s.runs)]
            for key, _, _ in metrics:
                mean, std, _ = s.stats(key)
                row += ["" if math.isnan(mean) else mean, "" if math.isnan(std) else std]
            writer.writerow(row)
    with open(out_dir / "comparison_runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", label, "seed", "status", "error"] + [k for k, _, _ in metrics])
        for r in records:
            writer.writerow([_job_name(r), r.value(group_by), r.value("seed"),
                             r.status, r.error] + [r.results.get(k, "") for k, _, _ in metrics])


def write_comparison_report(sweep_dirs, out_dir=None, group_by: str | None = None,
                            spec: ReportSpec = ENCODERS) -> Path:
    """Build the report from one or more sweep dirs into ``out_dir`` (default: the first
    sweep dir), comparing along ``group_by`` (default: the spec's). Returns the path of
    comparison.md."""
    group_by = group_by or spec.group_by
    sweep_dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path))
                                    else sweep_dirs)]
    if not sweep_dirs:
        raise ValueError("sweep_dirs is empty: give at least one sweep directory")
    records = collect_runs(sweep_dirs)
    summaries = summarize(records, group_by, spec.params_key)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dirs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_files = spec.plots(summaries, records, out_dir)
    write_csvs(summaries, records, out_dir, group_by, spec)
    markdown = format_markdown(summaries, records, sweep_dirs,
                               config_differences(records, varied_keys(group_by)), plot_files,
                               group_by, spec, out_dir)
    (out_dir / "comparison.md").write_text(markdown)
    return out_dir / "comparison.md"
