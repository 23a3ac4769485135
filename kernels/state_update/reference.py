"""One selective-scan step as written: the oracle of the decode kernel.

    dt = softplus(dt + dt_bias);  state <- exp(dt * A) * state + dt * B * x
    y = <C, state> + D * x;  out = y * silu(z)

Shapes: state (b, d, n); x, dt, z (b, d); A (d, n); B, C (b, n) or (b, g, n); D, dt_bias (d,).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import repeat


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                               dt_softplus=False):
    """The step above in the state's precision (at least float32); updates ``state`` in
    place and returns out (b, d) in x's dtype. Differentiable in every input but the state."""
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
