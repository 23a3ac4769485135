"""Triton forward kernel of the selective scan, and its launcher.

Saved for backward (when a gradient is needed): the state at the start of every chunk,
``chunk_states`` (b, d, n_chunks, n) float32, i.e. one state per BLOCK_L steps. The backward
recomputes the states inside each chunk from it; no (b, d, l, n) tensor is ever stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.common.launch import empty_output, strides

from .triton_common import (LaunchConfig, as_grouped, channel_block, chunk_positions,
                            combine_affine, last_column, load_dt)


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, h0_ptr, seq_lens_ptr,
    out_ptr, last_state_ptr, chunk_states_ptr,
    d, l, n, channels_per_group, n_chunks,
    stride_u_b, stride_u_d, stride_u_l,
    stride_delta_b, stride_delta_d, stride_delta_l,
    stride_A_d, stride_A_n,
    stride_B_b, stride_B_g, stride_B_n, stride_B_l,
    stride_C_b, stride_C_g, stride_C_n, stride_C_l,
    stride_z_b, stride_z_d, stride_z_l,
    stride_h0_b, stride_h0_d, stride_h0_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr, HAS_SEQ_LENS: tl.constexpr,
    REVERSE: tl.constexpr, SAVE_CHUNK_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b, offs_d, offs_n, mask_d, mask_dn, group, A, A_log2, Dv, bias, length = channel_block(
        A_ptr, D_ptr, delta_bias_ptr, seq_lens_ptr, d, l, n, channels_per_group,
        stride_A_d, stride_A_n, HAS_D, HAS_DELTA_BIAS, HAS_SEQ_LENS, BLOCK_D, BLOCK_N)
    mask_n = offs_n < n
    h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * stride_h0_b + offs_d[:, None] * stride_h0_d
                    + offs_n[None, :] * stride_h0_n, mask=mask_dn, other=0.0).to(tl.float32)

    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d          # (BLOCK_D, 1)
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    z_row = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d
    out_row = out_ptr + (pid_b * d + offs_d[:, None]) * l                        # contiguous
    B_row = B_ptr + pid_b * stride_B_b + group * stride_B_g + offs_n[:, None] * stride_B_n
    C_row = C_ptr + pid_b * stride_C_b + group * stride_C_g + offs_n[:, None] * stride_C_n
    states_row = chunk_states_ptr + ((pid_b * d + offs_d[:, None]) * n_chunks) * n + offs_n[None, :]

    for chunk in range(0, n_chunks):
        if SAVE_CHUNK_STATES:
            tl.store(states_row + chunk * n, h, mask=mask_dn)
        t, in_range, live = chunk_positions(chunk, l, length, BLOCK_L, REVERSE)
        mask_dl = mask_d[:, None] & in_range[None, :]
        mask_nl = mask_n[:, None] & in_range[None, :]
        u = tl.load(u_row + t[None, :] * stride_u_l, mask=mask_dl, other=0.0).to(tl.float32)
        dt, _ = load_dt(delta_row, t, stride_delta_l, mask_dl, live, bias,
                        HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        Bt = tl.load(B_row + t[None, :] * stride_B_l, mask=mask_nl, other=0.0).to(tl.float32)
        Ct = tl.load(C_row + t[None, :] * stride_C_l, mask=mask_nl, other=0.0).to(tl.float32)

        dA = tl.exp2(dt[:, None, :] * A_log2[:, :, None])        # (BLOCK_D, BLOCK_N, BLOCK_L)
        dBu = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, h_part = tl.associative_scan((dA, dBu), axis=2, combine_fn=combine_affine)
        hs = a_cum * h[:, :, None] + h_part                      # h_t for every step of the chunk
        y = tl.sum(hs * Ct[None, :, :], axis=1)                  # (BLOCK_D, BLOCK_L)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zt = tl.load(z_row + t[None, :] * stride_z_l, mask=mask_dl, other=0.0).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        y = tl.where(live[None, :], y, 0.0)
        tl.store(out_row + t[None, :], y.to(out_ptr.dtype.element_ty), mask=mask_dl)
        h = last_column(hs, BLOCK_L)

    tl.store(last_state_ptr + (pid_b * d + offs_d[:, None]) * n + offs_n[None, :], h, mask=mask_dn)


def selective_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                           initial_state, seq_lens, reverse, config: LaunchConfig,
                           save_chunk_states: bool):
    """Launch the forward kernel.

    Returns out (b, d, l) in u's dtype, last_state (b, d, n) float32, and chunk_states
    (b, d, n_chunks, n) float32 when ``save_chunk_states`` (else None).
    """
    b, d, l = u.shape
    n = A.shape[1]
    B, C = as_grouped(B), as_grouped(C)
    n_chunks = config.n_chunks(l)
    out = empty_output((b, d, l), u.dtype, u.device)
    last_state = empty_output((b, d, n), torch.float32, u.device)
    chunk_states = (empty_output((b, d, n_chunks, n), torch.float32, u.device)
                    if save_chunk_states else None)
    grid = (b, triton.cdiv(d, config.block_d))
    _selective_scan_fwd_kernel[grid](
        u, delta, A, B, C,
        D if D is not None else u, z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        initial_state if initial_state is not None else u,
        seq_lens if seq_lens is not None else u,
        out, last_state, chunk_states if chunk_states is not None else last_state,
        d, l, n, d // B.shape[1], n_chunks,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
        *strides(z, 3), *strides(initial_state, 3),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_H0=initial_state is not None,
        HAS_SEQ_LENS=seq_lens is not None, REVERSE=reverse,
        SAVE_CHUNK_STATES=save_chunk_states,
        BLOCK_D=config.block_d, BLOCK_N=config.block_n, BLOCK_L=config.block_l,
    )
    return out, last_state, chunk_states
