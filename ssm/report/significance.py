"""Paired comparisons between groups of runs, over evaluation items, for the reports.

A group is a list of runs of one encoder (one per seed, or per seed and data setting).
Two groups are paired on the items both evaluated: the same stratum (seed, caption detail
and time budget: the same data and budget) and the same item key (a query index, an
(index, needle position) pair, ...). ``extract(record)`` gives a run's {item key:
outcome}; the paired bootstrap (``ssm.eval.bootstrap``) resamples items within each
stratum and says whether the mean difference is significant.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

from ssm.eval.bootstrap import Interval, bootstrap_mean, paired_bootstrap


STRATUM_KEYS = ("seed", "data.detail", "trainer.time_budget_s")


def _by_stratum(runs, extract: Callable) -> dict:
    """{(seed, detail, budget): {item key: outcome}} over complete runs with per-item
    outcomes (keys a config lacks are None)."""
    out = {}
    for r in runs:
        if r.status != "complete":
            continue
        values = extract(r)
        if values:
            out[tuple(str(r.value(k)) for k in STRATUM_KEYS)] = values
    return out


def paired_interval(first_runs, second_runs, extract: Callable, seed: int = 0) -> Interval:
    """Paired bootstrap interval of mean(first - second) over items both groups scored."""
    a_seeds, b_seeds = _by_stratum(first_runs, extract), _by_stratum(second_runs, extract)
    a, b, strata = [], [], []
    for stratum in sorted(set(a_seeds) & set(b_seeds)):
        shared = sorted(set(a_seeds[stratum]) & set(b_seeds[stratum]), key=str)
        a += [a_seeds[stratum][k] for k in shared]
        b += [b_seeds[stratum][k] for k in shared]
        strata += [stratum] * len(shared)
    if not a:
        return Interval(math.nan, math.nan, math.nan, 0)
    return paired_bootstrap(a, b, strata, seed=seed)


def group_interval(runs, extract: Callable, seed: int = 0) -> Interval:
    """Bootstrap interval of one group's mean outcome over its items (runs as strata)."""
    values, strata = [], []
    for stratum, outcomes in sorted(_by_stratum(runs, extract).items()):
        values += list(outcomes.values())
        strata += [stratum] * len(outcomes)
    return bootstrap_mean(values, strata, seed=seed) if values else Interval(
        math.nan, math.nan, math.nan, 0)


def _fmt(x: float, fmt: str) -> str:
    return "n/a" if math.isnan(x) else f"{x:{fmt}}"


def significance_lines(groups: dict, extract: Callable, what: str, fmt: str = "+.3f") -> list[str]:
    """A Markdown table: every pair of groups, the paired difference of ``what`` with its
    95% interval, the number of paired items and the verdict."""
    lines = [f"| comparison ({what}) | difference | 95% interval | paired items | verdict |",
             "|---|---:|---|---:|---|"]
    for (a, a_runs), (b, b_runs) in itertools.combinations(groups.items(), 2):
        iv = paired_interval(a_runs, b_runs, extract)
        interval = "n/a" if math.isnan(iv.low) else f"[{iv.low:{fmt}}, {iv.high:{fmt}}]"
        lines.append(f"| {a} − {b} | {_fmt(iv.estimate, fmt)} | {interval} | {iv.n} | "
                     f"{iv.verdict(a, b)} |")
    return lines
