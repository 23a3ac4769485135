"""The causal depthwise conv and its decode step as written: the oracle.

    out[b, c, t] = act(bias[c] + sum_k weight[c, k] * x[b, c, t - (w - 1) + k])

with x taken as 0 before t = 0, and act None or silu. Shapes: x (b, d, l), weight (d, w),
bias (d,). Computes in float32 (float64 if given) and returns x's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    """x (b, d, l) -> (b, d, l): the sum over taps as written above."""
    compute = torch.promote_types(x.dtype, torch.float32)
    l, width = x.shape[-1], weight.shape[1]
    x_padded = F.pad(x.to(compute), (width - 1, 0))       # zeros before t = 0: causal
    w = weight.to(compute)
    out = sum(w[:, k, None] * x_padded[..., k:k + l] for k in range(width))
    if bias is not None:
        out = out + bias.to(compute)[:, None]
    if activation == "silu":
        out = F.silu(out)
    return out.to(x.dtype)


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, activation=None):
    """One decode step: x (b, d) joins the window conv_state (b, d, w), shifted left in
    place; returns the step's output (b, d)."""
    compute = torch.promote_types(x.dtype, torch.float32)
    window = torch.cat([conv_state[..., 1:].to(x.dtype), x[..., None]], dim=-1)  # (b, d, w)
    with torch.no_grad():  # the state is a cache: gradients flow to this step's inputs only
        conv_state.copy_(window)
    out = (window.to(compute) * weight.to(compute)).sum(-1)
    if bias is not None:
        out = out + bias.to(compute)
    if activation == "silu":
        out = F.silu(out)
    return out.to(x.dtype)
