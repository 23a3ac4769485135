"""PNG plots of the encoder comparison (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _mean_curve(runs, key: str):
    """Steps present in every run's curve, with the mean, min and max over runs."""
    curves = [dict(zip(*r.curve(key))) for r in runs]
    curves = [c for c in curves if c]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    values = np.array([[c[s] for s in steps] for c in curves], dtype=float)
    return np.array(steps), values.mean(0), values.min(0), values.max(0)


def learning_curves(summaries, path: Path, key: str = "loss") -> bool:
    """Training ``key`` against step per group: mean over its runs, min-max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = False
    for s in summaries:
        runs = [r for r in s.runs if r.path is not None]
        curve = _mean_curve(runs, key)
        if curve is None or len(curve[0]) == 0:
            continue
        steps, mean, low, high = curve
        line, = ax.plot(steps, mean, label=f"{s.name} ({len(runs)} runs)")
        ax.fill_between(steps, low, high, alpha=0.2, color=line.get_color())
        drawn = True
    if drawn:
        ax.set(xlabel="step", ylabel=f"training {key}", title=f"Learning curves (mean, min-max band)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def _bars(ax, names, means, stds, offset, width, **style):
    x = np.arange(len(names)) + offset
    errors = [0.0 if math.isnan(s) else s for s in stds]
    ax.bar(x, [0.0 if math.isnan(m) else m for m in means], width, yerr=errors, capsize=3, **style)


def metric_bars(summaries, path: Path, keys, title: str, chance: float | None = None) -> bool:
    """Grouped bars, one group per encoder, one bar per key, error bars = std over seeds."""
    names = [s.name for s in summaries]
    if not names:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        stats = [s.stats(key) for s in summaries]
        style = {"hatch": "//", "alpha": 0.6} if key.endswith("text_only") else {}
        _bars(ax, names, [m for m, _, _ in stats], [sd for _, sd, _ in stats],
              (i - (len(keys) - 1) / 2) * width, width, label=label, **style)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance {chance:g}")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set(ylim=(0, 1.05), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def comparison_plots(summaries, out_dir: Path) -> list[str]:
    """Write the comparison's PNGs into ``out_dir``; returns the file names written."""
    written = []
    if learning_curves(summaries, out_dir / "learning_curves.png"):
        written.append("learning_curves.png")
    retrieval = [("t2i_r1", "t2i R@1"), ("t2i_r5", "t2i R@5"), ("i2t_r1", "i2t R@1"),
                 ("i2t_r5", "i2t R@5"), ("zeroshot_acc", "zero-shot")]
    if metric_bars(summaries, out_dir / "retrieval.png", retrieval,
                   "Retrieval and zero-shot accuracy (mean ± std over seeds)"):
        written.append("retrieval.png")
    probe = [("order_acc", "image-text word-order probe"),
             ("order_acc_text_only", "text-only baseline")]
    if metric_bars(summaries, out_dir / "word_order.png", probe,
                   "Word-order probe beside the text-only baseline", chance=0.5):
        written.append("word_order.png")
    return written
