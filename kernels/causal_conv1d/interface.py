"""Public causal-conv ops: argument checks once, then a backend.

Backends, all with gradients for x, weight and bias: Triton kernels on CUDA (and under
TRITON_INTERPRET=1); "cpu", torch's grouped conv1d (oneDNN), about 2x faster than the
reference on CPU; and the reference (``reference.py``), the oracle.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.common.checks import check_choice, check_optional_tensors, check_tensor

from .reference import causal_conv1d_ref, causal_conv1d_update_ref

ACTIVATIONS = (None, "silu")
BACKENDS = ("auto", "triton", "cpu", "reference")


def causal_conv1d_fn(x, weight, bias=None, activation=None, *, backend="auto"):
    """Causal depthwise conv: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l) in x's
    dtype, ``activation`` None or "silu".

    backend: "triton" (CUDA or interpreter), "cpu", "reference", or "auto" (triton on
    CUDA, cpu elsewhere).
    """
    _check_conv_inputs(x, weight, bias, activation, x_dims=3)
    check_choice("backend", backend, BACKENDS)
    if backend == "triton" or (backend == "auto" and x.is_cuda):
        from .triton_conv import CausalConv1dTriton
        return CausalConv1dTriton.apply(x, weight, bias, activation == "silu")
    if backend == "reference":
        return causal_conv1d_ref(x, weight, bias, activation)
    return _conv1d_cpu(x, weight, bias, activation)


def _conv1d_cpu(x, weight, bias, activation):
    """torch's grouped conv with w - 1 zeros on both sides; the first l outputs are the
    causal ones."""
    compute = torch.promote_types(x.dtype, torch.float32)
    width = weight.shape[1]
    out = F.conv1d(x.to(compute), weight.to(compute)[:, None, :],
                   bias.to(compute) if bias is not None else None,
                   padding=width - 1, groups=x.shape[1])[..., :x.shape[-1]]
    return (F.silu(out) if activation == "silu" else out).to(x.dtype)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, *, backend="auto"):
    """One decode step: shift ``conv_state`` (b, d, w) left in place, append x (b, d), and
    return this step's conv output (b, d). Matches causal_conv1d_fn on the sequence so far
    when conv_state starts as zeros."""
    _check_conv_inputs(x, weight, bias, activation, x_dims=2)
    width = weight.shape[1]
    check_tensor("conv_state", conv_state, device=x.device)
    if tuple(conv_state.shape) != (*x.shape, width):
        raise ValueError(f"conv_state must have shape (b, d, w) = {(*x.shape, width)}, "
                         f"got {tuple(conv_state.shape)}")
    check_choice("backend", backend, BACKENDS)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if backend == "triton" or (backend == "auto" and x.is_cuda and not needs_grad):
        from .triton_conv import conv_update_triton
        return conv_update_triton(x, conv_state, weight, bias, activation == "silu")
    return causal_conv1d_update_ref(x, conv_state, weight, bias, activation)


def _check_conv_inputs(x, weight, bias, activation, x_dims):
    check_tensor("x", x)
    check_optional_tensors({"weight": weight, "bias": bias}, x.device)
    check_tensor("weight", weight)
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
    check_choice("activation", activation, ACTIVATIONS)
