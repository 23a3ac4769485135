"""Triton kernels of the causal depthwise conv: forward, backward, one decode step.

Each program owns a (BLOCK_D, BLOCK_L) tile and unrolls the w taps. The backward
recomputes the pre-activation at the w positions each input feeds, so nothing but the
inputs is saved; weight and bias gradients are summed per tile and reduced by torch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.common.launch import empty_output


@triton.jit
def _pre_activation(x_row, w_ptrs, bias, t, mask_d, l, stride_x_l, stride_w_k,
                    WIDTH: tl.constexpr):
    """bias + sum_k w[:, k] * x[:, t - (WIDTH - 1) + k] for a (BLOCK_D, BLOCK_L) tile."""
    acc = tl.zeros((mask_d.shape[0], t.shape[0]), tl.float32) + bias[:, None]
    for k in tl.static_range(WIDTH):
        src = t - (WIDTH - 1) + k
        ok = mask_d[:, None] & ((src >= 0) & (src < l))[None, :]
        xk = tl.load(x_row + src[None, :] * stride_x_l, mask=ok, other=0.0).to(tl.float32)
        wk = tl.load(w_ptrs + k * stride_w_k, mask=mask_d, other=0.0).to(tl.float32)
        acc += wk[:, None] * xk
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, d, l,
                     stride_x_b, stride_x_d, stride_x_l, stride_w_d, stride_w_k,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, WIDTH: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = offs_d < d
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    x_row = x_ptr + pid_b * stride_x_b + offs_d[:, None] * stride_x_d
    pre = _pre_activation(x_row, w_ptr + offs_d * stride_w_d, bias, t, mask_d, l,
                          stride_x_l, stride_w_k, WIDTH)
    out = pre * tl.sigmoid(pre) if SILU else pre
    mask = mask_d[:, None] & (t < l)[None, :]
    tl.store(out_ptr + (pid_b * d + offs_d[:, None]) * l + t[None, :],
             out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, bias_ptr, g_out_ptr, g_x_ptr, g_w_part_ptr, g_bias_part_ptr,
                     d, l, n_l_blocks,
                     stride_x_b, stride_x_d, stride_x_l, stride_w_d, stride_w_k,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, WIDTH: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(2)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = offs_d < d
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    x_row = x_ptr + pid_b * stride_x_b + offs_d[:, None] * stride_x_d
    w_ptrs = w_ptr + offs_d * stride_w_d
    dl_row = (pid_b * d + offs_d[:, None]) * l                      # contiguous (b, d, l)

    # x[t] feeds outputs t + j, j = 0 .. WIDTH-1, through tap WIDTH-1-j.
    g_x = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
    g_pre_here = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)
    for j in tl.static_range(WIDTH):
        tj = t + j
        in_seq = mask_d[:, None] & (tj < l)[None, :]
        g = tl.load(g_out_ptr + dl_row + tj[None, :], mask=in_seq, other=0.0).to(tl.float32)
        if SILU:
            pre = _pre_activation(x_row, w_ptrs, bias, tj, mask_d, l, stride_x_l, stride_w_k,
                                  WIDTH)
            sig = tl.sigmoid(pre)
            g = g * sig * (1.0 + pre * (1.0 - sig))
        wk = tl.load(w_ptrs + (WIDTH - 1 - j) * stride_w_k, mask=mask_d, other=0.0)
        g_x += wk.to(tl.float32)[:, None] * g
        if j == 0:
            g_pre_here = g
    mask = mask_d[:, None] & (t < l)[None, :]
    tl.store(g_x_ptr + dl_row + t[None, :], g_x.to(g_x_ptr.dtype.element_ty), mask=mask)

    # Per-tile sums for the weight and bias gradients: (b, n_l_blocks, d, WIDTH) and (..., d).
    part = (pid_b * n_l_blocks + pid_l) * d + offs_d
    for k in tl.static_range(WIDTH):
        src = t - (WIDTH - 1) + k
        ok = mask & (src >= 0)[None, :]
        xk = tl.load(x_row + src[None, :] * stride_x_l, mask=ok, other=0.0).to(tl.float32)
        tl.store(g_w_part_ptr + part * WIDTH + k, tl.sum(g_pre_here * xk, axis=1), mask=mask_d)
    tl.store(g_bias_part_ptr + part, tl.sum(g_pre_here, axis=1), mask=mask_d)


def conv_blocks(d: int, l: int) -> tuple[int, int]:
    """(block_d, block_l) of the forward and backward launches."""
    block_l = min(128, max(16, triton.next_power_of_2(l)))
    return min(32, triton.next_power_of_2(d)), block_l


class CausalConv1dTriton(torch.autograd.Function):
    """Saves only x, weight and bias; the backward recomputes the pre-activation."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        b, d, l = x.shape
        block_d, block_l = conv_blocks(d, l)
        out = empty_output((b, d, l), x.dtype, x.device)
        _conv_fwd_kernel[(b, triton.cdiv(d, block_d), triton.cdiv(l, block_l))](
            x, weight, bias if bias is not None else weight, out, d, l,
            *x.stride(), *weight.stride(), HAS_BIAS=bias is not None, SILU=silu,
            WIDTH=weight.shape[1], BLOCK_D=block_d, BLOCK_L=block_l, enable_fp_fusion=True)
        ctx.save_for_backward(x, weight, bias)
        ctx.silu = silu
        return out

    @staticmethod
    def backward(ctx, g_out):
        x, weight, bias = ctx.saved_tensors
        b, d, l = x.shape
        width = weight.shape[1]
        block_d, block_l = conv_blocks(d, l)
        n_l_blocks = triton.cdiv(l, block_l)
        g_x = empty_output((b, d, l), x.dtype, x.device)
        g_w_part = empty_output((b, n_l_blocks, d, width), torch.float32, x.device)
        g_bias_part = empty_output((b, n_l_blocks, d), torch.float32, x.device)
        _conv_bwd_kernel[(b, triton.cdiv(d, block_d), n_l_blocks)](
            x, weight, bias if bias is not None else weight, g_out.contiguous(), g_x,
            g_w_part, g_bias_part, d, l, n_l_blocks, *x.stride(), *weight.stride(),
            HAS_BIAS=bias is not None, SILU=ctx.silu, WIDTH=width,
            BLOCK_D=block_d, BLOCK_L=block_l, enable_fp_fusion=True)
        g_w = g_w_part.sum((0, 1)).to(weight.dtype)
        g_bias = g_bias_part.sum((0, 1)).to(bias.dtype) if bias is not None else None
        return g_x, g_w, g_bias, None


@triton.jit
def _conv_update_kernel(x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, d,
                        stride_x_b, stride_x_d, stride_s_b, stride_s_d, stride_s_k,
                        stride_w_d, stride_w_k,
                        HAS_BIAS: tl.constexpr, SILU: tl.constexpr, WIDTH: tl.constexpr,
                        BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cols = tl.arange(0, BLOCK_W)
    mask_d = offs_d < d
    mask = mask_d[:, None] & (cols < WIDTH)[None, :]
    state_tile = state_ptr + pid_b * stride_s_b + offs_d[:, None] * stride_s_d
    # The window shifted left by one: slot k takes old slot k + 1, the last slot takes x.
    shifted = tl.load(state_tile + (cols + 1)[None, :] * stride_s_k,
                      mask=mask_d[:, None] & (cols + 1 < WIDTH)[None, :], other=0.0)
    x = tl.load(x_ptr + pid_b * stride_x_b + offs_d * stride_x_d, mask=mask_d, other=0.0)
    window = tl.where((cols == WIDTH - 1)[None, :], x[:, None].to(shifted.dtype), shifted)
    w = tl.load(w_ptr + offs_d[:, None] * stride_w_d + cols[None, :] * stride_w_k, mask=mask,
                other=0.0)
    acc = tl.sum(window.to(tl.float32) * w.to(tl.float32), axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    out = acc * tl.sigmoid(acc) if SILU else acc
    # Every thread has read the old window before any overwrites it (tiles smaller than
    # the thread count are held by several warps).
    tl.debug_barrier()
    tl.store(state_tile + cols[None, :] * stride_s_k, window.to(state_ptr.dtype.element_ty),
             mask=mask)
    tl.store(out_ptr + pid_b * d + offs_d, out.to(out_ptr.dtype.element_ty), mask=mask_d)


def update_block_d(d: int) -> int:
    """Channels per program of the decode step."""
    return min(256, triton.next_power_of_2(d))


def conv_update_triton(x, conv_state, weight, bias, silu):
    b, d = x.shape
    width = weight.shape[1]
    block_d = update_block_d(d)
    out = empty_output((b, d), x.dtype, x.device)
    _conv_update_kernel[(b, triton.cdiv(d, block_d))](
        x, conv_state, weight, bias if bias is not None else weight, out, d,
        *x.stride(), *conv_state.stride(), *weight.stride(),
        HAS_BIAS=bias is not None, SILU=silu, WIDTH=width,
        BLOCK_W=triton.next_power_of_2(width), BLOCK_D=block_d, enable_fp_fusion=True)
    return out
