"""Timing with warm-up and medians: ``triton.testing.do_bench`` on GPU,
``torch.utils.benchmark`` on CPU. Used by every benchmark (kernels and models)."""
from __future__ import annotations

from typing import Callable

import torch


def time_ms(fn: Callable, device, cpu_min_run_time: float = 0.5) -> tuple[float, float, float]:
    """(median, 20th, 80th percentile) milliseconds of ``fn()`` on ``device``."""
    if torch.device(device).type == "cuda":
        import triton.testing
        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8]))
    from torch.utils import benchmark
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(
        min_run_time=cpu_min_run_time)
    times = sorted(m.times)
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1e3  # noqa: E731
    return m.median * 1e3, pick(0.2), pick(0.8)
