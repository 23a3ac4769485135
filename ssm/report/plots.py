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


def _curve_panel(ax, summaries, key: str, ylabel: str) -> bool:
    """One panel: ``key`` against step per group, mean over its runs with a min-max band."""
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
    ax.set(xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize="small")
    return drawn


def learning_curves(summaries, path: Path, key: str = "loss",
                    validation_key: str = "eval/val_loss") -> bool:
    """Training ``key`` against step per group (mean over its runs, min-max band), beside
    the validation curve (``validation_key``, logged every trainer.eval_every steps when
    eval.curve_pairs is set)."""
    plt = _pyplot()
    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4.0))
    drawn = _curve_panel(train_ax, summaries, key, f"training {key}")
    train_ax.set_title("Training (mean, min-max band)")
    if _curve_panel(val_ax, summaries, validation_key, "validation contrastive loss"):
        val_ax.set_title("Validation (held-out pairs)")
    else:
        val_ax.set_title("Validation: not logged")
        val_ax.text(0.5, 0.5, "set trainer.eval_every and eval.curve_pairs\nto log a "
                    "validation curve", ha="center", va="center", transform=val_ax.transAxes)
    if drawn:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def _bars(ax, names, means, stds, offset, width, **style):
    x = np.arange(len(names)) + offset
    errors = [0.0 if math.isnan(s) else s for s in stds]
    ax.bar(x, [0.0 if math.isnan(m) else m for m in means], width, yerr=errors, capsize=3, **style)
    return x


def metric_bars(summaries, ax, keys, ylabel: str, chance: dict | None = None) -> bool:
    """Grouped bars on ``ax``, one group per encoder, one bar per (key, label), error bars =
    std over seeds. ``chance``: {key: chance level}, drawn as a dotted line across each of
    that key's bars (metrics on one axis may have different chance levels)."""
    names = [s.name for s in summaries]
    if not names:
        return False
    width = 0.8 / len(keys)
    chance_drawn = False
    for i, (key, label) in enumerate(keys):
        stats = [s.stats(key) for s in summaries]
        style = {"hatch": "//", "alpha": 0.6} if "blind" in key or key.endswith("text_only") else {}
        x = _bars(ax, names, [m for m, _, _ in stats], [sd for _, sd, _ in stats],
                  (i - (len(keys) - 1) / 2) * width, width, label=label, **style)
        level = (chance or {}).get(key)
        if level is not None:
            ax.hlines([level] * len(x), x - width / 2, x + width / 2, colors="black",
                      linestyles=":", label=None if chance_drawn else "chance (per bar)")
            chance_drawn = True
    ax.set_xticks(np.arange(len(names)), names)
    ax.set(ylim=(0, 1.05), ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return True


def metric_bars_figure(summaries, path: Path, keys, title: str, ylabel: str = "score") -> bool:
    """``metric_bars`` as a figure of its own, saved to ``path``; False with no groups."""
    if not summaries:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    metric_bars(summaries, ax, keys, ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _mean_result(summaries, key: str):
    values = [r.results[key] for s in summaries for r in s.complete
              if isinstance(r.results.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def comparison_plots(summaries, out_dir: Path, probes=()) -> list[str]:
    """Write the comparison's PNGs into ``out_dir``; returns the file names written.
    ``probes``: (image-text key, blind key, name) per probe category."""
    from ssm.data.scenes import COLOURS, SHAPES

    written = []
    if learning_curves(summaries, out_dir / "learning_curves.png"):
        written.append("learning_curves.png")
    if not summaries:
        return written
    plt = _pyplot()
    pairs = _mean_result(summaries, "val_pairs")
    retrieval = [("t2i_r1", "t2i R@1"), ("t2i_r5", "t2i R@5"), ("i2t_r1", "i2t R@1"),
                 ("i2t_r5", "i2t R@5")]
    chance = {k: min(1.0, int(k[-1]) / pairs) for k, _ in retrieval} if pairs else {}
    zero_shot = [("zeroshot_shape_acc", "shape"), ("zeroshot_colour_acc", "colour")]
    chance.update(zeroshot_shape_acc=1 / len(SHAPES), zeroshot_colour_acc=1 / len(COLOURS))
    fig, (ax_r, ax_z) = plt.subplots(1, 2, figsize=(11, 4.0), gridspec_kw={"width_ratios": [2, 1]})
    metric_bars(summaries, ax_r, retrieval, "recall (fraction of queries)", chance)
    ax_r.set_title(f"Retrieval over {pairs:.0f} held-out pairs" if pairs else "Retrieval")
    metric_bars(summaries, ax_z, zero_shot, "zero-shot accuracy", chance)
    ax_z.set_title("Zero-shot classification")
    fig.suptitle("Mean ± std over seeds; dotted: each metric's chance level")
    fig.tight_layout()
    fig.savefig(out_dir / "retrieval.png", dpi=120)
    plt.close(fig)
    written.append("retrieval.png")
    present = [(k, b, n) for k, b, n in probes if any(s.stats(k)[2] for s in summaries)]
    if present:
        fig, axes = plt.subplots(1, len(present), figsize=(2.6 * len(present) + 1, 4.0),
                                 squeeze=False)
        for k, (ax, (key, blind, name)) in enumerate(zip(axes[0], present)):
            metric_bars(summaries, ax, [(key, "image + text"), (blind, "blind (text only)")],
                        "accuracy (true caption preferred)", {key: 0.5, blind: 0.5})
            ax.set_title(name)
            ax.tick_params(axis="x", labelrotation=30)
            if k:  # one legend, on the first panel, is enough
                ax.get_legend().remove()
        fig.suptitle("Compositional probes beside the blind baseline (chance 0.5)")
        fig.tight_layout()
        fig.savefig(out_dir / "probes.png", dpi=120)
        plt.close(fig)
        written.append("probes.png")
    return written
