"""Per-job peak memory (ssm.train.memory.PeakMemory) and the per-step timing of the Trainer."""
import time
from types import SimpleNamespace

import pytest
import torch

from ssm.train.loop import Trainer, TrainerSettings
from ssm.train.memory import PeakMemory, anonymous_rss_bytes

MB = 2 ** 20


def _hold(mb: int, seconds: float = 0.03):
    x = torch.ones(mb * MB // 4)  # float32, every page written
    time.sleep(seconds)           # long enough for the sampler to see it
    return float(x[-1])


@pytest.mark.skipif(anonymous_rss_bytes() is None, reason="needs /proc/self/statm")
def test_cpu_peak_is_the_growth_inside_the_block_each_time():
    with PeakMemory("cpu") as first:
        _hold(200)
    with PeakMemory("cpu") as second:  # same process: must not inherit the first peak
        _hold(50)
    with PeakMemory("cpu") as idle:
        pass
    print(f"200 MB -> {first.mb:.1f}, 50 MB -> {second.mb:.1f}, nothing -> {idle.mb:.1f}")
    assert first.kind == "cpu_rss_growth"
    assert 190 <= first.mb <= 260
    assert 45 <= second.mb <= 100
    assert idle.mb < 20
    assert first.facts() == {"peak_mem_mb": first.mb, "peak_mem_kind": "cpu_rss_growth"}


@pytest.mark.skipif(anonymous_rss_bytes() is None, reason="needs /proc/self/statm")
def test_cpu_peak_sees_memory_freed_before_the_block_ends():
    with PeakMemory("cpu") as peak:
        _hold(120)  # freed on return: only the sampler saw it
        time.sleep(0.02)
    assert 110 <= peak.mb <= 180


@pytest.mark.gpu
def test_cuda_peak_resets_per_block():
    device = torch.device("cuda")
    with PeakMemory(device) as first:
        x = torch.ones(100 * MB // 4, device=device)
        del x
    with PeakMemory(device) as second:
        y = torch.ones(10 * MB // 4, device=device)
        del y
    assert first.kind == "cuda_max_allocated"
    assert first.mb >= 100 and 10 <= second.mb < first.mb


def test_peak_memory_rejects_bad_arguments():
    with pytest.raises(ValueError, match="device"):
        PeakMemory("meta")
    with pytest.raises(ValueError, match="interval_s"):
        PeakMemory("cpu", interval_s=0)
    with pytest.raises(RuntimeError, match="before the block ended"):
        PeakMemory("cpu").facts()


def _timing(seconds, warmup):
    fake = SimpleNamespace(step_seconds=seconds, settings=SimpleNamespace(timing_warmup=warmup))
    return Trainer.step_timing(fake)


def test_step_timing_skips_the_warmup_steps():
    timing = _timing([5.0, 2.0, 0.1, 0.3, 0.2, 0.4], warmup=2)
    assert timing["timed_steps"] == 4
    assert timing["step_ms_median"] == pytest.approx(250.0)
    assert (timing["step_ms_min"], timing["step_ms_max"]) == pytest.approx((100.0, 400.0))
    # Too few steps for a warm-up: all of them, and the count says so.
    assert _timing([0.5], warmup=2) == {"step_ms_median": 500.0, "step_ms_min": 500.0,
                                        "step_ms_max": 500.0, "timed_steps": 1}
    assert _timing([], warmup=0)["step_ms_median"] is None


def test_timing_warmup_must_not_be_negative():
    with pytest.raises(ValueError, match="trainer.timing_warmup"):
        TrainerSettings(timing_warmup=-1)
