"""Public causal-conv ops: argument checks once, then a backend.

Backends, all with gradients for x, weight and bias: Triton kernels on CUDA (and under
TRITON_INTERPRET=1); "cpu", the compiled loop with bias and SiLU fused (``cpu.py``), which
reads channel-last views and runs ``reverse`` natively; and the reference
(``reference.py``), the oracle. Triton and the reference run ``reverse`` as the causal
conv of the masked, flipped input.
"""
from __future__ import annotations

import torch

from kernels.common.checks import (check_choice, check_flag, check_optional_tensors,
                                   check_seq_lens, check_tensor)

from .reference import causal_conv1d_ref, causal_conv1d_update_ref

ACTIVATIONS = (None, "silu")
BACKENDS = ("auto", "triton", "cpu", "reference")


def causal_conv1d_fn(x, weight, bias=None, activation=None, *, seq_lens=None, reverse=False,
                     backend="auto"):
    """Causal depthwise conv: x (b, d, l), weight (d, w), bias (d,) -> (b, d, l) in x's
    dtype, ``activation`` None or "silu".

    reverse: the anti-causal conv, out[t] reads x[t .. t + w - 1], with positions at or past
    each row's ``seq_lens`` (b,) read as 0: the causal conv of each row's real part run
    backwards. Without ``reverse`` real positions never see padding and seq_lens changes
    nothing.
    backend: "triton" (CUDA or interpreter), "cpu", "reference", or "auto" (triton on
    CUDA, cpu elsewhere; the reference with a warning where cpu can't be built).
    """
    _check_conv_inputs(x, weight, bias, activation, x_dims=3)
    check_flag("reverse", reverse)
    if seq_lens is not None:
        check_seq_lens(seq_lens, x.shape[0], x.shape[-1])
        _check_device("seq_lens", seq_lens, x.device)
    chosen = _resolve_backend(backend, x)
    if chosen == "cpu":
        from .cpu import cpu_causal_conv1d
        return cpu_causal_conv1d(x, weight, bias, activation, seq_lens, reverse)
    if reverse:
        if seq_lens is not None:
            # Padding sits at the start once flipped: zero it, so the conv sees it as the
            # zeros before a sequence begins.
            keep = torch.arange(x.shape[-1], device=x.device)[None, :] < seq_lens[:, None]
            x = x * keep[:, None, :].to(x.dtype)
        return _causal(x.flip(-1), weight, bias, activation, chosen).flip(-1)
    return _causal(x, weight, bias, activation, chosen)


def _causal(x, weight, bias, activation, backend):
    if backend == "triton":
        from .triton_conv import CausalConv1dTriton
        return CausalConv1dTriton.apply(x, weight, bias, activation == "silu")
    return causal_conv1d_ref(x, weight, bias, activation)


def _resolve_backend(backend, x) -> str:
    check_choice("backend", backend, BACKENDS)
    if backend == "auto":
        if x.is_cuda:
            return "triton"
        from .cpu import EXTENSION
        return EXTENSION.auto_backend(x.device)
    if backend == "cpu" and x.device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors; x is on {x.device}")
    return backend


def _check_device(name, x, device) -> None:
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but x is on {device}")


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
