"""Generation speed report: tokens/s and memory per caption decoder, batch size and length.

Rows are dicts with decoder, batch_size, new_tokens, tokens_per_s, peak_mem_mb,
peak_mem_kind and cache_mb, as ``ssm.tasks.bench_generation`` measures them and writes them
to generation_bench.csv (``read_rows`` reads that file back).
"""
from __future__ import annotations

import csv
from pathlib import Path

from ssm.report.plots import _pyplot

NUMERIC = ("batch_size", "new_tokens", "tokens_per_s", "seconds", "peak_mem_mb", "cache_mb",
           "params")


def read_rows(path: Path) -> list[dict]:
    """The rows of a generation_bench.csv; [] when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in NUMERIC:
            value = row.get(key)
            if value is not None:  # empty cells (not measured) read as None
                row[key] = None if value == "" else (
                    int(value) if value.lstrip("-").isdigit() else float(value))
    return rows


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else f"{value:{spec}}"


def format_generation_table(rows: list[dict]) -> str:
    """One Markdown table per batch size: decoder x length, tokens/s and memory."""
    lines = []
    for b in sorted({r["batch_size"] for r in rows}):
        mine = [r for r in rows if r["batch_size"] == b]
        lengths = sorted({r["new_tokens"] for r in mine})
        decoders = list(dict.fromkeys(r["decoder"] for r in mine))
        cell = {(r["decoder"], r["new_tokens"]): r for r in mine}
        lines += [f"### Batch {b}", "", "| decoder | " + " | ".join(f"L = {n}" for n in lengths)
                  + " |", "|---|" + "---:|" * len(lengths)]
        for name in decoders:
            cells = []
            for n in lengths:
                r = cell.get((name, n), {})
                cells.append(f"{_fmt(r.get('tokens_per_s'), '.0f')} tok/s, "
                             f"{_fmt(r.get('peak_mem_mb'), '.3g')} MB peak, "
                             f"{_fmt(r.get('cache_mb'), '.3g')} MB cache")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    kinds = {r.get("peak_mem_kind") for r in rows} - {None}
    lines.append("L new tokens per image, EOS ignored, image tower and reading the image "
                 "included; tokens/s "
                 "= batch x L / seconds. Peak: memory growth during the call"
                 + (f" ({', '.join(sorted(kinds))})" if kinds else "") + "; cache: the "
                 "decoder's state for the whole generation (Mamba: fixed per row; "
                 "Transformer: keys and values of every token).")
    return "\n".join(lines) + "\n"


def generation_plot(rows: list[dict], path: Path) -> bool:
    """tokens/s and memory against length, log-log, one line per (decoder, batch)."""
    if not rows:
        return False
    plt = _pyplot()
    fig, (speed_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["decoder"] for r in rows):
        for b in sorted({r["batch_size"] for r in rows if r["decoder"] == name}):
            mine = sorted((r for r in rows if r["decoder"] == name and r["batch_size"] == b),
                          key=lambda r: r["new_tokens"])
            lengths = [r["new_tokens"] for r in mine]
            line, = speed_ax.plot(lengths, [r.get("tokens_per_s") for r in mine], marker="o",
                                  label=f"{name}, batch {b}")
            memory_ax.plot(lengths, [r.get("cache_mb") for r in mine], marker="o",
                           color=line.get_color(), label=f"{name}, batch {b}: cache")
            if any(r.get("peak_mem_mb") for r in mine):
                memory_ax.plot(lengths, [r.get("peak_mem_mb") for r in mine], linestyle=":",
                               color=line.get_color(), label=f"{name}, batch {b}: peak")
    speed_ax.set(xscale="log", yscale="log", xlabel="generated tokens L", ylabel="tokens / s",
                 title="Generation speed")
    memory_ax.set(xscale="log", yscale="log", xlabel="generated tokens L", ylabel="MB",
                  title="Decoder cache (solid) and peak memory (dotted)")
    for ax in (speed_ax, memory_ax):
        ax.grid(alpha=0.3, which="both")
    speed_ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_generation_report(rows: list[dict], out_dir: Path) -> Path:
    """generation_bench.md and generation_bench.png into ``out_dir``; the .md's path."""
    out_dir = Path(out_dir)
    devices = {r.get("device") for r in rows} - {None}
    title = "# Generation speed" + (f" ({', '.join(sorted(devices))})" if devices else "")
    plotted = generation_plot(rows, out_dir / "generation_bench.png")
    text = (f"{title}\n\n{format_generation_table(rows)}"
            + ("\n![generation speed](generation_bench.png)\n" if plotted else ""))
    path = out_dir / "generation_bench.md"
    path.write_text(text)
    return path
