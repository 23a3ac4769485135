"""Public decode step: argument checks once, then a backend.

A Triton kernel runs the step on CUDA (and under TRITON_INTERPRET=1); the reference runs
anywhere, and is the path taken whenever a gradient is needed (the kernel is
inference-only).
"""
from __future__ import annotations

import torch

from kernels.common.checks import check_choice, check_flag, check_optional_tensors, check_tensor

from .reference import selective_state_update_ref

BACKENDS = ("auto", "triton", "reference")


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False, *, backend="auto"):
    """Advance ``state`` by one step in place and return the step's output.

    Args:
        state: (b, d, n), float32 usually; written in place.
        x, dt, z: (b, d). A: (d, n). B, C: (b, n) or (b, g, n) with d % g == 0.
        D, dt_bias: (d,).
        backend: "triton" (CUDA or interpreter), "reference", or "auto" (triton on CUDA
            when no gradient is needed, else the reference).

    Returns:
        out (b, d) in x's dtype.
    """
    _check_step_inputs(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    check_choice("backend", backend, BACKENDS)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, dt, A, B, C, D, z, dt_bias))
    if backend == "triton" and needs_grad:
        raise ValueError("backend='triton' for selective_state_update is inference-only; "
                         "use backend='reference' (or 'auto') when gradients are needed")
    use_triton = backend == "triton" or (backend == "auto" and x.is_cuda and not needs_grad)
    if use_triton:
        from .triton_step import state_update_triton
        return state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


def _check_step_inputs(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    named = {"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z,
             "dt_bias": dt_bias}
    for name in ("state", "x", "dt", "A", "B", "C"):
        check_tensor(name, named[name])
    check_optional_tensors(named, x.device)
    if state.dim() != 3:
        raise ValueError(f"state must have shape (b, d, n), got {tuple(state.shape)}")
    b, d, n = state.shape
    expected = {"x": (b, d), "dt": (b, d), "A": (d, n), "z": (b, d), "D": (d,), "dt_bias": (d,)}
    letters = {"x": "b, d", "dt": "b, d", "A": "d, n", "z": "b, d", "D": "d", "dt_bias": "d"}
    for name, shape in expected.items():
        t = named[name]
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape ({letters[name]}) = {shape}, "
                             f"got {tuple(t.shape)}")
    for name in ("B", "C"):
        t = named[name]
        groups = t.shape[1] if t.dim() == 3 else 1
        if t.dim() not in (2, 3) or t.shape[0] != b or t.shape[-1] != n or d % groups:
            raise ValueError(f"{name} must have shape (b, n) = ({b}, {n}) or (b, g, n) with "
                             f"d = {d} a multiple of g, got {tuple(t.shape)}")
    if B.shape != C.shape:
        raise ValueError(f"B and C must have the same shape, got {tuple(B.shape)} and "
                         f"{tuple(C.shape)}")
    check_flag("dt_softplus", dt_softplus)
