"""Lower bounds on a selective scan's run time: bytes that must move, exps that must run.

Memory floor: every input read once and every output written once (forward); the backward
reads the inputs and the output's gradient again and writes one gradient per input.
Exp floor: b * d * l * n exponentials per pass (the backward recomputes them once).
"""
from __future__ import annotations

import time

import torch

# Exponentials per clock per SM (the special-function units of Hopper and Ampere).
EXP_PER_CLOCK_PER_SM = 16
FALLBACK_CLOCK_HZ = 1.755e9  # H100 SXM base boost clock, used when the driver won't say


def scan_bytes(inputs: dict, out: torch.Tensor, mode: str) -> int:
    """Bytes a scan must move at least; ``inputs`` are its tensor arguments."""
    read = sum(x.numel() * x.element_size() for x in inputs.values())
    written = out.numel() * out.element_size()
    if mode == "fwd":
        return read + written
    if mode == "fwd+bwd":
        # forward + (inputs and g_out read again, one gradient per input written)
        return read + written + read + written + read
    raise ValueError(f"mode must be 'fwd' or 'fwd+bwd', got {mode!r}")


def scan_exps(b: int, d: int, l: int, n: int, mode: str) -> int:
    return b * d * l * n * (1 if mode == "fwd" else 2)


def measure_copy_bandwidth(device: torch.device, megabytes: int = 256) -> float:
    """Achievable bytes/s of a large copy (read + write): the memory roof we compare to."""
    x = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32, device=device).uniform_()
    y = torch.empty_like(x)
    if device.type == "cuda":
        import triton.testing
        ms = triton.testing.do_bench(lambda: y.copy_(x), quantiles=[0.5])
        seconds = (ms[0] if isinstance(ms, (list, tuple)) else ms) / 1e3
    else:
        y.copy_(x)
        start = time.perf_counter()
        reps = 5
        for _ in range(reps):
            y.copy_(x)
        seconds = (time.perf_counter() - start) / reps
    return 2 * x.numel() * x.element_size() / seconds


def exp_throughput(device: torch.device):
    """Peak exponentials per second on a GPU (SFU count x clock), or None on CPU."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "clock_rate", 0) or 0
    clock = clock_khz * 1e3 if clock_khz else FALLBACK_CLOCK_HZ
    return props.multi_processor_count * EXP_PER_CLOCK_PER_SM * clock


def floor_seconds(n_bytes: int, n_exps: int, bandwidth: float, exps_per_s) -> float:
    """The larger of the memory floor and (on GPU) the exp-throughput floor."""
    floor = n_bytes / bandwidth
    if exps_per_s:
        floor = max(floor, n_exps / exps_per_s)
    return floor
