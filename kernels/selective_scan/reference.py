"""The selective scan written as the recurrence reads: the oracle for every fast path.

    dt_t = softplus(delta_t + delta_bias)            (each step optional)
    h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t
    y_t  = <C_t, h_t> + D * u_t
    out  = y * silu(z)                               (when z is given)

Shapes use mamba-ssm's letters: batch b, channels d, length l, state n, groups g.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import repeat

from .validation import check_scan_inputs


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False, *, initial_state=None, seq_lens=None, reverse=False,
):
    """Reference selective scan, one Python step per position; differentiable by autograd.

    Args:
        u, delta: (b, d, l). A: (d, n), real. B, C: (b, n, l) or (b, g, n, l), d % g == 0.
        D, delta_bias: (d,). z: (b, d, l), gates the output by silu(z).
        initial_state: (b, d, n), the state before the first step (before the last
            real step when ``reverse``).
        seq_lens: (b,) integer; row i is real on [0, seq_lens[i]). Padded steps leave the
            state unchanged and their output is 0.
        reverse: run the recurrence from each row's true end back to position 0.

    Returns:
        out (b, d, l) in u's dtype, and, when ``return_last_state``, the state after the
        final real step, (b, d, n) in the compute dtype: float64 if any input is float64,
        else float32.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                      return_last_state, initial_state, seq_lens, reverse)
    out, last_state = reference_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                     initial_state, seq_lens, reverse)
    return (out, last_state) if return_last_state else out


def _per_channel(x, d):
    """(b, n, l) or (b, g, n, l) -> (b, d, n, l): each group's rows serve its d // g channels."""
    x = x if x.dim() == 4 else x[:, None]                          # (b, n, l) is one group
    return repeat(x, "b g n l -> b (g c) n l", c=d // x.shape[1])


def reference_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                   initial_state, seq_lens, reverse):
    """The loop itself, on inputs that :func:`check_scan_inputs` accepted."""
    tensors = [x for x in (u, delta, A, B, C, D, z, delta_bias, initial_state) if x is not None]
    compute = torch.float64 if any(x.dtype == torch.float64 for x in tensors) else torch.float32
    b, d, l = u.shape
    n = A.shape[1]

    uc = u.to(compute)
    dt = delta.to(compute)
    if delta_bias is not None:
        dt = dt + delta_bias.to(compute)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A = A.to(compute)
    B = _per_channel(B.to(compute), d)                             # (b, d, n, l)
    C = _per_channel(C.to(compute), d)
    lengths = seq_lens if seq_lens is not None else torch.full((b,), l, device=u.device)

    h = (initial_state.to(compute) if initial_state is not None
         else torch.zeros(b, d, n, dtype=compute, device=u.device))
    ys = [None] * l
    for t in (reversed(range(l)) if reverse else range(l)):
        live = (t < lengths)[:, None, None]                        # (b, 1, 1)
        dt_t = dt[:, :, t, None]                                   # (b, d, 1)
        h_next = torch.exp(dt_t * A) * h + dt_t * B[..., t] * uc[:, :, t, None]
        h = torch.where(live, h_next, h)
        ys[t] = (h * C[..., t]).sum(-1)                            # (b, d)
    y = torch.stack(ys, dim=-1)                                    # (b, d, l)
    if D is not None:
        y = y + D.to(compute)[:, None] * uc
    if z is not None:
        y = y * F.silu(z.to(compute))
    positions = torch.arange(l, device=u.device)
    y = torch.where(positions[None, None, :] < lengths[:, None, None], y, torch.zeros_like(y))
    return y.to(u.dtype), h
