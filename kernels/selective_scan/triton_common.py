"""Pieces shared by the Triton forward and backward selective-scan kernels.

Both kernels give one program a block of BLOCK_D channels of one batch row, hold the full
state (BLOCK_D, BLOCK_N) in registers, and walk the sequence in chunks of BLOCK_L steps.
Inside a chunk the linear recurrence h_t = a_t * h_{t-1} + b_t is one
``tl.associative_scan`` over a (BLOCK_D, BLOCK_N, BLOCK_L) tile.

Steps are visited in *processing order* j = 0, 1, ...; position t = j normally and
t = l - 1 - j when REVERSE. Steps past a row's length are made the identity (dt = 0, so
a = 1 and b = 0), which is how padding leaves the state alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from kernels.common.launch import INTERPRETED
from kernels.common.triton_math import LOG2E, softplus

MAX_STATE = 256  # largest n a program holds in registers
TILE_ELEMENTS = 4096  # BLOCK_D * BLOCK_N * BLOCK_L per program


@dataclass(frozen=True)
class LaunchConfig:
    block_d: int
    block_n: int
    block_l: int

    def n_chunks(self, l: int) -> int:
        return triton.cdiv(l, self.block_l)


def launch_config(d: int, n: int, l: int, channels_per_group: int,
                  tile_elements: int = TILE_ELEMENTS) -> LaunchConfig:
    """Block sizes for a scan; a d-block never straddles two groups of B and C."""
    block_n = triton.next_power_of_2(n)
    # The interpreter's scan costs per element, so it gets no padding in l; compiled code
    # keeps at least 16 steps so the scan has work for a warp.
    min_l = 1 if INTERPRETED else 16
    block_l = min(64, max(min_l, triton.next_power_of_2(l)))
    block_d = max(1, tile_elements // (block_n * block_l))
    block_d = min(block_d, 64, triton.next_power_of_2(d))
    block_d = 1 << (block_d.bit_length() - 1)  # a power of two
    if channels_per_group != d:
        while channels_per_group % block_d:
            block_d //= 2
    return LaunchConfig(block_d=block_d, block_n=block_n, block_l=block_l)


def as_grouped(x: torch.Tensor) -> torch.Tensor:
    """(b, n, l) -> (b, 1, n, l) view, so kernels only see the grouped layout."""
    return x if x.dim() == 4 else x.unsqueeze(1)


@triton.jit
def combine_affine(a_early, b_early, a_late, b_late):
    """Compose h -> a_early * h + b_early, then h -> a_late * h + b_late."""
    return a_early * a_late, a_late * b_early + b_late


@triton.jit
def chunk_positions(chunk, l, length, BLOCK_L: tl.constexpr, REVERSE: tl.constexpr):
    """Positions t of one chunk's steps, which of them exist (t < l) and which are real."""
    step = chunk * BLOCK_L + tl.arange(0, BLOCK_L)
    in_range = step < l
    if REVERSE:
        t = l - 1 - step
    else:
        t = step
    t = tl.where(in_range, t, 0)
    live = in_range & (t < length)
    return t, in_range, live


@triton.jit
def load_dt(delta_row, t, stride_l, mask_dl, live, bias,
            HAS_DELTA_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr):
    """dt (BLOCK_D, BLOCK_L) and its pre-softplus argument; dt = 0 on steps that are not real."""
    x = tl.load(delta_row + t[None, :] * stride_l, mask=mask_dl, other=0.0).to(tl.float32)
    if HAS_DELTA_BIAS:
        x = x + bias[:, None]
    dt = x
    if DELTA_SOFTPLUS:
        dt = softplus(x)
    dt = tl.where(live[None, :], dt, 0.0)
    return dt, x


@triton.jit
def last_column(x, BLOCK_L: tl.constexpr):
    """x[:, :, BLOCK_L - 1] of a (BLOCK_D, BLOCK_N, BLOCK_L) tile."""
    j = tl.arange(0, BLOCK_L)
    return tl.sum(tl.where((j == BLOCK_L - 1)[None, None, :], x, 0.0), axis=2)


@triton.jit
def first_column(x, BLOCK_L: tl.constexpr):
    """x[:, :, 0] of a (BLOCK_D, BLOCK_N, BLOCK_L) tile."""
    j = tl.arange(0, BLOCK_L)
    return tl.sum(tl.where((j == 0)[None, None, :], x, 0.0), axis=2)


@triton.jit
def channel_block(A_ptr, D_ptr, delta_bias_ptr, seq_lens_ptr, d, l, n, channels_per_group,
                  stride_A_d, stride_A_n, HAS_D: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
                  HAS_SEQ_LENS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch row and block of channels, and their parameters.

    Returns pid_b (int64), offs_d, offs_n, mask_d, mask_dn, group (of B and C), A (float32,
    (BLOCK_D, BLOCK_N)), A * log2(e) (exp(dt A) is computed as exp2), D, delta_bias (zeros
    when absent) and the row's length (l without seq_lens).
    """
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < d
    mask_dn = mask_d[:, None] & (offs_n < n)[None, :]
    group = (pid_d * BLOCK_D) // channels_per_group
    A = tl.load(A_ptr + offs_d[:, None] * stride_A_d + offs_n[None, :] * stride_A_n,
                mask=mask_dn, other=0.0).to(tl.float32)
    Dv = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_DELTA_BIAS:
        bias = tl.load(delta_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    length = l
    if HAS_SEQ_LENS:
        length = tl.load(seq_lens_ptr + pid_b).to(tl.int32)
    return pid_b, offs_d, offs_n, mask_d, mask_dn, group, A, A * LOG2E, Dv, bias, length
