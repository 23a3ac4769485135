"""Host-side helpers for launching Triton kernels, shared by every op.

Nothing here imports triton, so ``kernels`` imports on machines without it.
"""
from __future__ import annotations

import os

import torch

# Set before ``kernels`` is imported: Triton then runs kernels through its CPU interpreter.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    """Whether the triton package imports here (Linux only)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def empty_output(shape, dtype, device) -> torch.Tensor:
    """An output buffer; NaN-filled when KERNELS_POISON_OUTPUTS=1 so unwritten cells show."""
    if os.environ.get("KERNELS_POISON_OUTPUTS", "0") == "1":
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def strides(x, ndim: int) -> tuple:
    """Strides of an optional tensor; zeros stand in for a missing one."""
    return tuple(x.stride()) if x is not None else (0,) * ndim
