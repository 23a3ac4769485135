"""Bootstrap intervals against cases with known answers."""
import math

import numpy as np
import pytest

from ssm.eval.bootstrap import bootstrap_mean, paired_bootstrap


def test_a_constant_difference_has_a_zero_width_interval():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 2, 300).astype(float)
    iv = paired_bootstrap(first + 0.25, first)
    assert iv.estimate == pytest.approx(0.25) and iv.low == pytest.approx(0.25)
    assert iv.high == pytest.approx(0.25) and iv.significant and iv.n == 300
    assert iv.verdict("a", "b") == "a better"


def test_interval_matches_the_normal_approximation_for_a_large_sample():
    """Mean of n Bernoulli(0.3) outcomes: the 95% interval is mean +- 1.96 sd / sqrt(n)."""
    rng = np.random.default_rng(1)
    x = (rng.random(4000) < 0.3).astype(float)
    iv = bootstrap_mean(x, n_resamples=4000, seed=2)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert iv.estimate == pytest.approx(x.mean())
    assert iv.low == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert iv.high == pytest.approx(x.mean() + half, abs=0.15 * half)


def test_pairing_removes_the_shared_item_difficulty():
    """Two models that agree on hard and easy items and differ by a small, steady margin:
    the paired interval sees the margin; the unpaired spread of either is far wider."""
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0, 1, 500)
    a, b = difficulty + 0.1, difficulty
    paired = paired_bootstrap(a, b)
    alone = bootstrap_mean(a)
    assert paired.significant and paired.high - paired.low < 1e-9
    assert alone.high - alone.low > 0.1


def test_no_difference_is_not_significant_at_the_stated_rate():
    """Identically distributed outcomes: the 95% interval excludes 0 in about 5% of cases."""
    rng = np.random.default_rng(4)
    hits = sum(paired_bootstrap(rng.integers(0, 2, 200), rng.integers(0, 2, 200),
                                n_resamples=400, seed=k).significant for k in range(200))
    assert hits <= 25  # 5% of 200 is 10; binomial 99.9% bound about 22


def test_strata_resample_within_each_seed():
    """Stratum means 0 and 1 with equal sizes: every resample keeps the sizes, so the
    mean is exactly 0.5 every time."""
    x = np.array([0.0] * 50 + [1.0] * 50)
    strata = [0] * 50 + [1] * 50
    iv = bootstrap_mean(x, strata=strata)
    assert iv.low == iv.high == 0.5
    unstratified = bootstrap_mean(x)
    assert unstratified.low < 0.45 and unstratified.high > 0.55


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="pair item for item"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean([1.0, math.nan])
    with pytest.raises(ValueError, match="strata"):
        bootstrap_mean([1.0, 0.0], strata=[0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([1.0, 0.0], confidence=1.5)
    assert math.isnan(bootstrap_mean([]).estimate)
