"""Bootstrap confidence intervals over evaluation items, paired between two models.

Items are resampled with replacement, within each stratum when ``strata`` is given (one
stratum per seed: each seed's run evaluates its own items, so resampling keeps every
seed's item count), and the statistic is the mean over all items. Percentile intervals;
``n_resamples`` draws from a numpy Generator seeded by ``seed``, so reports are
reproducible. A difference is called significant when its interval excludes 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

_CHUNK = 256  # resamples drawn at once: bounds memory at _CHUNK x items


@dataclass(frozen=True)
class Interval:
    estimate: float   # the statistic on the items as they are
    low: float
    high: float
    n: int            # items (pairs, for a paired interval)

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0 (for a difference)."""
        return self.low > 0 or self.high < 0

    def verdict(self, first: str = "first", second: str = "second") -> str:
        if math.isnan(self.estimate):
            return "n/a"
        if not self.significant:
            return "not significant"
        return f"{first} better" if self.estimate > 0 else f"{second} better"


def _as_array(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per item), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf")
    return array


def bootstrap_mean(values: Sequence[float], strata: Optional[Sequence] = None,
                   n_resamples: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> Interval:
    """Percentile interval of the mean of per-item ``values`` (n,)."""
    x = _as_array("values", values)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an int >= 1, got {n_resamples!r}")
    groups = _groups(x.size, strata)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        count = min(_CHUNK, n_resamples - start)
        total = np.zeros(count)
        for members in groups:
            # Each row: len(members) draws with replacement from this stratum's items.
            picks = rng.integers(0, members.size, size=(count, members.size))
            total += x[members][picks].sum(1)
        means[start:start + count] = total / x.size
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(x.mean()), float(low), float(high), int(x.size))


def paired_bootstrap(first: Sequence[float], second: Sequence[float],
                     strata: Optional[Sequence] = None, n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Interval of mean(first - second) over paired items: item i of each was scored by
    the two models on the same input (e.g. the same caption and images)."""
    a, b = _as_array("first", first), _as_array("second", second)
    if a.shape != b.shape:
        raise ValueError(f"first and second must pair item for item, got {a.size} and "
                         f"{b.size} items")
    return bootstrap_mean(a - b, strata, n_resamples, confidence, seed)


def _groups(n: int, strata) -> list[np.ndarray]:
    if strata is None:
        return [np.arange(n)]
    labels = list(strata)
    if len(labels) != n:
        raise ValueError(f"strata must give one label per item ({n}), got {len(labels)}")
    index: dict = {}
    for i, label in enumerate(labels):
        index.setdefault(label, []).append(i)
    return [np.array(members) for members in index.values()]
