"""Argument checks shared by the kernel ops.

Every public op validates its arguments once, before any kernel runs, so a bad argument
fails with a ``TypeError`` or ``ValueError`` that names it and says what was expected.
"""
from __future__ import annotations

from typing import Optional

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, x, ndim: Optional[int] = None, device=None) -> None:
    """``x`` is a floating-point tensor (float16/bfloat16/float32/float64), with ``ndim``
    dimensions and on ``device`` when those are given."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 "
                        f"or float64), got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the other inputs are on {device}")


def check_optional_tensors(named: dict, device) -> None:
    """:func:`check_tensor` on every entry of ``named`` that is not None."""
    for name, x in named.items():
        if x is not None:
            check_tensor(name, x, device=device)


def check_shape(name: str, x: torch.Tensor, expected: tuple, letters: str) -> None:
    """``x.shape == expected``; the error spells the shape with its letters, e.g. (b, d, l)."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape ({letters}) = {tuple(expected)}, got {tuple(x.shape)}")


def check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_seq_lens(seq_lens, b: int, l: int) -> None:
    """seq_lens is an integer tensor (b,) with every length in [0, l]."""
    if not isinstance(seq_lens, torch.Tensor):
        raise TypeError(f"seq_lens must be a torch.Tensor, got {type(seq_lens).__name__}")
    if seq_lens.dtype.is_floating_point or seq_lens.dtype.is_complex or seq_lens.dtype == torch.bool:
        raise TypeError(f"seq_lens must be an integer tensor (torch.long), got {seq_lens.dtype}")
    if tuple(seq_lens.shape) != (b,):
        raise ValueError(f"seq_lens must have shape (b,) = ({b},), got {tuple(seq_lens.shape)}")
    # One host sync: a length outside [0, l] would otherwise read or skip data silently.
    lo, hi = int(seq_lens.min()), int(seq_lens.max())
    if lo < 0 or hi > l:
        raise ValueError(f"seq_lens must lie in [0, l] = [0, {l}], got values in [{lo}, {hi}]")
