"""Triton forward kernel of the selective scan, and its launcher.

Per chunk of BLOCK_L steps the program loads u, delta (and z) once as (BLOCK_D, BLOCK_L)
tiles, then loops over the states: per state s one exp2 per step, a 1-D scan of the
(exp(dt A_s), dt u B_s) pairs along time (the previous chunk's end state folded into the
first step), and y += C_s * h_s. Each chunk's end state crosses to the next chunk through
``states`` (b, d, slots, n) float32 (see triton_common).

Saved for backward (when a gradient is needed): the state at the end of every chunk,
``chunk_states`` (b, d, n_chunks, n) float32 (then the slots are one per chunk; else two,
used in turn). The backward recomputes the states inside each chunk from the previous
chunk's end; no (b, d, l, n) tensor is ever stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.common.launch import empty_output, strides
from kernels.common.triton_math import LOG2E

from .triton_common import (LaunchConfig, as_grouped, channel_block, chunk_positions,
                            combine_affine, load_dt, load_state_inputs, state_before_chunk)
from .triton_tuning import FORWARD_KEY, forward_configs, l_bucket, prune_forward, use_autotune


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, h0_ptr, seq_lens_ptr,
    out_ptr, last_state_ptr, states_ptr,
    d, l, n, channels_per_group, l_bucket,
    stride_u_b, stride_u_d, stride_u_l,
    stride_delta_b, stride_delta_d, stride_delta_l,
    stride_A_d, stride_A_n,
    stride_B_b, stride_B_g, stride_B_n, stride_B_l,
    stride_C_b, stride_C_g, stride_C_n, stride_C_l,
    stride_z_b, stride_z_d, stride_z_l,
    stride_h0_b, stride_h0_d, stride_h0_n,
    stride_states_slot,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
    DELTA_SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr, HAS_SEQ_LENS: tl.constexpr,
    REVERSE: tl.constexpr, SAVE_CHUNK_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    pid_b, offs_d, mask_d, group, Dv, bias, length = channel_block(
        D_ptr, delta_bias_ptr, seq_lens_ptr, d, l, channels_per_group,
        HAS_D, HAS_DELTA_BIAS, HAS_SEQ_LENS, BLOCK_D)
    n_chunks = tl.cdiv(l, BLOCK_L)
    # The tile columns a chunk's recurrence starts and ends on.
    if REVERSE:
        START = BLOCK_L - 1
        END = 0
    else:
        START = 0
        END = BLOCK_L - 1
    j = tl.arange(0, BLOCK_L)[None, :]
    no_l = tl.zeros((1, BLOCK_L), tl.int32)          # broadcasts a (BLOCK_D, 1) pointer to a tile

    u_row = u_ptr + pid_b * stride_u_b + offs_d[:, None] * stride_u_d          # (BLOCK_D, 1)
    delta_row = delta_ptr + pid_b * stride_delta_b + offs_d[:, None] * stride_delta_d
    z_row = z_ptr + pid_b * stride_z_b + offs_d[:, None] * stride_z_d
    out_row = out_ptr + (pid_b * d + offs_d[:, None]) * l                        # contiguous
    A_row = A_ptr + offs_d * stride_A_d                                          # (BLOCK_D,)
    no_d = tl.zeros((BLOCK_D, 1), tl.int32)          # broadcasts B and C rows over channels
    B_row = B_ptr + pid_b * stride_B_b + group * stride_B_g + no_d             # (BLOCK_D, 1)
    C_row = C_ptr + pid_b * stride_C_b + group * stride_C_g + no_d
    h0_row = h0_ptr + pid_b * stride_h0_b + offs_d * stride_h0_d
    # states (b, d, slots, n): each chunk's end state, slot c (or c % 2 when not saved).
    states_row = states_ptr + (pid_b * d + offs_d) * (stride_states_slot * n)

    for chunk in tl.range(0, n_chunks):
        _, t, in_range, live = chunk_positions(chunk, l, length, BLOCK_L, REVERSE)
        mask_dl = mask_d[:, None] & in_range[None, :]
        u = tl.load(u_row + t[None, :] * stride_u_l, mask=mask_dl, other=0.0).to(tl.float32)
        dt, _ = load_dt(delta_row, t, stride_delta_l, mask_dl, live, bias,
                        HAS_DELTA_BIAS, DELTA_SOFTPLUS)
        dtu = dt * u
        y = Dv[:, None] * u                                      # the D skip; 0 without D
        chunk_d = tl.zeros((BLOCK_D,), tl.int32) + chunk         # (tensors, for the masks)
        if SAVE_CHUNK_STATES:
            read_slot = states_row + (chunk - 1) * n
            write_slot = states_row + chunk * n
        else:
            read_slot = states_row + ((chunk + 1) % 2) * n
            write_slot = states_row + (chunk % 2) * n
        for s0 in tl.range(0, n, BLOCK_N, num_stages=NUM_STAGES):
            for i in tl.static_range(BLOCK_N):
                s = s0 + i
                if s < n:  # the last iteration's states may run past n
                    A_s, Bs, Cs = load_state_inputs(
                        A_row, B_row, C_row, s, t, stride_A_n, stride_B_n, stride_B_l,
                        stride_C_n, stride_C_l, mask_d, mask_dl)
                    a_log2 = A_s * LOG2E
                    h_prev = state_before_chunk(read_slot + s, h0_row + s * stride_h0_n, chunk_d,
                                                mask_d, HAS_H0)

                    dA = tl.exp2(dt * a_log2[:, None])               # (BLOCK_D, BLOCK_L)
                    dBu = dtu * Bs
                    # h_prev enters at the chunk's first step, so the scan yields h_t itself.
                    dBu = tl.where(j == START, dBu + dA * h_prev[:, None], dBu)
                    _, hs = tl.associative_scan((dA, dBu), axis=1, combine_fn=combine_affine,
                                                reverse=REVERSE)
                    y += hs * Cs
                    # The end state, stored from the tile's own layout (one lane writes).
                    tl.store(write_slot[:, None] + s + no_l, hs, mask=mask_d[:, None] & (j == END))
        # This chunk's end states are read by other threads in the next one.
        tl.debug_barrier()
        if HAS_Z:
            zt = tl.load(z_row + t[None, :] * stride_z_l, mask=mask_dl, other=0.0).to(tl.float32)
            y = y * zt * tl.sigmoid(zt)
        y = tl.where(live[None, :], y, 0.0)
        tl.store(out_row + t[None, :], y.to(out_ptr.dtype.element_ty), mask=mask_dl)

    # The last chunk's end states are the last state.
    if SAVE_CHUNK_STATES:
        last_slot = states_row + (n_chunks - 1) * n
    else:
        last_slot = states_row + ((n_chunks - 1) % 2) * n
    for s in tl.range(0, n):
        h_last = tl.load(last_slot + s, mask=mask_d, other=0.0)
        tl.store(last_state_ptr + (pid_b * d + offs_d) * n + s, h_last, mask=mask_d)


_selective_scan_fwd_autotuned = None
if use_autotune():
    _selective_scan_fwd_autotuned = triton.autotune(
        configs=forward_configs(), key=FORWARD_KEY,
        prune_configs_by={"early_config_prune": prune_forward},
    )(_selective_scan_fwd_kernel)


def selective_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                           initial_state, seq_lens, reverse, config: LaunchConfig | None,
                           save_chunk_states: bool):
    """Launch the forward kernel; ``config`` None autotunes (compiled Triton only).

    Returns out (b, d, l) in u's dtype, last_state (b, d, n) float32, chunk_states
    (b, d, n_chunks, n) float32 when ``save_chunk_states`` (else None), and the config that
    ran (the backward needs its block_l).
    """
    b, d, l = u.shape
    n = A.shape[1]
    B, C = as_grouped(B), as_grouped(C)
    # The chunk length is chosen by autotuning when there is no config: size the saved
    # states for the shortest candidate chunk, the most chunks any candidate can need.
    min_block_l = config.block_l if config is not None else min(
        c.kwargs["BLOCK_L"] for c in forward_configs())
    max_chunks = triton.cdiv(l, min_block_l)
    out = empty_output((b, d, l), u.dtype, u.device)
    last_state = empty_output((b, d, n), torch.float32, u.device)
    # One slot per chunk when saved for the backward, else two used in turn (scratch).
    slots = max_chunks if save_chunk_states else 2
    states = empty_output((b, d, slots, n), torch.float32, u.device)
    args = (
        u, delta, A, B, C,
        D if D is not None else u, z if z is not None else u,
        delta_bias if delta_bias is not None else u,
        initial_state if initial_state is not None else u,
        seq_lens if seq_lens is not None else u,
        out, last_state, states,
        d, l, n, d // B.shape[1], l_bucket(l),
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
        *strides(z, 3), *strides(initial_state, 3), slots,
    )
    options = dict(
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        DELTA_SOFTPLUS=delta_softplus, HAS_H0=initial_state is not None,
        HAS_SEQ_LENS=seq_lens is not None, REVERSE=reverse,
        SAVE_CHUNK_STATES=save_chunk_states,
    )
    if config is None:
        kernel = _selective_scan_fwd_autotuned
        kernel[lambda meta: (b, triton.cdiv(d, meta["BLOCK_D"]))](*args, **options,
                                                                   enable_fp_fusion=True)
        best = kernel.best_config
        config = LaunchConfig(block_d=best.kwargs["BLOCK_D"], block_n=best.kwargs["BLOCK_N"],
                              block_l=best.kwargs["BLOCK_L"], num_warps=best.num_warps,
                              num_stages=best.kwargs["NUM_STAGES"])
    else:
        _selective_scan_fwd_kernel[(b, triton.cdiv(d, config.block_d))](
            *args, **options, BLOCK_D=config.block_d, BLOCK_N=config.block_n,
            BLOCK_L=config.block_l, NUM_STAGES=config.num_stages,
            num_warps=config.num_warps, num_stages=config.num_stages, enable_fp_fusion=True)
    return out, last_state, states if save_chunk_states else None, config
