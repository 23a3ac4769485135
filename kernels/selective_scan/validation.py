"""Argument checks of the selective scan, shared by every backend.

Every public entry point calls :func:`check_scan_inputs` once, so a bad argument fails with
a ``TypeError`` or ``ValueError`` that names it, before any kernel runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.common.checks import check_flag, check_seq_lens, check_shape, check_tensor


@dataclass(frozen=True)
class ScanDims:
    """Sizes of one selective scan: batch b, channels d, length l, state n, groups g."""

    b: int
    d: int
    l: int
    n: int
    g: int

    @property
    def channels_per_group(self) -> int:
        return self.d // self.g


def check_scan_inputs(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False, initial_state=None, seq_lens=None, reverse=False,
) -> ScanDims:
    """Validate a selective-scan call and return its sizes.

    u, delta, z: (b, d, l). A: (d, n). B, C: (b, n, l) or (b, g, n, l) with d % g == 0.
    D, delta_bias: (d,). initial_state: (b, d, n). seq_lens: (b,) integer, each in [0, l].
    """
    check_tensor("u", u, 3)
    b, d, l = u.shape
    if l == 0:
        raise ValueError("u has length l == 0; the scan needs l >= 1")
    if b == 0 or d == 0:
        raise ValueError(f"u must have b >= 1 and d >= 1, got shape {tuple(u.shape)}")
    check_tensor("delta", delta, 3)
    check_shape("delta", delta, (b, d, l), "b, d, l")
    check_tensor("A", A, 2)
    if A.shape[0] != d:
        raise ValueError(f"A must have shape (d, n) with d = {d}, got {tuple(A.shape)}")
    n = A.shape[1]
    if n == 0:
        raise ValueError("A has state size n == 0; need n >= 1")

    g = None
    for name, x in (("B", B), ("C", C)):
        check_tensor(name, x)
        if x.dim() == 3:
            check_shape(name, x, (b, n, l), "b, n, l")
            x_groups = 1
        elif x.dim() == 4:
            x_groups = x.shape[1]
            check_shape(name, x, (b, x_groups, n, l), "b, g, n, l")
            if x_groups == 0 or d % x_groups != 0:
                raise ValueError(
                    f"{name} has g = {x_groups} groups, but d = {d} is not a multiple of g")
        else:
            raise ValueError(
                f"{name} must have shape (b, n, l) or (b, g, n, l), got {tuple(x.shape)}")
        if g is not None and x_groups != g:
            raise ValueError(f"B and C must have the same number of groups, got {g} and {x_groups}")
        g = x_groups

    if z is not None:
        check_tensor("z", z, 3)
        check_shape("z", z, (b, d, l), "b, d, l")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None:
            check_tensor(name, x, 1)
            check_shape(name, x, (d,), "d")
    if initial_state is not None:
        check_tensor("initial_state", initial_state, 3)
        check_shape("initial_state", initial_state, (b, d, n), "b, d, n")
    if seq_lens is not None:
        check_seq_lens(seq_lens, b, l)
    for name, flag in (("delta_softplus", delta_softplus),
                       ("return_last_state", return_last_state), ("reverse", reverse)):
        check_flag(name, flag)

    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z,
             "delta_bias": delta_bias, "initial_state": initial_state, "seq_lens": seq_lens}
    for name, x in named.items():
        if x is not None and x.device != u.device:
            raise ValueError(f"{name} is on {x.device} but u is on {u.device}; "
                             "all inputs must be on one device")
    return ScanDims(b=b, d=d, l=l, n=n, g=g)
