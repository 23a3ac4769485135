"""Triton kernel of ``selective_state_update`` (inference-only)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.common.launch import empty_output
from kernels.common.triton_math import LOG2E, softplus


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, out_ptr,
    d, n, channels_per_group,
    stride_state_b, stride_state_d, stride_state_n, stride_x_b, stride_x_d,
    stride_dt_b, stride_dt_d, stride_A_d, stride_A_n, stride_B_b, stride_B_g, stride_B_n,
    stride_C_b, stride_C_g, stride_C_n, stride_z_b, stride_z_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
    DT_SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < d
    mask_dn = mask_d[:, None] & (offs_n < n)[None, :]
    group = offs_d // channels_per_group                                    # (BLOCK_D,)

    state_ptrs = (state_ptr + pid_b * stride_state_b + offs_d[:, None] * stride_state_d
                  + offs_n[None, :] * stride_state_n)
    h = tl.load(state_ptrs, mask=mask_dn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + pid_b * stride_x_b + offs_d * stride_x_d, mask=mask_d, other=0.0)
    x = x.to(tl.float32)
    dt = tl.load(dt_ptr + pid_b * stride_dt_b + offs_d * stride_dt_d, mask=mask_d, other=0.0)
    dt = dt.to(tl.float32)
    if HAS_DT_BIAS:
        dt += tl.load(dt_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if DT_SOFTPLUS:
        dt = softplus(dt)
    A = tl.load(A_ptr + offs_d[:, None] * stride_A_d + offs_n[None, :] * stride_A_n,
                mask=mask_dn, other=0.0).to(tl.float32)
    # B and C per channel: each channel reads its own group's row.
    B = tl.load(B_ptr + pid_b * stride_B_b + group[:, None] * stride_B_g
                + offs_n[None, :] * stride_B_n, mask=mask_dn, other=0.0).to(tl.float32)
    C = tl.load(C_ptr + pid_b * stride_C_b + group[:, None] * stride_C_g
                + offs_n[None, :] * stride_C_n, mask=mask_dn, other=0.0).to(tl.float32)

    h = tl.exp2(dt[:, None] * A * LOG2E) * h + (dt * x)[:, None] * B
    # Every thread has read the old state before any overwrites it (tiles smaller than the
    # thread count are held by several warps).
    tl.debug_barrier()
    tl.store(state_ptrs, h.to(state_ptr.dtype.element_ty), mask=mask_dn)
    y = tl.sum(h * C, axis=1)
    if HAS_D:
        y += tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) * x
    if HAS_Z:
        zt = tl.load(z_ptr + pid_b * stride_z_b + offs_d * stride_z_d, mask=mask_d, other=0.0)
        zt = zt.to(tl.float32)
        y = y * zt * tl.sigmoid(zt)
    tl.store(out_ptr + pid_b * d + offs_d, y.to(out_ptr.dtype.element_ty), mask=mask_d)


def step_blocks(d: int, n: int) -> tuple[int, int]:
    """(block_d, block_n) of a launch: the whole state padded to a power of two, and as
    many channels as fit a 4096-element tile (at most 64)."""
    block_n = triton.next_power_of_2(n)
    return max(1, min(triton.next_power_of_2(d), 4096 // block_n, 64)), block_n


def state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    b, d, n = state.shape
    B = B if B.dim() == 3 else B.unsqueeze(1)                     # (b, g, n)
    C = C if C.dim() == 3 else C.unsqueeze(1)
    out = empty_output((b, d), x.dtype, x.device)
    block_d, block_n = step_blocks(d, n)
    zero2 = (0, 0)
    _state_update_kernel[(b, triton.cdiv(d, block_d))](
        state, x, dt, A, B, C, D if D is not None else x, z if z is not None else x,
        dt_bias if dt_bias is not None else x, out,
        d, n, d // B.shape[1],
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *B.stride(), *C.stride(),
        *(z.stride() if z is not None else zero2),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DT_BIAS=dt_bias is not None,
        DT_SOFTPLUS=dt_softplus, BLOCK_D=block_d, BLOCK_N=block_n, enable_fp_fusion=True,
    )
    return out
