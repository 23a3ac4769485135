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


def empty_output_like(x: torch.Tensor) -> torch.Tensor:
    """An :func:`empty_output` shaped as the (b, d, l) tensor x and laid out as it is:
    channel-last (b, l, d) memory when x's channels are its faster axis (the Mamba block's
    views of its activations), else (b, d, l). Kernels that write through strides then
    hand back gradients and outputs in their input's layout."""
    b, d, l = x.shape
    if x.stride(1) < x.stride(2):
        return empty_output((b, l, d), x.dtype, x.device).transpose(1, 2)  # (b, d, l) view
    return empty_output((b, d, l), x.dtype, x.device)


def strides(x, ndim: int) -> tuple:
    """Strides of an optional tensor; zeros stand in for a missing one."""
    return tuple(x.stride()) if x is not None else (0,) * ndim
