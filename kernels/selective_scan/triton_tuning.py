"""Autotuning of the Triton scan kernels: candidate configs, their pruning and the keys.

Tuned once per (l bucket, n, channels per group, dtypes, options) on a CUDA device; never
on CPU or under the interpreter (there, and with KERNELS_TRITON_AUTOTUNE=0, the launcher
uses ``launch_config``). The candidates are the few that compile without spills and with
a short hot loop for sm_90a (see ``python experiments/kernel_profile.py candidates=true``).
The backward reuses the forward's chunk length, so its candidates leave BLOCK_L out.
"""
from __future__ import annotations

import os

import triton

from kernels.common.launch import INTERPRETED

from .triton_common import LaunchConfig, backward_at, fit_block_d

AUTOTUNE_ENV = "KERNELS_TRITON_AUTOTUNE"  # "0": use launch_config on CUDA too

OPTIONS = ["HAS_D", "HAS_Z", "HAS_DELTA_BIAS", "DELTA_SOFTPLUS", "HAS_SEQ_LENS", "REVERSE"]
FORWARD_KEY = ["l_bucket", "n", "channels_per_group", *OPTIONS, "HAS_H0", "SAVE_CHUNK_STATES"]
BACKWARD_KEY = ["l_bucket", "n", "channels_per_group", *OPTIONS, "HAS_G_LAST", "BLOCK_L"]

# (block_d, block_n, block_l, num_warps, num_stages). Each thread holds
# block_d * block_l / (32 * num_warps) steps of a tile per state: 8 or 16 in the forward
# (enough to amortise the scan's shuffles), 8 in the backward (its state loop keeps about
# 20 tiles live). All compile for sm_90a without spills.
FORWARD_CANDIDATES = [
    LaunchConfig(4, 1, 128, 2, 1), LaunchConfig(4, 1, 128, 1, 1), LaunchConfig(8, 1, 128, 4, 1),
    LaunchConfig(4, 1, 128, 2, 2), LaunchConfig(4, 2, 128, 2, 1), LaunchConfig(4, 1, 256, 4, 1),
    LaunchConfig(8, 1, 256, 8, 1),
]
# Written for 128-step chunks; at the forward's block_l their warps scale with it
# (triton_common.backward_at).
BACKWARD_CANDIDATES = [
    LaunchConfig(2, 1, 128, 1, 1), LaunchConfig(2, 1, 128, 1, 2), LaunchConfig(4, 1, 128, 2, 1),
]


def use_autotune() -> bool:
    """Whether the compiled launcher autotunes (never under the interpreter)."""
    return not INTERPRETED and os.environ.get(AUTOTUNE_ENV, "1") != "0"


def l_bucket(l: int) -> int:
    """Lengths tuned alike: powers of 4 from 256 to 16384 (a new l rarely retunes)."""
    bucket = 256
    while bucket < l and bucket < 16384:
        bucket *= 4
    return bucket


def as_triton_config(config: LaunchConfig, with_block_l: bool = True) -> triton.Config:
    kwargs = {"BLOCK_D": config.block_d, "BLOCK_N": config.block_n,
              "NUM_STAGES": config.num_stages}
    if with_block_l:
        kwargs["BLOCK_L"] = config.block_l
    return triton.Config(kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def forward_configs() -> list[triton.Config]:
    return [as_triton_config(c) for c in FORWARD_CANDIDATES]


def backward_configs() -> list[triton.Config]:
    return [as_triton_config(c, with_block_l=False) for c in BACKWARD_CANDIDATES]


def _fitted(configs, nargs, block_l=None) -> list[triton.Config]:
    """Each candidate with its block_d shrunk to fit d and the groups, and (backward,
    ``block_l`` given) its warps scaled to the chunk; duplicates dropped."""
    out, seen = [], set()
    for c in configs:
        kwargs = {**c.kwargs, "BLOCK_D": fit_block_d(c.kwargs["BLOCK_D"], nargs["d"],
                                                     nargs["channels_per_group"])}
        warps = c.num_warps
        if block_l is not None:
            warps = backward_at(LaunchConfig(1, 1, 128, c.num_warps), block_l).num_warps
        key = (tuple(sorted(kwargs.items())), warps, c.num_stages)
        if key not in seen:
            seen.add(key)
            out.append(triton.Config(kwargs, num_warps=warps, num_stages=c.num_stages))
    return out


def prune_forward(configs, nargs, **kwargs):
    """Candidates fitted to (d, groups)."""
    return _fitted(configs, nargs)


def prune_backward(configs, nargs, **kwargs):
    return _fitted(configs, nargs, block_l=kwargs.get("BLOCK_L", nargs.get("BLOCK_L")))
