"""Triton backward kernel of the selective scan, and its launcher.

Chunks are walked from the last processed to the first, with the forward's chunk length
(the saved chunk states are one per chunk). Per chunk the (BLOCK_D, BLOCK_L) tiles of u,
dt, the output gradient and z are loaded once; then, per state s,
1. the chunk's states h_t are recomputed from the saved chunk-start state (the forward scan);
2. the state adjoint is scanned the other way, gh_t = C_t * gy_t + a_{t+1} * gh_{t+1}, with
   q = a_{t+1} * gh_{t+1} flowing in across the chunk boundary (q starts as the last
   state's gradient and ends as the initial state's);
3. gh becomes the input gradients, using a_t * h_{t-1} = h_t - b_t so no shifted state is
   needed. Per-step sums over states (for g_u and g_delta) stay in registers across the
   state loop.
gB and gC sum over channels: each program sums its BLOCK_D channels, then adds them with
relaxed float32 atomics (``red``, no memory barrier). gA is written per (batch row, chunk)
and gD, g_delta_bias per batch row; torch sums those partials.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.common.launch import empty_output, strides
from kernels.common.triton_math import LOG2E

from .triton_common import (LaunchConfig, as_grouped, channel_block, chunk_positions, column,
                            combine_affine, load_dt, load_state_inputs, state_before_chunk)
from .triton_tuning import BACKWARD_KEY, backward_configs, l_bucket, prune_backward, use_autotune


@triton.jit
def combine_adjoint(fa_late, p_late, v_late, fa_early, p_early, v_early):
    """Join the summaries of two adjacent segments for the adjoint scan (later one first).

    A segment [s..e] (in processing order) is summarised by (a_s, a_{s+1}...a_e, V) with
    V = c_s + a_{s+1} c_{s+1} + ... + (a_{s+1}...a_e) c_e, so that
    gh_s = V + (a_{s+1}...a_e) * q where q = a_{e+1} gh_{e+1} flows in from beyond e.
    """
    link = p_early * fa_late
    return fa_early, link * p_late, v_early + link * v_late


@triton.jit
def _vector_order(x, BLOCK_L: tl.constexpr):
    """x (BLOCK_L,) reordered: the first halves (4 steps) of every run of 8, then the
    second halves; run k of 4 is steps 8 * (k % (BLOCK_L // 8)) + 4 * (k // (BLOCK_L // 8))
    + [0, 4)."""
    return tl.reshape(tl.permute(tl.reshape(x, (BLOCK_L // 8, 2, 4)), (1, 0, 2)), (BLOCK_L,))


@triton.jit
def add_row(row_ptr, value, start, l, BLOCK_L: tl.constexpr):
    """row[start + j] += value[j] for j < BLOCK_L (inside [0, l)), with relaxed atomics.

    A thread holds 8 consecutive steps of a tile (a 16-byte bf16 vector) but writes at most
    4 floats (16 bytes) at once: written in _vector_order, each 4-float write is values the
    thread already holds (Triton 3.9 then re-lays nothing out; see docs/benchmarks.md)."""
    if BLOCK_L >= 8:
        m = tl.arange(0, BLOCK_L)
        # _vector_order(arange(BLOCK_L)), computed, so Triton sees runs of 4 contiguous steps.
        j = 8 * ((m // 4) % (BLOCK_L // 8)) + 4 * (m // (BLOCK_L // 2)) + m % 4
        t = start + tl.max_contiguous(tl.multiple_of(j, 4), 4)
        value = _vector_order(value, BLOCK_L)
    else:
        t = start + tl.arange(0, BLOCK_L)
    tl.atomic_add(row_ptr + t, value, mask=(t >= 0) & (t < l), sem="relaxed")


@triton.jit
def _selective_scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, h0_ptr, seq_lens_ptr,
    states_ptr, g_out_ptr, g_last_ptr,
    g_u_ptr, g_delta_ptr, g_z_ptr, g_A_part_ptr, g_B_ptr, g_C_ptr, g_D_ptr, g_bias_ptr,
    g_h0_ptr, adjoint_ptr,
    d, l, n, channels_per_group, l_bucket,
    stride_u_b, stride_u_d, stride_u_l,
    stride_delta_b, stride_delta_d, stride_delta_l,
    stride_A_d, stride_A_n,
    stride_B_b, stride_B_g, stride_B_n, stride_B_l,
    stride_C_b, stride_C_g, stride_C_n, stride_C_l,
    stride_z_b, stride_z_d, stride_z_l,
    stride_h0_b, stride_h0_d, stride_h0_n,
    stride_gB_b, stride_gB_g, stride_gB_n,
    stride_states_slot,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr, HAS_SEQ_LENS: tl.constexpr,
    HAS_G_LAST: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    pid_b, offs_d, mask_d, group, Dv, bias, length = channel_block(
        D_ptr, delta_bias_ptr, seq_lens_ptr, d, l, channels_per_group,
        HAS_D, HAS_DELTA_BIAS, HAS_SEQ_LENS, BLOCK_D)
    n_chunks = tl.cdiv(l, BLOCK_L)
    # The tile column a chunk's recurrence starts on (the adjoint scans the other way).
    if REVERSE:
        START = BLOCK_L - 1
    else:
        START = 0
    j = tl.arange(0, BLOCK_L)[None, :]
    first_step = j == START                                                      # (1, BLOCK_L)
    no_d = tl.zeros((BLOCK_D, 1), tl.int32)
    ones = tl.full((BLOCK_D, BLOCK_L), 1.0, tl.float32)
    g_D = tl.zeros((BLOCK_D,), tl.float32)
    g_bias = tl.zeros((BLOCK_D,), tl.float32)

    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    z_row = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d
    dl_row = (pid_b * d + offs_d[:, None]) * l                       # contiguous (b, d, l) outputs
    A_row = A_ptr + offs_d * stride_A_d
    B_row = B_ptr + pid_b * stride_B_b + group * stride_B_g + no_d               # (BLOCK_D, 1)
    C_row = C_ptr + pid_b * stride_C_b + group * stride_C_g + no_d
    gBC_off = pid_b * stride_gB_b + group * stride_gB_g
    h0_row = h0_ptr + pid_b * stride_h0_b + offs_d * stride_h0_d
    dn_row = (pid_b * d + offs_d) * n                                              # (b, d, n) rows
    # The forward's end state of every chunk, and gA per chunk: (b, d, slots, n).
    states_row = states_ptr + (pid_b * d + offs_d) * (stride_states_slot * n)
    g_A_row = g_A_part_ptr + (pid_b * d + offs_d) * (stride_states_slot * n)
    # gh at each chunk's first step, for the chunk processed next: (b, d, 2, n), in turn.
    adjoint_row = adjoint_ptr + (pid_b * d + offs_d) * (2 * n)
    dt_first_prev = tl.zeros((BLOCK_D,), tl.float32)  # dt at the last chunk's first step

    for i in tl.range(0, n_chunks):
        chunk = n_chunks - 1 - i
        chunk_d = tl.zeros((BLOCK_D,), tl.int32) + chunk         # (tensors, for the masks)
        i_d = tl.zeros((BLOCK_D,), tl.int32) + i
        t_start, t, in_range, live = chunk_positions(chunk, l, length, BLOCK_L, REVERSE)
        mask_dl = mask_d[:, None] & in_range[None, :]
        u = tl.load(u_row + t[None, :] * stride_u_l, mask=mask_dl, other=0.0).to(tl.float32)
        dt, _ = load_dt(delta_row, t, stride_delta_l, mask_dl, live, bias,
                        HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        dtu = dt * u
        g_y = tl.load(g_out_ptr + dl_row + t[None, :], mask=mask_dl, other=0.0).to(tl.float32)
        if HAS_Z:  # out = y * silu(z)
            zt = tl.load(z_row + t[None, :] * stride_z_l, mask=mask_dl, other=0.0).to(tl.float32)
            g_y = g_y * zt * tl.sigmoid(zt)
        g_y = tl.where(live[None, :], g_y, 0.0)
        y = Dv[:, None] * u                                       # y, for the gate's gradient
        dt_first = column(dt, START, BLOCK_L)
        g_hB = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)           # sum_s gh_s * B_s
        g_decay = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)        # sum_s A_s * a_s h_s(t-1) gh_s
        read_adjoint = adjoint_row + ((i + 1) % 2) * n
        write_adjoint = adjoint_row + (i % 2) * n
        for s0 in tl.range(0, n, BLOCK_N, num_stages=NUM_STAGES):
            for k in tl.static_range(BLOCK_N):
                s = s0 + k
                if s < n:  # the last iteration's states may run past n
                    A_s, Bs, Cs = load_state_inputs(
                        A_row, B_row, C_row, s, t, stride_A_n, stride_B_n, stride_B_l,
                        stride_C_n, stride_C_l, mask_d, mask_dl)
                    a_log2 = A_s * LOG2E
                    # The state before the chunk, and the adjoint flowing in from the chunk
                    # processed after it (times a at that chunk's first step).
                    h_start = state_before_chunk(states_row + (chunk - 1) * n + s,
                                                 h0_row + s * stride_h0_n, chunk_d, mask_d, HAS_H0)
                    q = tl.load(read_adjoint + s, mask=mask_d & (i_d > 0), other=0.0)
                    q = q * tl.exp2(dt_first_prev * a_log2)
                    if HAS_G_LAST:
                        q += tl.load(g_last_ptr + dn_row + s, mask=mask_d & (i_d == 0), other=0.0)

                    # 1. States inside the chunk, as in the forward pass.
                    dA = tl.exp2(dt * a_log2[:, None])                   # (BLOCK_D, BLOCK_L)
                    dBu = dtu * Bs
                    _, hs = tl.associative_scan(
                        (dA, tl.where(first_step, dBu + dA * h_start[:, None], dBu)), axis=1,
                        combine_fn=combine_affine, reverse=REVERSE)
                    if HAS_Z:
                        y += hs * Cs

                    # 2. State adjoint, scanned from the chunk's last step with q flowing in.
                    _, p_suffix, v_suffix = tl.associative_scan(
                        (dA, ones, Cs * g_y), axis=1, combine_fn=combine_adjoint,
                        reverse=not REVERSE)
                    gh = v_suffix + p_suffix * q[:, None]
                    tl.store(write_adjoint + s, column(gh, START, BLOCK_L), mask=mask_d)

                    # 3. Input gradients. a_t * h_{t-1} = h_t - b_t, except at the chunk's first
                    # step, where h_{t-1} is h_start: there the difference would leave FMA
                    # rounding (about 1e-8) in place of an exact 0 when h_start = 0, e.g. grad_A
                    # at l = 1 (seen on H200).
                    decayed = gh * tl.where(first_step, dA * h_start[:, None], hs - dBu)
                    g_hB += gh * Bs
                    g_decay += decayed * A_s[:, None]
                    g_A_s = tl.sum(decayed * dt, axis=1)                 # (BLOCK_D,)
                    tl.store(g_A_row + chunk * n + s, g_A_s, mask=mask_d)
                    # gB, gC: summed over the block's channels, added by its first row.
                    g_Bt = tl.sum(gh * dtu, axis=0)                       # (BLOCK_L,)
                    g_Ct = tl.sum(hs * g_y, axis=0)
                    add_row(g_B_ptr + gBC_off + s * stride_gB_n, g_Bt, t_start, l, BLOCK_L)
                    add_row(g_C_ptr + gBC_off + s * stride_gB_n, g_Ct, t_start, l, BLOCK_L)
        # This chunk's adjoints are read by other threads in the next one.
        tl.debug_barrier()
        dt_first_prev = dt_first

        # Per-step gradients; u, delta, z and the output gradient are read again rather
        # than kept live through the state loop.
        u = tl.load(u_row + t[None, :] * stride_u_l, mask=mask_dl, other=0.0).to(tl.float32)
        dt, dt_arg = load_dt(delta_row, t, stride_delta_l, mask_dl, live, bias,
                             HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        g_dt = g_hB * u + g_decay
        g_u = g_hB * dt
        if HAS_D:
            g_u += g_y * Dv[:, None]
            g_D += tl.sum(g_y * u, axis=1)
        if HAS_Z:
            g_out = tl.load(g_out_ptr + dl_row + t[None, :], mask=mask_dl, other=0.0).to(tl.float32)
            zt = tl.load(z_row + t[None, :] * stride_z_l, mask=mask_dl, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zt)
            g_z = g_out * y * sig * (1.0 + zt * (1.0 - sig))
            g_z = tl.where(live[None, :], g_z, 0.0)
            tl.store(g_z_ptr + dl_row + t[None, :], g_z.to(g_z_ptr.dtype.element_ty), mask=mask_dl)
        g_arg = g_dt
        if DELTA_SOFTPLUS:
            g_arg = g_dt * tl.sigmoid(dt_arg)
        g_arg = tl.where(live[None, :], g_arg, 0.0)
        g_bias += tl.sum(g_arg, axis=1)
        tl.store(g_u_ptr + dl_row + t[None, :], g_u.to(g_u_ptr.dtype.element_ty), mask=mask_dl)
        tl.store(g_delta_ptr + dl_row + t[None, :], g_arg.to(g_delta_ptr.dtype.element_ty),
                 mask=mask_dl)

    # The initial state's gradient: the adjoint at the first chunk's first step, times a there.
    last_adjoint = adjoint_row + ((n_chunks - 1) % 2) * n
    for s in tl.range(0, n):
        a_log2 = tl.load(A_row + s * stride_A_n, mask=mask_d, other=0.0).to(tl.float32) * LOG2E
        g_h0 = tl.load(last_adjoint + s, mask=mask_d, other=0.0) * tl.exp2(dt_first_prev * a_log2)
        tl.store(g_h0_ptr + dn_row + s, g_h0, mask=mask_d)
    tl.store(g_D_ptr + pid_b * d + offs_d, g_D, mask=mask_d)
    tl.store(g_bias_ptr + pid_b * d + offs_d, g_bias, mask=mask_d)


_selective_scan_bwd_autotuned = None
if use_autotune():
    _selective_scan_bwd_autotuned = triton.autotune(
        configs=backward_configs(), key=BACKWARD_KEY,
        prune_configs_by={"early_config_prune": prune_backward},
        reset_to_zero=["g_B_ptr", "g_C_ptr"],  # atomics add into them
    )(_selective_scan_bwd_kernel)


def selective_scan_backward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                            initial_state, seq_lens, reverse, chunk_states, g_out, g_last,
                            config: LaunchConfig, autotune: bool = False):
    """Launch the backward kernel; returns gradients in the dtype and shape of each input.

    ``chunk_states`` are the forward's chunk end states and ``config`` the forward's
    (its block_l is their chunk length); with ``autotune`` the other block sizes and
    launch options are tuned for the backward.
    Returns (g_u, g_delta, g_A, g_B, g_C, g_D, g_z, g_delta_bias, g_initial_state); entries
    for absent optional inputs are None, and g_initial_state is float32 (b, d, n).
    """
    b, d, l = u.shape
    n = A.shape[1]
    B4, C4 = as_grouped(B), as_grouped(C)
    g_out = g_out.contiguous()
    g_last = g_last.contiguous() if g_last is not None else None
    n_chunks = config.n_chunks(l)
    slots = chunk_states.shape[2]  # may exceed n_chunks: sized for autotuning's shortest chunk
    g_u = empty_output((b, d, l), u.dtype, u.device)
    g_delta = empty_output((b, d, l), delta.dtype, u.device)
    g_z = empty_output((b, d, l), z.dtype, u.device) if z is not None else None
    # Summed over channels of a group by atomics: these must start at zero.
    g_B = torch.zeros(B4.shape, dtype=torch.float32, device=u.device)
    g_C = torch.zeros(C4.shape, dtype=torch.float32, device=u.device)
    g_A_part = empty_output((b, d, slots, n), torch.float32, u.device)   # per row and chunk
    g_D_rows = empty_output((b, d), torch.float32, u.device)
    g_bias_rows = empty_output((b, d), torch.float32, u.device)
    g_h0 = empty_output((b, d, n), torch.float32, u.device)
    adjoint = torch.empty((b, d, 2, n), dtype=torch.float32, device=u.device)  # scratch
    args = (
        u, delta, A, B4, C4,
        D if D is not None else u, z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        initial_state if initial_state is not None else u,
        seq_lens if seq_lens is not None else u,
        chunk_states, g_out, g_last if g_last is not None else g_h0,
        g_u, g_delta, g_z if g_z is not None else g_u, g_A_part, g_B, g_C,
        g_D_rows, g_bias_rows, g_h0, adjoint,
        d, l, n, d // B4.shape[1], l_bucket(l),
        *u.stride(), *delta.stride(), *A.stride(), *B4.stride(), *C4.stride(),
        *strides(z, 3), *strides(initial_state, 3), *g_B.stride()[:3], slots,
    )
    options = dict(
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_H0=initial_state is not None,
        HAS_SEQ_LENS=seq_lens is not None, HAS_G_LAST=g_last is not None, REVERSE=reverse,
        BLOCK_L=config.block_l,
    )
    if autotune:
        _selective_scan_bwd_autotuned[lambda meta: (b, triton.cdiv(d, meta["BLOCK_D"]))](
            *args, **options, enable_fp_fusion=True)
    else:
        _selective_scan_bwd_kernel[(b, triton.cdiv(d, config.block_d))](
            *args, **options, BLOCK_D=config.block_d, BLOCK_N=config.block_n,
            NUM_STAGES=config.num_stages, num_warps=config.num_warps,
            num_stages=config.num_stages, enable_fp_fusion=True)
    return (
        g_u, g_delta, g_A_part[:, :, :n_chunks].sum((0, 2)).to(A.dtype),
        g_B.reshape(B.shape).to(B.dtype), g_C.reshape(C.shape).to(C.dtype),
        g_D_rows.sum(0).to(D.dtype) if D is not None else None,
        g_z,
        g_bias_rows.sum(0).to(delta_bias.dtype) if delta_bias is not None else None,
        g_h0,
    )
