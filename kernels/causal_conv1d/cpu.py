"""Fast CPU causal conv: the depthwise conv, its bias and SiLU in one compiled loop
(cpu_conv.cpp), forward and backward, reading and writing (b, d, l) tensors through their
strides (the Mamba block's channel-last views cost no copy; the output takes x's
layout). ``reverse`` reads each row backwards from its true end (seq_lens) natively.

Built on first use (``kernels.common.cpu_build``); where no compiler works,
``EXTENSION.available()`` is False and backend="auto" falls back to the reference with a warning.
Computes in float32 (float64 for float64 x). Saves x, nothing else: backward recomputes
the pre-activation.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kernels.common.cpu_build import CppExtension
from kernels.common.launch import empty_output, empty_output_like

EXTENSION = CppExtension("causal_conv1d_cpu", Path(__file__).with_name("cpu_conv.cpp"),
                         "CPU causal conv")


class CausalConv1dCPU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, seq_lens, silu, reverse):
        compute = torch.promote_types(x.dtype, torch.float32)
        xc = x.detach().to(compute)                                         # strides kept
        w_t = weight.detach().to(compute).t().contiguous()                   # (w, d)
        bias_c = bias.detach().to(compute).contiguous() if bias is not None else None
        lengths = seq_lens.to(torch.int64).contiguous() if seq_lens is not None else None
        out = empty_output_like(xc)
        EXTENSION.load().forward(xc, w_t, bias_c, lengths, reverse, silu, out)
        ctx.save_for_backward(xc, w_t, bias_c, lengths)
        ctx.meta = (silu, reverse, x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, g_out):
        xc, w_t, bias_c, lengths = ctx.saved_tensors
        silu, reverse, x_dtype, w_dtype, b_dtype = ctx.meta
        (b, d, _), width = xc.shape, w_t.shape[0]
        g_x = empty_output_like(xc)
        g_w_rows = empty_output((b, width, d), xc.dtype, xc.device)
        g_bias_rows = empty_output((b, d), xc.dtype, xc.device)
        EXTENSION.load().backward(xc, w_t, bias_c, lengths, reverse, silu, g_out.to(xc.dtype),
                                   g_x, g_w_rows, g_bias_rows)
        g_bias = g_bias_rows.sum(0).to(b_dtype) if b_dtype is not None else None
        return (g_x.to(x_dtype), g_w_rows.sum(0).t().to(w_dtype), g_bias, None, None, None)


def cpu_causal_conv1d(x, weight, bias, activation, seq_lens, reverse):
    """Run the compiled conv on validated inputs: (b, d, l) in x's dtype and layout."""
    return CausalConv1dCPU.apply(x, weight, bias, seq_lens, activation == "silu", reverse)
