"""Pieces shared by the Triton forward and backward selective-scan kernels.

Layout. A program owns one batch row and BLOCK_D channels and walks the sequence in chunks
of BLOCK_L steps. Its tiles are time-major, (BLOCK_D, BLOCK_L) with time along the last,
contiguous axis, so every thread holds several consecutive steps of a channel, loads them
as 16-byte vectors and scans them in registers before any shuffle. Inside a chunk a dynamic
loop visits the n states, BLOCK_N of them per iteration (unrolled); per state the
recurrence h_t = a_t * h_{t-1} + b_t is one 1-D ``tl.associative_scan`` along time. No
register holds all n states, so n only changes the trip count (n up to MAX_STATE).

Carries. A state's value at the end of a chunk (the carry) is read at the start of the
next chunk, by other threads: it crosses through a small float32 buffer in global memory
(L1/L2 resident) with two slots used in turn, and one ``tl.debug_barrier`` per chunk orders
the writes of one chunk before the reads of the next. (Slot c % 2 is read in chunk c and
slot (c + 1) % 2 written, so a slot is never written while another thread may still read it.)

Direction. Tiles are always loaded in memory order, so loads stay contiguous. ``REVERSE``
runs the chunks from the end of the sequence and scans each tile with ``reverse=True``.
Steps are identities (dt = 0, so a = 1 and b = 0) where the position is outside [0, l) or
past a row's length: that is how padding leaves the state alone.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from kernels.common.launch import INTERPRETED
from kernels.common.triton_math import softplus

MAX_STATE = 256  # largest n the Triton path takes (a trip count; kept as documented bound)
# The interpreter runs Python per op, chunk, state and program, whatever the tile size: its
# default takes up to 16 channels per program and chunks of 128 steps, so the correctness
# grid (l up to 373) still crosses chunk boundaries.
INTERPRETER_MAX_BLOCK_L = 128
INTERPRETER_MAX_BLOCK_D = 16


@dataclass(frozen=True)
class LaunchConfig:
    """Block sizes and launch options of one scan.

    block_d: channels per program. block_n: states per iteration of the state loop
    (unrolled; states past n are masked). block_l: chunk length, the steps one scan covers;
    the backward must use the forward's, as the saved chunk states are one per chunk.
    num_warps: warps per program. num_stages: software-pipelining depth of the state loop.
    """

    block_d: int
    block_n: int
    block_l: int
    num_warps: int = 4
    num_stages: int = 1

    def n_chunks(self, l: int) -> int:
        return triton.cdiv(l, self.block_l)

    @property
    def label(self) -> str:
        return (f"D{self.block_d}-N{self.block_n}-L{self.block_l}-w{self.num_warps}"
                f"-s{self.num_stages}")


# The compiled defaults on Hopper (H100/H200), chosen from the static sm_90a profile
# (experiments/kernel_profile.py): 8 consecutive steps per thread (a 16-byte bf16 vector),
# chunks of 128 steps (16 lanes). The backward keeps its two channels in one warp, so the
# sums over channels (gB, gC) need one shuffle and no shared memory.
COMPILED_FORWARD = LaunchConfig(block_d=4, block_n=1, block_l=128, num_warps=2, num_stages=1)
COMPILED_BACKWARD = LaunchConfig(block_d=2, block_n=1, block_l=128, num_warps=1, num_stages=1)


def fit_block_d(block_d: int, d: int, channels_per_group: int) -> int:
    """The largest power of two <= block_d that fits d and never straddles two groups."""
    block_d = min(block_d, triton.next_power_of_2(d))
    block_d = 1 << (block_d.bit_length() - 1)
    if channels_per_group != d:
        while channels_per_group % block_d:
            block_d //= 2
    return block_d


def backward_at(config: LaunchConfig, block_l: int) -> LaunchConfig:
    """A backward config (written for 128-step chunks) at the forward's chunk length, its
    warps scaled with the chunk so each thread keeps the same number of steps."""
    warps = max(1, min(8, config.num_warps * block_l // 128))
    return replace(config, block_l=block_l, num_warps=warps)


def launch_config(d: int, n: int, l: int, channels_per_group: int,
                  backward: bool = False, block_l: int | None = None) -> LaunchConfig:
    """The config used without autotuning: the interpreter's, or the compiled default
    shrunk to the problem (a chunk never much longer than the sequence). The backward's
    takes the forward's ``block_l``."""
    if INTERPRETED:
        block_l = block_l or min(INTERPRETER_MAX_BLOCK_L, triton.next_power_of_2(l))
        return LaunchConfig(block_d=fit_block_d(INTERPRETER_MAX_BLOCK_D, d, channels_per_group),
                            block_n=1, block_l=block_l, num_warps=1)
    base = COMPILED_BACKWARD if backward else COMPILED_FORWARD
    base = replace(base, block_d=fit_block_d(base.block_d, d, channels_per_group))
    if backward:
        return backward_at(base, block_l or base.block_l)
    return replace(base, block_l=min(base.block_l, max(32, triton.next_power_of_2(l))))


def as_grouped(x: torch.Tensor) -> torch.Tensor:
    """(b, n, l) -> (b, 1, n, l) view, so kernels only see the grouped layout."""
    return x if x.dim() == 4 else x.unsqueeze(1)


@triton.jit
def combine_affine(a_early, b_early, a_late, b_late):
    """Compose h -> a_early * h + b_early, then h -> a_late * h + b_late."""
    return a_early * a_late, a_late * b_early + b_late


@triton.jit
def chunk_positions(chunk, l, length, BLOCK_L: tl.constexpr, REVERSE: tl.constexpr):
    """The first position and the positions t of the chunk processed ``chunk``-th (memory
    order), which of them exist (0 <= t < l) and which are real (also t < the row's length)."""
    if REVERSE:
        start = l - (chunk + 1) * BLOCK_L
    else:
        start = chunk * BLOCK_L
    t = start + tl.arange(0, BLOCK_L)
    in_range = (t >= 0) & (t < l)
    live = in_range & (t < length)
    return start, t, in_range, live


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
def load_state_inputs(A_row, B_row, C_row, s, t, stride_A_n, stride_B_n, stride_B_l,
                      stride_C_n, stride_C_l, mask_d, mask_dl):
    """State s's A (BLOCK_D,) and its B and C rows as (BLOCK_D, BLOCK_L) tiles, float32.

    B and C are loaded broadcast over the block's channels (B_row, C_row are (BLOCK_D, 1)
    pointers), straight into the tiles' layout: loaded as (BLOCK_L,) rows, Triton would
    re-lay them out through shared memory at every state."""
    A_s = tl.load(A_row + s * stride_A_n, mask=mask_d, other=0.0).to(tl.float32)
    Bs = tl.load(B_row + s * stride_B_n + t[None, :] * stride_B_l, mask=mask_dl,
                 other=0.0).to(tl.float32)
    Cs = tl.load(C_row + s * stride_C_n + t[None, :] * stride_C_l, mask=mask_dl,
                 other=0.0).to(tl.float32)
    return A_s, Bs, Cs


@triton.jit
def state_before_chunk(previous_end, h0, chunk_d, mask_d, HAS_H0: tl.constexpr):
    """The state before a chunk: the previous chunk's end state (loaded from the pointers
    ``previous_end``), or for the first chunk the initial state (``h0``) or 0."""
    h = tl.load(previous_end, mask=mask_d & (chunk_d > 0), other=0.0)
    if HAS_H0:
        h += tl.load(h0, mask=mask_d & (chunk_d == 0), other=0.0).to(tl.float32)
    return h


@triton.jit
def column(x, index, BLOCK_L: tl.constexpr):
    """x[:, index] of a (BLOCK_D, BLOCK_L) tile, as (BLOCK_D,)."""
    j = tl.arange(0, BLOCK_L)
    return tl.sum(tl.where((j == index)[None, :], x, 0.0), axis=1)


@triton.jit
def channel_block(D_ptr, delta_bias_ptr, seq_lens_ptr, d, l, channels_per_group,
                  HAS_D: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr,
                  HAS_SEQ_LENS: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch row and block of channels, and their per-channel parameters.

    Returns pid_b (int64), offs_d, mask_d, group (of B and C), D and delta_bias (float32,
    zeros when absent) and the row's length (l without seq_lens).
    """
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d
    group = (pid_d * BLOCK_D) // channels_per_group
    Dv = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_DELTA_BIAS:
        bias = tl.load(delta_bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    length = l
    if HAS_SEQ_LENS:
        length = tl.load(seq_lens_ptr + pid_b).to(tl.int32)
    return pid_b, offs_d, mask_d, group, Dv, bias, length
