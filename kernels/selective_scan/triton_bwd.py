"""Triton backward kernel of the selective scan, and its launcher.

Per chunk, walked from the last processed to the first, the kernel
1. recomputes the chunk's states h_t from the saved chunk-start state (the forward scan);
2. scans the state adjoint backward, gh_t = C_t * gy_t + a_{t+1} * gh_{t+1}, carrying
   q = a_{t+1} * gh_{t+1} across chunk boundaries (q starts as the last state's gradient);
3. turns gh into the input gradients, using a_t * h_{t-1} = h_t - b_t so no shifted
   state is needed.
gB and gC sum over channels and are accumulated across d-blocks with float32 atomics;
gA, gD and g_delta_bias are summed per (batch row, channel) and reduced over b by torch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.common.launch import empty_output, strides

from .triton_common import (LaunchConfig, as_grouped, channel_block, chunk_positions,
                            combine_affine, first_column, load_dt)


@triton.jit
def combine_adjoint(fa_late, p_late, v_late, fa_early, p_early, v_early):
    """Join the summaries of two adjacent segments for a reverse scan (later one first).

    A segment [s..e] is summarised by (a_s, a_{s+1}...a_e, V) with
    V = c_s + a_{s+1} c_{s+1} + ... + (a_{s+1}...a_e) c_e, so that
    gh_s = V + (a_{s+1}...a_e) * q where q = a_{e+1} gh_{e+1} flows in from the right.
    """
    link = p_early * fa_late
    return fa_early, link * p_late, v_early + link * v_late


@triton.jit
def _selective_scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, seq_lens_ptr,
    chunk_states_ptr, g_out_ptr, g_last_ptr,
    g_u_ptr, g_delta_ptr, g_z_ptr, g_A_ptr, g_B_ptr, g_C_ptr, g_D_ptr, g_bias_ptr, g_h0_ptr,
    d, l, n, channels_per_group, n_chunks,
    stride_u_b, stride_u_d, stride_u_l,
    stride_delta_b, stride_delta_d, stride_delta_l,
    stride_A_d, stride_A_n,
    stride_B_b, stride_B_g, stride_B_n, stride_B_l,
    stride_C_b, stride_C_g, stride_C_n, stride_C_l,
    stride_z_b, stride_z_d, stride_z_l,
    stride_gB_b, stride_gB_g, stride_gB_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_SEQ_LENS: tl.constexpr, HAS_G_LAST: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    pid_b, offs_d, offs_n, mask_d, mask_dn, group, A, A_log2, Dv, bias, length = channel_block(
        A_ptr, D_ptr, delta_bias_ptr, seq_lens_ptr, d, l, n, channels_per_group,
        stride_A_d, stride_A_n, HAS_D, HAS_DELTA_BIAS, HAS_SEQ_LENS, BLOCK_D, BLOCK_N)
    mask_n = offs_n < n
    dn_offsets = (pid_b * d + offs_d[:, None]) * n + offs_n[None, :]             # (b, d, n) tensors
    q = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    if HAS_G_LAST:
        q = tl.load(g_last_ptr + dn_offsets, mask=mask_dn, other=0.0).to(tl.float32)
    g_A = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    g_D = tl.zeros((BLOCK_D,), tl.float32)
    g_bias = tl.zeros((BLOCK_D,), tl.float32)

    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    z_row = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d
    dl_row = (pid_b * d + offs_d[:, None]) * l                                    # contiguous (b, d, l)
    B_row = B_ptr + pid_b * stride_B_b + group * stride_B_g + offs_n[:, None] * stride_B_n
    C_row = C_ptr + pid_b * stride_C_b + group * stride_C_g + offs_n[:, None] * stride_C_n
    gBC_row = pid_b * stride_gB_b + group * stride_gB_g + offs_n[:, None] * stride_gB_n
    states_row = chunk_states_ptr + ((pid_b * d + offs_d[:, None]) * n_chunks) * n + offs_n[None, :]

    for i in range(0, n_chunks):
        chunk = n_chunks - 1 - i
        t, in_range, live = chunk_positions(chunk, l, length, BLOCK_L, REVERSE)
        mask_dl = mask_d[:, None] & in_range[None, :]
        mask_nl = mask_n[:, None] & in_range[None, :]
        u = tl.load(u_row + t[None, :] * stride_u_l, mask=mask_dl, other=0.0).to(tl.float32)
        dt, dt_arg = load_dt(delta_row, t, stride_delta_l, mask_dl, live, bias,
                             HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        Bt = tl.load(B_row + t[None, :] * stride_B_l, mask=mask_nl, other=0.0).to(tl.float32)
        Ct = tl.load(C_row + t[None, :] * stride_C_l, mask=mask_nl, other=0.0).to(tl.float32)
        g_out = tl.load(g_out_ptr + dl_row + t[None, :], mask=mask_dl, other=0.0).to(tl.float32)

        # 1. States inside the chunk, as in the forward pass.
        h_start = tl.load(states_row + chunk * n, mask=mask_dn, other=0.0)
        dA = tl.exp2(dt[:, None, :] * A_log2[:, :, None])        # (BLOCK_D, BLOCK_N, BLOCK_L)
        dBu = (dt * u)[:, None, :] * Bt[None, :, :]
        a_cum, h_part = tl.associative_scan((dA, dBu), axis=2, combine_fn=combine_affine)
        hs = a_cum * h_start[:, :, None] + h_part

        # Output gate: out = y * silu(z).
        g_y = g_out
        if HAS_Z:
            zt = tl.load(z_row + t[None, :] * stride_z_l, mask=mask_dl, other=0.0).to(tl.float32)
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            sig = tl.sigmoid(zt)
            g_z = g_out * y * sig * (1.0 + zt * (1.0 - sig))
            g_z = tl.where(live[None, :], g_z, 0.0)
            tl.store(g_z_ptr + dl_row + t[None, :], g_z.to(g_z_ptr.dtype.element_ty), mask=mask_dl)
            g_y = g_out * zt * sig
        g_y = tl.where(live[None, :], g_y, 0.0)

        # 2. State adjoint, scanned from the chunk's end with q flowing in.
        ones = tl.full((BLOCK_D, BLOCK_N, BLOCK_L), 1.0, tl.float32)
        c = Ct[None, :, :] * g_y[:, None, :]
        _, p_suffix, v_suffix = tl.associative_scan((dA, ones, c), axis=2,
                                                    combine_fn=combine_adjoint, reverse=True)
        gh = v_suffix + p_suffix * q[:, :, None]
        q = first_column(dA * gh, BLOCK_L)

        # 3. Input gradients. a_t * h_{t-1} = h_t - b_t, except at the chunk's first step,
        # where h_{t-1} is h_start: there the difference would leave FMA rounding (about
        # 1e-8) in place of an exact 0 when h_start = 0, e.g. grad_A at l = 1 (seen on H200).
        first_step = (tl.arange(0, BLOCK_L) == 0)[None, None, :]
        decayed = gh * tl.where(first_step, dA * h_start[:, :, None], hs - dBu)
        gh_B = tl.sum(gh * Bt[None, :, :], axis=1)               # (BLOCK_D, BLOCK_L)
        g_dt = gh_B * u + tl.sum(decayed * A[:, :, None], axis=1)
        g_u = gh_B * dt
        if HAS_D:
            g_u += g_y * Dv[:, None]
            g_D += tl.sum(g_y * u, axis=1)
        g_A += tl.sum(decayed * dt[:, None, :], axis=2)
        g_arg = g_dt
        if DELTA_SOFTPLUS:
            g_arg = g_dt * tl.sigmoid(dt_arg)
        g_arg = tl.where(live[None, :], g_arg, 0.0)
        g_bias += tl.sum(g_arg, axis=1)
        tl.store(g_u_ptr + dl_row + t[None, :], g_u.to(g_u_ptr.dtype.element_ty), mask=mask_dl)
        tl.store(g_delta_ptr + dl_row + t[None, :], g_arg.to(g_delta_ptr.dtype.element_ty),
                 mask=mask_dl)
        g_Bt = tl.sum(gh * (dt * u)[:, None, :], axis=0)         # (BLOCK_N, BLOCK_L)
        g_Ct = tl.sum(hs * g_y[:, None, :], axis=0)
        tl.atomic_add(g_B_ptr + gBC_row + t[None, :], g_Bt, mask=mask_nl)
        tl.atomic_add(g_C_ptr + gBC_row + t[None, :], g_Ct, mask=mask_nl)

    tl.store(g_A_ptr + dn_offsets, g_A, mask=mask_dn)
    tl.store(g_h0_ptr + dn_offsets, q, mask=mask_dn)
    tl.store(g_D_ptr + pid_b * d + offs_d, g_D, mask=mask_d)
    tl.store(g_bias_ptr + pid_b * d + offs_d, g_bias, mask=mask_d)


def selective_scan_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                            seq_lens, reverse, chunk_states, g_out, g_last,
                            config: LaunchConfig):
    """Launch the backward kernel; returns gradients in the dtype and shape of each input.

    Returns (g_u, g_delta, g_A, g_B, g_C, g_D, g_z, g_delta_bias, g_initial_state); entries
    for absent optional inputs are None, and g_initial_state is float32 (b, d, n).
    """
    b, d, l = u.shape
    n = A.shape[1]
    B4, C4 = as_grouped(B), as_grouped(C)
    g_out = g_out.contiguous()
    g_last = g_last.contiguous() if g_last is not None else None
    g_u = empty_output((b, d, l), u.dtype, u.device)
    g_delta = empty_output((b, d, l), delta.dtype, u.device)
    g_z = empty_output((b, d, l), z.dtype, u.device) if z is not None else None
    # Summed over channels of a group by atomics: these must start at zero.
    g_B = torch.zeros(B4.shape, dtype=torch.float32, device=u.device)
    g_C = torch.zeros(C4.shape, dtype=torch.float32, device=u.device)
    g_A_rows = empty_output((b, d, n), torch.float32, u.device)
    g_D_rows = empty_output((b, d), torch.float32, u.device)
    g_bias_rows = empty_output((b, d), torch.float32, u.device)
    g_h0 = empty_output((b, d, n), torch.float32, u.device)
    grid = (b, triton.cdiv(d, config.block_d))
    _selective_scan_bwd_kernel[grid](
        u, delta, A, B4, C4,
        D if D is not None else u, z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        seq_lens if seq_lens is not None else u,
        chunk_states, g_out, g_last if g_last is not None else g_h0,
        g_u, g_delta, g_z if g_z is not None else g_u, g_A_rows, g_B, g_C,
        g_D_rows, g_bias_rows, g_h0,
        d, l, n, d // B4.shape[1], config.n_chunks(l),
        *u.stride(), *delta.stride(), *A.stride(), *B4.stride(), *C4.stride(),
        *strides(z, 3), g_B.stride(0), g_B.stride(1), g_B.stride(2),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_SEQ_LENS=seq_lens is not None,
        HAS_G_LAST=g_last is not None, REVERSE=reverse,
        BLOCK_D=config.block_d, BLOCK_N=config.block_n, BLOCK_L=config.block_l,
    )
    return (
        g_u, g_delta, g_A_rows.sum(0).to(A.dtype),
        g_B.reshape(B.shape).to(B.dtype), g_C.reshape(C.shape).to(C.dtype),
        g_D_rows.sum(0).to(D.dtype) if D is not None else None,
        g_z,
        g_bias_rows.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
        g_h0,
    )
