"""Depthwise causal 1-D convolution (the Mamba block's short conv) and its decode step.

    out[b, c, t] = act(bias[c] + sum_k weight[c, k] * x[b, c, t - (w - 1) + k])

with x taken as 0 before t = 0, and act None or silu. Shapes: x (b, d, l), weight (d, w),
bias (d,). Backends, all with gradients for x, weight and bias: Triton kernels on CUDA
(and under TRITON_INTERPRET=1); "cpu", torch's grouped conv1d (oneDNN), about 2x faster
than the reference on CPU; and the reference, the sum over taps written out: the oracle.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .selective_scan.validation import FLOAT_DTYPES, check_float_tensors

ACTIVATIONS = (None, "silu")
BACKENDS = ("auto", "triton", "cpu", "reference")


def causal_conv1d_fn(x, weight, bias=None, activation=None, *, backend="auto"):
    """Causal depthwise conv over (b, d, l); returns (b, d, l) in x's dtype.

    backend: "triton" (CUDA or interpreter), "cpu", "reference", or "auto" (triton on
    CUDA, cpu elsewhere).
    """
    _check_conv_inputs(x, weight, bias, activation, x_dims=3)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" or (backend == "auto" and x.is_cuda):
        from ._causal_conv1d_triton import CausalConv1dTriton
        return CausalConv1dTriton.apply(x, weight, bias, activation == "silu")
    if backend == "reference":
        return causal_conv1d_ref(x, weight, bias, activation)
    # Grouped conv with w - 1 zeros on both sides; the first l outputs are the causal ones.
    compute = torch.promote_types(x.dtype, torch.float32)
    width = weight.shape[1]
    out = F.conv1d(x.to(compute), weight.to(compute)[:, None, :],
                   bias.to(compute) if bias is not None else None,
                   padding=width - 1, groups=x.shape[1])[..., :x.shape[-1]]
    return (F.silu(out) if activation == "silu" else out).to(x.dtype)


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    """The sum over taps as written in the module docstring, in float32 (float64 if given)."""
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


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, *, backend="auto"):
    """One decode step: shift ``conv_state`` (b, d, w) left in place, append x (b, d), and
    return this step's conv output (b, d). Matches causal_conv1d_fn on the sequence so far
    when conv_state starts as zeros."""
    _check_conv_inputs(x, weight, bias, activation, x_dims=2)
    width = weight.shape[1]
    if (not isinstance(conv_state, torch.Tensor) or conv_state.dtype not in FLOAT_DTYPES
            or tuple(conv_state.shape) != (*x.shape, width)):
        raise ValueError(f"conv_state must be a float tensor of shape (b, d, w) = "
                         f"{(*x.shape, width)}, got {getattr(conv_state, 'shape', conv_state)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if backend == "triton" or (backend == "auto" and x.is_cuda and not needs_grad):
        from ._causal_conv1d_triton import conv_update_triton
        return conv_update_triton(x, conv_state, weight, bias, activation == "silu")
    return causal_conv1d_update_ref(x, conv_state, weight, bias, activation)


def causal_conv1d_update_ref(x, conv_state, weight, bias=None, activation=None):
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


def _check_conv_inputs(x, weight, bias, activation, x_dims):
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_float_tensors({"x": x, "weight": weight, "bias": bias}, x.device)
    letters = "b, d, l" if x_dims == 3 else "b, d"
    if x.dim() != x_dims:
        raise ValueError(f"x must have shape ({letters}), got {tuple(x.shape)}")
    if x_dims == 3 and x.shape[-1] == 0:
        raise ValueError("x has length l == 0; need l >= 1")
    d = x.shape[1]
    if weight.dim() != 2 or weight.shape[0] != d or weight.shape[1] == 0:
        raise ValueError(f"weight must have shape (d, w) with d = {d} and w >= 1, "
                         f"got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (d,):
        raise ValueError(f"bias must have shape (d,) = ({d},), got {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
