"""The encoder comparison: mean +- std over seeds per text encoder, from finished sweeps.

``write_comparison_report(sweep_dirs, out_dir, group_by)`` writes comparison.md,
comparison.csv (one row per encoder, or per value of ``group_by``: any Hydra choice or
dotted config key), comparison_runs.csv (one row per job, failed ones included) and the
plots of ``ssm.report.plots``. Runs that failed, were cut short or never started are
listed by name in the Markdown, never dropped silently.
"""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

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


def varied_keys(group_by: str) -> tuple[str, str]:
    """The config keys a fair comparison may vary: the compared one and the seed (a Hydra
    choice such as ``model/text_encoder`` is the config node ``model.text_encoder``)."""
    return group_by.replace("/", "."), "seed"


def group_label(group_by: str) -> str:
    """The table's name for what is compared: "encoder" for the default, else the key."""
    return "encoder" if group_by == DEFAULT_GROUP else group_by


@dataclass
class GroupSummary:
    name: str
    runs: list            # every RunRecord of this group, whatever its status
    params_text: int | None

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


def summarize(records: list[RunRecord], group_by: str = DEFAULT_GROUP) -> list[GroupSummary]:
    """Group records by ``group_by`` (a Hydra choice or a dotted config key), in the order
    the groups first appear."""
    groups: dict[str, list] = {}
    for record in records:
        groups.setdefault(str(record.value(group_by)), []).append(record)
    summaries = []
    for name, runs in groups.items():
        counts = {r.results.get("params_text") for r in runs if r.status == "complete"}
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
                    group_by: str = DEFAULT_GROUP) -> str:
    label = group_label(group_by)
    status_counts = {s: sum(r.status == s for r in records)
                     for s in ("complete", "failed", "incomplete", "missing")}
    title = "Text encoder comparison" if group_by == DEFAULT_GROUP else f"Comparison by `{group_by}`"
    lines = [f"# {title}", "",
             "Sweep: " + ", ".join(f"`{d}`" for d in sweep_dirs) + ". "
             f"{len(records)} jobs: " + ", ".join(f"{n} {s}" for s, n in status_counts.items()) + ".",
             "Mean ± sample std over seeds (complete runs only; `n/a` where no run finished).", ""]
    header = [label, "params (text)", "runs"] + [label for _, label, _ in METRICS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        params = f"{s.params_text:,}" if s.params_text else "n/a"
        cells = [s.name, params, f"{len(s.complete)}/{len(s.runs)}"]
        cells += [_cell(*s.stats(key)[:2], fmt) for key, _, fmt in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    counts = [s.params_text for s in summaries if s.params_text]
    if len(counts) > 1:
        spread = parameter_spread(counts)
        verdict = (f"matched within {MATCH_TOLERANCE:.0%}" if parameters_matched(counts)
                   else f"NOT matched within {MATCH_TOLERANCE:.0%}")
        lines.append(f"Text-encoder parameters: largest/smallest − 1 = {spread:.1%}, {verdict}.")
    lines.append("Config: identical across complete runs apart from "
                 + ", ".join(f"`{k}`" for k in varied_keys(group_by)) + "." if not differences else
                 "Config: complete runs also differ in " + ", ".join(f"`{k}`" for k in differences) + ".")
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
              + " | ".join(label for _, label, _ in METRICS) + " |",
              "|" + "---|" * (4 + len(METRICS))]
    for r in records:
        cells = [f"{r.results[k]:{fmt}}" if isinstance(r.results.get(k), (int, float)) else ""
                 for k, _, fmt in METRICS]
        lines.append(f"| {_job_name(r)} | {r.value(group_by)} | {r.value('seed')} "
                     f"| {r.status} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csvs(summaries, records, out_dir: Path, group_by: str = DEFAULT_GROUP) -> None:
    label = group_label(group_by)
    with open(out_dir / "comparison.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([label, "params_text", "runs_complete", "runs_total"]
                        + [f"{k}_{s}" for k, _, _ in METRICS for s in ("mean", "std")])
        for s in summaries:
            row = [s.name, s.params_text or "", len(s.complete), len(s.runs)]
            for key, _, _ in METRICS:
                mean, std, _ = s.stats(key)
                row += ["" if math.isnan(mean) else mean, "" if math.isnan(std) else std]
            writer.writerow(row)
    with open(out_dir / "comparison_runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", label, "seed", "status", "error"] + [k for k, _, _ in METRICS])
        for r in records:
            writer.writerow([_job_name(r), r.value(group_by), r.value("seed"),
                             r.status, r.error] + [r.results.get(k, "") for k, _, _ in METRICS])


def write_comparison_report(sweep_dirs, out_dir=None, group_by: str = DEFAULT_GROUP) -> Path:
    """Build the report from one or more sweep dirs into ``out_dir`` (default: the first
    sweep dir). Returns the path of comparison.md."""
    sweep_dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path))
                                    else sweep_dirs)]
    if not sweep_dirs:
        raise ValueError("sweep_dirs is empty: give at least one sweep directory")
    records = collect_runs(sweep_dirs)
    summaries = summarize(records, group_by)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dirs[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_files = plots.comparison_plots(summaries, out_dir)
    write_csvs(summaries, records, out_dir, group_by)
    markdown = format_markdown(summaries, records, sweep_dirs,
                               config_differences(records, varied_keys(group_by)), plot_files,
                               group_by)
    (out_dir / "comparison.md").write_text(markdown)
    return out_dir / "comparison.md"
