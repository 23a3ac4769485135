"""The dense-captions report: what each text encoder reads of a long caption.

``write_dense_report(sweep_dirs, out_dir)`` reads a ``+experiment=dense_captions`` sweep
(encoders x seeds x caption detail x budget) and writes into ``out_dir``:

- ``dense_captions.md``: per budget (equal steps, equal wall-clock) and caption detail, a
  table encoder x needle position (mean ± std over seeds), the paired bootstrap verdict
  for every two encoders, accuracy against caption length, the probe suite beside its
  blind baseline, parameters, the sweep's wall time, and every run that did not finish;
- ``dense_captions.csv``: one row per (budget, detail, encoder);
- ``needle_position.png`` and ``caption_length.png``: accuracy per encoder with 95%
  bootstrap bands over items (seeds as strata), chance drawn.
"""
from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ssm.data.dense import NEEDLE_ATTRIBUTES, NEEDLE_POSITIONS
from ssm.encoders.parameters import MATCH_TOLERANCE, parameter_spread, parameters_matched
from ssm.eval.blind import bias_verdict
from ssm.eval.needle import CHANCE, LENGTH_BINS, length_bin
from ssm.report.comparison import PROBES, config_differences, probe_items, unfinished_lines
from ssm.report.runs import open_sweeps
from ssm.report.significance import group_interval, paired_interval

ENCODER = "model/text_encoder"
VARIED = ("model.text_encoder", "seed", "data.detail", "trainer.time_budget_s")


def budget_label(record) -> str:
    seconds = record.value("trainer.time_budget_s")
    if seconds is None:
        return f"equal steps ({record.value('trainer.max_steps')})"
    return f"equal wall-clock ({float(seconds):g} s)"


def _stats(values) -> tuple[float, float, int]:
    values = [float(v) for v in values if isinstance(v, (int, float))]
    if not values:
        return math.nan, math.nan, 0
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan,
            len(values))


def _cell(mean, std, fmt=".3f") -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:{fmt}}" if math.isnan(std) else f"{mean:{fmt}} ± {std:{fmt}}"


def _needle(position=None, bin_label=None, attribute=None):
    """extract(record) -> {(index, position): outcome} of the record's needle queries."""
    def extract(record) -> dict:
        out = {}
        for r in record.items().get("needle") or []:
            if position is not None and r["position"] != position:
                continue
            if bin_label is not None and length_bin(r["bytes"]) != bin_label:
                continue
            value = r["attributes"][attribute] if attribute else r["correct"]
            out[(r["index"], r["position"])] = float(value)
        return out
    return extract


def cells(records) -> dict:
    """{(budget, detail): {encoder: [records]}} in the order cells first appear. Jobs that
    never started have no config to place them by; the report lists them apart."""
    grouped: dict = {}
    for r in records:
        if r.status == "missing":
            continue
        key = (budget_label(r), r.value("data.detail"))
        grouped.setdefault(key, {}).setdefault(str(r.value(ENCODER)), []).append(r)
    return grouped


def _complete(runs):
    return [r for r in runs if r.status == "complete"]


def needle_table(encoders: dict) -> list[str]:
    header = ["encoder", "runs", "steps", "first", "middle", "last", "all positions",
              "95% interval (all)", "t2i R@5"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in encoders.items():
        done = _complete(runs)
        row = [name, f"{len(done)}/{len(runs)}",
               _cell(*_stats(r.results.get("steps") for r in done)[:2], ".0f")]
        row += [_cell(*_stats(r.results.get(f"needle_acc_{p}") for r in done)[:2])
                for p in NEEDLE_POSITIONS]
        row.append(_cell(*_stats(r.results.get("needle_acc") for r in done)[:2]))
        iv = group_interval(runs, _needle())
        row.append("n/a" if math.isnan(iv.low) else f"[{iv.low:.3f}, {iv.high:.3f}]")
        row.append(_cell(*_stats(r.results.get("t2i_r5") for r in done)[:2]))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def significance_table(encoders: dict) -> list[str]:
    """Every two encoders: paired difference in needle accuracy per position and overall."""
    columns = list(NEEDLE_POSITIONS) + ["all"]
    lines = ["| comparison | " + " | ".join(columns) + " | verdict (all) |",
             "|---|" + "---|" * (len(columns) + 1)]
    names = list(encoders)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            row, last = [f"{a} − {b}"], None
            for column in columns:
                iv = paired_interval(encoders[a], encoders[b],
                                     _needle(None if column == "all" else column))
                mark = "*" if iv.significant else ""
                row.append("n/a" if math.isnan(iv.low) else
                           f"{iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]{mark}")
                last = iv
            row.append(last.verdict(a, b))
            lines.append("| " + " | ".join(row) + " |")
    return lines


def length_table(encoders: dict) -> list[str]:
    bins = [length_bin(b) for b in LENGTH_BINS]
    lines = ["| encoder | " + " | ".join(f"{b} B" for b in bins) + " |",
             "|---|" + "---|" * len(bins)]
    for name, runs in encoders.items():
        row = [name]
        for label in bins:
            iv = group_interval(runs, _needle(bin_label=label))
            row.append("–" if math.isnan(iv.estimate) else f"{iv.estimate:.3f} (n={iv.n})")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def attribute_table(encoders: dict) -> list[str]:
    lines = ["| encoder | " + " | ".join(NEEDLE_ATTRIBUTES) + " |",
             "|---|" + "---|" * len(NEEDLE_ATTRIBUTES)]
    for name, runs in encoders.items():
        done = _complete(runs)
        lines.append("| " + " | ".join([name] + [
            _cell(*_stats(r.results.get(f"needle_acc_{a}") for r in done)[:2])
            for a in NEEDLE_ATTRIBUTES]) + " |")
    return lines


def probe_table(encoders: dict) -> list[str]:
    present = [(k, b, n) for k, b, n in PROBES
               if any(isinstance(r.results.get(k), (int, float))
                      for runs in encoders.values() for r in _complete(runs))]
    if not present:
        return ["No probe results."]
    lines = ["| encoder | " + " | ".join(n for _, _, n in present) + " |",
             "|---|" + "---|" * len(present)]
    for name, runs in encoders.items():
        done = _complete(runs)
        lines.append("| " + " | ".join([name] + [_cell(*_stats(r.results.get(k) for r in done)[:2])
                                                 for k, _, _ in present]) + " |")
    first = next(iter(encoders.values()))
    blind, checks = ["blind baseline (text only)"], ["bias check"]
    for key, blind_key, _ in present:
        blind.append(_cell(*_stats(r.results.get(blind_key) for r in _complete(first))[:2]))
        category = "order" if key == "order_acc" else key[len("probe_"):]
        iv = group_interval(first, probe_items(category, "blind"))
        verdict = bias_verdict(iv.estimate, iv.low)
        checks.append("n/a" if verdict == "n/a" else
                      f"{'**biased**' if verdict == 'biased' else 'ok'} ({iv.estimate:.2f})")
    return lines + ["| " + " | ".join(blind) + " |", "| " + " | ".join(checks) + " |"]


def sweep_wall_time(records) -> tuple[float, float]:
    """(first job start to last results.json, sum of the runs' own wall_seconds), seconds."""
    starts, ends, own = [], [], 0.0
    for r in records:
        if r.path is None:
            continue
        config = r.path / ".hydra" / "config.yaml"
        if config.exists():
            starts.append(config.stat().st_mtime)
        results = r.path / "results.json"
        if results.exists():
            ends.append(results.stat().st_mtime)
        own += float(r.results.get("wall_seconds") or 0.0)
    span = max(ends) - min(starts) if starts and ends else math.nan
    return span, own


def format_markdown(records, sweep_dirs, plot_files) -> str:
    status = {s: sum(r.status == s for r in records)
              for s in ("complete", "failed", "incomplete", "missing")}
    span, own = sweep_wall_time(records)
    lines = ["# Dense captions: what each text encoder reads", "",
             "Sweep: " + ", ".join(f"`{d}`" for d in sweep_dirs) + f". {len(records)} jobs: "
             + ", ".join(f"{n} {s}" for s, n in status.items()) + ". "
             f"Wall time: {span / 60:.1f} min from the first job's start to the last result "
             f"({own / 60:.1f} min inside the jobs).", "",
             "Needle test: each query is a dense caption against its true image and four "
             "distractors that differ in one attribute (colour, shape, size, position) of one "
             "object, described first, in the middle or last (`ssm.eval.needle`); correct when "
             f"the true image scores above all four. Chance is {CHANCE:.2f} when the five "
             "scores are exchangeable; a tower blind to the details scores each near-copy by "
             "its own small change, independently, and passes all four with probability "
             "1/16 = 0.06, so values between 0.06 and 0.2 mean blind, not worse than random "
             "(the pairwise table, chance 0.5, reads more directly). Mean ± std over seeds; "
             "the interval is a bootstrap over queries (seeds as strata).", ""]
    differences = config_differences(records, VARIED)
    lines.append("Config: complete runs differ only in " + ", ".join(f"`{k}`" for k in VARIED)
                 + "." if not differences else "Config: complete runs also differ in "
                 + ", ".join(f"`{k}`" for k in differences) + ".")
    counts = {}
    for r in records:
        if r.status == "complete" and r.results.get("params_text"):
            counts[str(r.value(ENCODER))] = r.results["params_text"]
    if len(counts) > 1:
        verdict = "matched" if parameters_matched(counts.values()) else "NOT matched"
        lines.append("Text-encoder parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
                     + f"; largest/smallest − 1 = {parameter_spread(counts.values()):.1%}, "
                     f"{verdict} within {MATCH_TOLERANCE:.0%}.")
    lines += [""] + [f"![{name}]({name})" for name in plot_files]
    by_budget = defaultdict(dict)
    for (budget, detail), encoders in cells(records).items():
        by_budget[budget][detail] = encoders
        lines += ["", f"## {budget}, caption detail {detail}", "", *needle_table(encoders), "",
                  "Paired bootstrap, needle accuracy difference [95% interval]; * marks an "
                  "interval that excludes 0:", "", *significance_table(encoders), "",
                  "Pairwise accuracy against each distractor (chance 0.5):", "",
                  *attribute_table(encoders)]
    for budget, details in by_budget.items():
        pooled = defaultdict(list)
        for encoders in details.values():
            for name, runs in encoders.items():
                pooled[name] += runs
        lines += ["", f"## {budget}: accuracy against caption length (all details)", "",
                  *length_table(pooled), "", f"## {budget}: compositional probes (all details)",
                  "", "Image-text accuracy of the true caption over its negative (chance 0.5), "
                  "mean ± std over runs; the blind baseline is a word n-gram model of the "
                  "training captions; **biased**: it beats chance by 0.1 or more, significantly.",
                  "", *probe_table(pooled)]
    lines += unfinished_lines(records, "encoder", ENCODER)
    return "\n".join(lines) + "\n"


def write_csv(records, path: Path) -> None:
    keys = (["needle_acc"] + [f"needle_acc_{p}" for p in NEEDLE_POSITIONS]
            + [f"needle_acc_{a}" for a in NEEDLE_ATTRIBUTES] + ["t2i_r5", "steps"]
            + [k for pair in PROBES for k in pair[:2]])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["budget", "detail", "encoder", "runs_complete", "runs_total",
                         "needle_acc_ci_low", "needle_acc_ci_high"]
                        + [f"{k}_{s}" for k in keys for s in ("mean", "std")])
        for (budget, detail), encoders in cells(records).items():
            for name, runs in encoders.items():
                done = _complete(runs)
                iv = group_interval(runs, _needle())
                row = [budget, detail, name, len(done), len(runs),
                       "" if math.isnan(iv.low) else iv.low, "" if math.isnan(iv.high) else iv.high]
                for key in keys:
                    mean, std, _ = _stats(r.results.get(key) for r in done)
                    row += ["" if math.isnan(mean) else mean, "" if math.isnan(std) else std]
                writer.writerow(row)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _band_plot(path: Path, panels: dict, xs: list, xlabel: str, extract_for) -> bool:
    """One panel per entry of ``panels`` ({title: {encoder: runs}}): accuracy against xs
    per encoder, the 95% bootstrap interval as a band, chance dotted."""
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    drawn = False
    for ax, (title, encoders) in zip(axes[0], panels.items()):
        for name, runs in encoders.items():
            ivs = [group_interval(runs, extract_for(x)) for x in xs]
            points = [(i, iv) for i, iv in enumerate(ivs) if not math.isnan(iv.estimate)]
            if not points:
                continue
            at = [i for i, _ in points]
            line, = ax.plot(at, [iv.estimate for _, iv in points], marker="o", label=name)
            ax.fill_between(at, [iv.low for _, iv in points], [iv.high for _, iv in points],
                            alpha=0.2, color=line.get_color())
            drawn = True
        ax.axhline(CHANCE, color="grey", linestyle=":", label=f"chance {CHANCE:.2f}")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set(title=title, xlabel=xlabel, ylabel="needle accuracy (5 candidates)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Needle test: mean over queries, 95% bootstrap band")
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def dense_plots(records, out_dir: Path) -> list[str]:
    by_budget = defaultdict(lambda: defaultdict(list))
    for (budget, _), encoders in cells(records).items():
        for name, runs in encoders.items():
            by_budget[budget][name] += runs
    written = []
    if _band_plot(out_dir / "needle_position.png", by_budget, list(NEEDLE_POSITIONS),
                  "position of the decisive object's paragraph", lambda p: _needle(position=p)):
        written.append("needle_position.png")
    bins = [length_bin(b) for b in LENGTH_BINS]
    if _band_plot(out_dir / "caption_length.png", by_budget, bins, "caption length (bytes)",
                  lambda b: _needle(bin_label=b)):
        written.append("caption_length.png")
    return written


def write_dense_report(sweep_dirs, out_dir=None) -> Path:
    """Build the report from one or more sweep dirs into ``out_dir`` (default: the first
    sweep dir). Returns the path of dense_captions.md."""
    sweep_dirs, records, out_dir = open_sweeps(sweep_dirs, out_dir)
    plot_files = dense_plots(records, out_dir)
    write_csv(records, out_dir / "dense_captions.csv")
    (out_dir / "dense_captions.md").write_text(format_markdown(records, sweep_dirs, plot_files))
    return out_dir / "dense_captions.md"
