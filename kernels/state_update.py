"""One recurrent step of the selective scan, for token-by-token decoding.

    dt = softplus(dt + dt_bias);  state <- exp(dt * A) * state + dt * B * x
    y = <C, state> + D * x;  out = y * silu(z)

``state`` (b, d, n) is updated in place; the step returns out (b, d). A Triton kernel runs
it on CUDA (and under TRITON_INTERPRET=1); the reference below runs anywhere, and is the
path taken whenever a gradient is needed (the kernel is inference-only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import repeat

from .selective_scan.validation import check_float_tensors

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
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, dt, A, B, C, D, z, dt_bias))
    if backend == "triton" and needs_grad:
        raise ValueError("backend='triton' for selective_state_update is inference-only; "
                         "use backend='reference' (or 'auto') when gradients are needed")
    use_triton = backend == "triton" or (backend == "auto" and x.is_cuda and not needs_grad)
    if use_triton:
        from ._state_update_triton import state_update_triton
        return state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                               dt_softplus=False):
    """The step as written above, in the state's precision; updates ``state`` in place."""
    compute = torch.promote_types(state.dtype, torch.float32)
    d = x.shape[1]
    dt = dt.to(compute)
    if dt_bias is not None:
        dt = dt + dt_bias.to(compute)
    if dt_softplus:
        dt = F.softplus(dt)
    B = B if B.dim() == 3 else B[:, None]                            # (b, g, n)
    C = C if C.dim() == 3 else C[:, None]
    B = repeat(B.to(compute), "b g n -> b (g c) n", c=d // B.shape[1])  # (b, d, n)
    C = repeat(C.to(compute), "b g n -> b (g c) n", c=d // C.shape[1])
    xc = x.to(compute)
    new_state = torch.exp(dt[..., None] * A.to(compute)) * state.to(compute) \
        + dt[..., None] * B * xc[..., None]
    with torch.no_grad():  # the state is a cache: gradients flow to this step's inputs only
        state.copy_(new_state)
    y = (new_state * C).sum(-1)
    if D is not None:
        y = y + D.to(compute) * xc
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(x.dtype)


def _check_step_inputs(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    named = {"state": state, "x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "z": z,
             "dt_bias": dt_bias}
    for name in ("state", "x", "dt", "A", "B", "C"):
        if not isinstance(named[name], torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(named[name]).__name__}")
    check_float_tensors(named, x.device)
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
    if not isinstance(dt_softplus, bool):
        raise TypeError(f"dt_softplus must be a bool, got {type(dt_softplus).__name__}")
