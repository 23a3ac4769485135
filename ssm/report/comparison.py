"""Comparisons over seeds from finished sweeps: mean +- std per text encoder (or decoder).

``write_comparison_report(sweep_dirs, out_dir, group_by, spec)`` writes comparison.md,
comparison.csv (one row per encoder, or per value of ``group_by``: any Hydra choice or
dotted config key), comparison_runs.csv (one row per job, failed ones included) and the
spec's plots. Runs that failed, were cut short or never started are listed by name in the
Markdown, never dropped silently. ``ReportSpec`` says what a comparison reports: the text
encoder one here (``ENCODERS``: it also holds the compositional probe suite beside its
blind text-only baseline, with a bias check per category, and paired bootstrap intervals
between every two groups from each run's eval_items.json), the caption decoder one in
``ssm.report.decoders``.
"""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ssm.encoders.parameters import MATCH_TOLERANCE, parameter_spread, parameters_matched
from ssm.eval.blind import BIAS_MARGIN, bias_verdict
from ssm.eval.probes import CATEGORIES
from ssm.report import plots
from ssm.report.runs import RunRecord, open_sweeps
from ssm.report.significance import group_interval, significance_lines

# (results.json key, column label, format)
METRICS = [
    ("t2i_r1", "t2i R@1", ".3f"), ("t2i_r5", "t2i R@5", ".3f"),
    ("i2t_r1", "i2t R@1", ".3f"), ("i2t_r5", "i2t R@5", ".3f"),
    ("order_acc", "word-order probe", ".3f"), ("order_acc_blind", "blind baseline", ".3f"),
    ("zeroshot_acc", "zero-shot", ".3f"),
    ("samples_per_s", "samples/s", ".0f"), ("peak_mem_mb", "peak MB", ".0f"),
]
# The probe suite, each category with the blind baseline's score (CSV columns and table).
PROBES = [("order_acc", "order_acc_blind", "word order")] + [
    (f"probe_{c}", f"blind_{c}", c.replace("_", " ")) for c in CATEGORIES]
PROBE_METRICS = [(key, key, ".3f") for pair in PROBES for key in pair[:2]
                 if key not in ("order_acc", "order_acc_blind")]
DEFAULT_GROUP = "model/text_encoder"


def _retrieval_notes(records, out_dir) -> list[str]:
    lines = []
    val_pairs = {r.results.get("val_pairs") for r in records if r.status == "complete"} - {None}
    if len(val_pairs) == 1:
        pairs = val_pairs.pop()
        lines.append(f"Retrieval over {pairs} held-out pairs: chance R@1 = {1 / pairs:.3f}, "
                     f"R@5 = {5 / pairs:.3f}. The word-order probe scores a caption against "
                     "the same words reordered (chance 0.5); its blind baseline is a text-only "
                     "word n-gram model fitted on training captions that picks the more "
                     "plausible caption (`ssm.eval.blind`). The bag-of-bytes baseline "
                     "(`order_acc_text_only` in results.json) is 0.5 by construction on this "
                     "probe, so it is not shown.")
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
    parts; sections(summaries, label) -> lines come after the plots; csv_extra: more
    (key, label, format) columns for the CSVs only."""

    title: str
    label: str                      # what one compared thing is called: "encoder"
    group_by: str                   # the Hydra choice compared by default
    metrics: tuple
    params_key: str
    params_column: str              # the table's column: "params (text)"
    params_label: str               # the matching line: "Text-encoder parameters: ..."
    notes: Callable
    plots: Callable
    sections: Callable = lambda summaries, label: []
    csv_extra: tuple = ()


def _encoder_sections(summaries, label: str) -> list[str]:
    lines = probe_section(summaries, label)
    lines += ["", "## Significance", "",
              "Paired bootstrap over evaluation items (the same seed's held-out queries, "
              "resampled within each seed, 2,000 draws): the 95% interval of the difference "
              "in t2i R@5 between two groups; significant when it excludes 0.", ""]
    return lines + significance_lines({s.name: s.runs for s in summaries}, _t2i_r5_items,
                                      "t2i R@5")


ENCODERS = ReportSpec("Text encoder comparison", "encoder", DEFAULT_GROUP, tuple(METRICS),
                      "params_text", "params (text)", "Text-encoder", _retrieval_notes,
                      lambda summaries, records, out_dir: plots.comparison_plots(
                          summaries, out_dir, PROBES),
                      _encoder_sections, tuple(PROBE_METRICS))


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
    lines += throughput_warnings(summaries)
    lines.append("")
    lines += [f"![{name}]({name})" for name in plot_files]
    lines += spec.sections(summaries, label)
    lines += unfinished_lines(records, label, group_by)
    lines += ["", "## Per-run results", "", f"| job | {label} | seed | status | "
              + " | ".join(label for _, label, _ in metrics) + " |",
              "|" + "---|" * (4 + len(metrics))]
    for r in records:
        cells = [f"{r.results[k]:{fmt}}" if isinstance(r.results.get(k), (int, float)) else ""
                 for k, _, fmt in metrics]
        lines.append(f"| {_job_name(r)} | {r.value(group_by)} | {r.value('seed')} "
                     f"| {r.status} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def unfinished_lines(records, label: str, group_by: str) -> list[str]:
    """The "Runs not complete" section: every failed, incomplete or missing job, with why."""
    unfinished = [r for r in records if r.status != "complete"]
    lines = ["", "## Runs not complete", ""]
    if not unfinished:
        return lines + ["None: every job finished."]
    lines += [f"| job | {label} | seed | status | reason |", "|---|---|---|---|---|"]
    for r in unfinished:
        reason = (r.error or "").replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {_job_name(r)} | {r.value(group_by)} | "
                     f"{r.value('seed')} | {r.status} | {reason} |")
    return lines


def throughput_warnings(summaries) -> list[str]:
    """A warning per group whose samples/s spread (max - min over runs) is as large as its
    mean: timings from a busy machine, not a property of the encoder."""
    lines = []
    for s in summaries:
        values = [float(r.results["samples_per_s"]) for r in s.complete
                  if isinstance(r.results.get("samples_per_s"), (int, float))]
        if len(values) > 1 and max(values) - min(values) >= statistics.fmean(values):
            lines.append(f"**Warning:** {s.name}'s samples/s spread over {min(values):.0f}-"
                         f"{max(values):.0f}, as wide as its mean ({statistics.fmean(values):.0f}): "
                         "the machine was busy; rerun on a quiet one before comparing throughput.")
    return lines


def _t2i_r5_items(record) -> dict:
    ranks = record.items().get("t2i_rank") or []
    return {q: float(rank <= 5) for q, rank in enumerate(ranks)}


def probe_items(category: str, field: str = "correct"):
    """extract(record) -> {item key: outcome} of one probe category ("order" for the
    word-order probe); ``field`` "blind" reads the blind baseline's outcomes."""
    def extract(record) -> dict:
        items = record.items()
        rows = items.get("order") if category == "order" else [
            r for r in items.get("probes") or [] if r["category"] == category]
        # An item may hold several word-order negatives: key them by their rank among its own.
        seen, out = {}, {}
        for r in rows or []:
            if field in r:
                k = seen[r["index"]] = seen.get(r["index"], -1) + 1
                out[(r["index"], k)] = float(r[field])
        return out
    return extract


def probe_section(summaries, label: str) -> list[str]:
    """The probe-suite table: each group's accuracy per category (mean ± std over seeds),
    the blind baseline's, and the bias check on the blind baseline."""
    present = [(key, blind, name) for key, blind, name in PROBES
               if any(s.stats(key)[2] for s in summaries)]
    if not present:
        return []
    lines = ["", "## Compositional probes", "",
             "Accuracy of the true caption over its negative, each scored with the image "
             "(chance 0.5), mean ± std over seeds. Negatives differ from the caption in exactly "
             "one stated way (`ssm.eval.probes`). The blind baseline scores the same pairs "
             "without the image: a word n-gram model of the training captions prefers the "
             "more plausible one. A category is flagged **biased** when the blind baseline is "
             f"at least {BIAS_MARGIN:g} above chance and its 95% interval (bootstrap over items) "
             "excludes chance: there, text priors alone pass the probe. `n/a`: the captions "
             "give no such negative (counting needs a stated count).", "",
             "| " + " | ".join([label] + [name for _, _, name in present]) + " |",
             "|" + "---|" * (1 + len(present))]
    for s in summaries:
        lines.append("| " + " | ".join([s.name] + [_cell(*s.stats(key)[:2], ".3f")
                                                   for key, _, _ in present]) + " |")
    # The blind model sees no image and no encoder: every group's runs of one seed agree,
    # so one group (the first with per-item outcomes) stands for all.
    reference = next((s for s in summaries if any(r.items() for r in s.complete)), summaries[0])
    blind, checks = ["blind baseline (text only)"], ["bias check (blind vs chance)"]
    for key, blind_key, _ in present:
        blind.append(_cell(*reference.stats(blind_key)[:2], ".3f"))
        category = "order" if key == "order_acc" else key[len("probe_"):]
        iv = group_interval(reference.runs, probe_items(category, "blind"))
        verdict = bias_verdict(iv.estimate, iv.low)
        checks.append("n/a" if verdict == "n/a" else
                      f"{'**biased**' if verdict == 'biased' else 'ok'} "
                      f"({iv.estimate:.2f} [{iv.low:.2f}, {iv.high:.2f}])")
    lines += ["| " + " | ".join(blind) + " |", "| " + " | ".join(checks) + " |"]
    lines += ["", "Paired bootstrap between groups on each category's items (difference in "
              "accuracy, 95% interval):", ""]
    for key, _, name in present:
        category = "order" if key == "order_acc" else key[len("probe_"):]
        lines += significance_lines({s.name: s.runs for s in summaries},
                                    probe_items(category), name) + [""]
    return lines


def write_csvs(summaries, records, out_dir: Path, group_by: str = DEFAULT_GROUP,
               spec: ReportSpec = ENCODERS) -> None:
    label, metrics = group_label(group_by, spec), list(spec.metrics) + list(spec.csv_extra)
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
    sweep_dirs, records, out_dir = open_sweeps(sweep_dirs, out_dir)
    summaries = summarize(records, group_by, spec.params_key)
    plot_files = spec.plots(summaries, records, out_dir)
    write_csvs(summaries, records, out_dir, group_by, spec)
    markdown = format_markdown(summaries, records, sweep_dirs,
                               config_differences(records, varied_keys(group_by)), plot_files,
                               group_by, spec, out_dir)
    (out_dir / "comparison.md").write_text(markdown)
    return out_dir / "comparison.md"
