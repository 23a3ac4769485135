"""Benchmark plots in ``triton.testing.perf_report``'s style, drawn from the rows alone.

One PNG per mode, ``kernel_bench_<mode>.png`` (``fwd``, ``fwd_bwd``): one panel per dtype
(side by side, shared y axis), one line per backend over the shapes of that dtype, the
median ms on a log axis with the 20th-80th percentile as error bars, and the roofline
floor as a dashed line. The x axis is l when only l varies in a panel; otherwise the
(b, d, l, n) tuples, grouped by (b, d, n) with l rising in each group, a line per group
(one line by size when no group has two lengths). The title names the machine (the rows' ``device``). Skipped rows
are left out. The rows may come from :func:`kernels.bench.kernel_bench.run_benchmark` or from
a CSV through :func:`plot_csv`, so plots can be redrawn without re-timing.
"""
from __future__ import annotations

import re
from pathlib import Path

PREFIX = "kernel_bench"


def mode_filename(mode: str, prefix: str = PREFIX) -> str:
    """``fwd+bwd`` -> ``kernel_bench_fwd_bwd.png``."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9]+', '_', mode).strip('_')}.png"


def _unique(values):
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _shape_key(r: dict) -> tuple:
    return (r["b"], r["d"], r["l"], r["n"], r.get("z", True))


def _axis(shapes: list[tuple]) -> tuple[list[str], str]:
    """Tick labels and x label: just l when only l varies, else the (b, d, l, n) tuple."""
    others = {(b, d, n, z) for b, d, _, n, z in shapes}
    if len(others) == 1:
        b, d, n, z = others.pop()
        return [str(s[2]) for s in shapes], f"l   (b={b}, d={d}, n={n}{'' if z else ', no z'})"
    labels = [f"({b}, {d}, {l}, {n}){'' if z else ' no z'}" for b, d, l, n, z in shapes]
    return labels, "(b, d, l, n)"


def _draw_panel(ax, rows: list[dict], title: str) -> None:
    """One line per backend over the shapes. Shapes that differ in more than l form separate
    runs of the x axis (ordered by b, d, n, then l) and lines break between runs; when no
    two shapes share (b, d, n), one line runs over all of them by size."""
    keys = _unique(_shape_key(r) for r in rows)
    group = lambda s: (s[0], s[1], s[3], s[4])  # noqa: E731  everything but l
    if len({group(s) for s in keys}) == len(keys):
        group = lambda s: ()  # noqa: E731  no length sweep here: one run by size
    shapes = sorted(keys, key=lambda s: (group(s), s[0] * s[1] * s[2] * s[3], s))
    x_of = {s: i for i, s in enumerate(shapes)}
    series = _unique(group(s) for s in shapes)

    def runs(points):  # [(shape, value)] -> one list of (x, value) per series, in x order
        for key in series:
            run = sorted((x_of[s], v) for s, v in points if group(s) == key)
            if run:
                yield run

    for i, backend in enumerate(_unique(r["backend"] for r in rows)):
        points = [(_shape_key(r), r) for r in rows if r["backend"] == backend]
        for j, run in enumerate(runs(points)):
            med = [r["median_ms"] for _, r in run]
            low = [max(0.0, r["median_ms"] - r.get("p20_ms", r["median_ms"])) for _, r in run]
            high = [max(0.0, r.get("p80_ms", r["median_ms"]) - r["median_ms"]) for _, r in run]
            ax.errorbar([x for x, _ in run], med, yerr=[low, high], marker="o", markersize=4,
                        capsize=3, color=f"C{i % 10}", label=backend if j == 0 else None)
    floors = {}
    for r in rows:
        if "floor_ms" in r:
            floors.setdefault(_shape_key(r), r["floor_ms"])
    for j, run in enumerate(runs(list(floors.items()))):
        ax.plot([x for x, _ in run], [v for _, v in run], "k--", linewidth=1, marker="_",
                markersize=10, label="roofline floor" if j == 0 else None)
    labels, xlabel = _axis(shapes)
    by_l = not xlabel.startswith("(")
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(labels, rotation=0 if by_l else 30, ha="center" if by_l else "right",
                       fontsize=8)
    ax.set_xlim(-0.5, len(shapes) - 0.5)
    ax.set_xlabel(xlabel)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)


def plot_rows(rows: list[dict], out_dir, prefix: str = PREFIX) -> list[Path]:
    """Write one PNG per mode found in ``rows`` into ``out_dir``; returns their paths.

    A mode whose rows were all skipped still gets a PNG that says so.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend, Agg canvas

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = ", ".join(_unique(r["device"] for r in rows if r.get("device")))
    paths = []
    for mode in _unique(r["mode"] for r in rows):
        timed = [r for r in rows if r["mode"] == mode and "median_ms" in r
                 and not r.get("skipped")]
        dtypes = _unique(r["dtype"] for r in timed)
        fig = Figure(figsize=(1.0 + 5.0 * max(1, len(dtypes)), 4.5), layout="constrained")
        axes = fig.subplots(1, max(1, len(dtypes)), sharey=True, squeeze=False)[0]
        for ax, dtype in zip(axes, dtypes):
            _draw_panel(ax, [r for r in timed if r["dtype"] == dtype],
                        dtype if len(dtypes) > 1 else "")
        if timed:
            axes[0].set_ylabel("median ms (bars: 20th-80th percentile)")
            axes[0].legend(fontsize=8)
        else:
            axes[0].text(0.5, 0.5, "every backend skipped", ha="center", va="center",
                         transform=axes[0].transAxes)
            axes[0].set_axis_off()
        fig.suptitle(f"Selective scan, {mode}" + (f", on {machine}" if machine else "")
                     + (f" ({', '.join(dtypes)})" if dtypes else ""))
        path = out_dir / mode_filename(mode, prefix)
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def plot_csv(csv_path, out_dir, prefix: str = PREFIX) -> list[Path]:
    """Redraw the per-mode PNGs from a ``kernel_bench.csv`` into ``out_dir``."""
    from kernels.bench.kernel_bench import read_csv

    return plot_rows(read_csv(csv_path), out_dir, prefix)
