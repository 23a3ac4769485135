"""The Mamba mixer block (Gu & Dao, 2023), on this repo's kernels.

    x, z = in_proj(h)                      x, z: (b, l, d), d = expand * d_model
    x = silu(causal_conv1d(x))
    dt, B, C = split(x_proj(x))            dt: (b, l, dt_rank) -> dt_proj -> (b, l, d)
    y = selective_scan(x, dt, -exp(A_log), B, C, D, z, dt_bias, softplus)
    out = out_proj(y)

Every activation keeps (b, l, .) memory; the ops take (b, d, l) views of it (the
contract's layout) and the CPU kernels read and write them through strides.

``reverse=True`` runs the block backward in time from each row's true end (for
bidirectional encoders): the conv then looks ahead instead of back and the scan starts at
seq_lens - 1, so right padding never reaches a real position in either direction.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from einops import rearrange
from torch import nn

from kernels import (causal_conv1d_fn, causal_conv1d_update, selective_scan_fn,
                     selective_state_update)


class Mamba(nn.Module):
    """Selective SSM mixer: (b, l, d_model) -> (b, l, d_model).

    A drop-in for mamba-ssm's ``mamba_simple.Mamba``: the same constructor arguments,
    parameter names and initialisation order (one seed, the same weights), and its decode
    API, ``allocate_inference_cache(batch_size, max_seqlen, dtype=None)`` and
    ``step(hidden, conv_state, ssm_state) -> (out, conv_state, ssm_state)``. Beyond it,
    ``forward`` takes ``seq_lens`` (right padding) and ``reverse``; it does not take
    mamba-ssm's ``inference_params`` (decode with ``step``).

    Initialisation follows the paper: A_log = log(1..n) per channel (S4D-real); dt drawn
    log-uniformly in [dt_min, dt_max], stored as the inverse softplus in dt_proj.bias;
    D = 1. A_log and D carry ``_no_weight_decay = True``.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, use_fast_path: bool = True,
                 layer_idx: Optional[int] = None, device=None, dtype=None,
                 backend: str = "auto"):
        """Arguments as ``mamba_simple.Mamba``'s, plus ``backend`` (see kernels'
        selective_scan_fn). ``use_fast_path`` is accepted for code written against
        mamba-ssm and changes nothing: ``backend`` picks the kernels here."""
        factory = {"device": device, "dtype": dtype}
        super().__init__()
        if dt_rank != "auto" and not (isinstance(dt_rank, int) and dt_rank > 0):
            raise ValueError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path, self.layer_idx = use_fast_path, layer_idx
        self.backend = backend

        # Modules are created, and random numbers drawn, in mamba_simple.Mamba's order (out_proj
        # last), so one seed gives both modules the same weights.
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        # Depthwise conv weights kept in nn.Conv1d's layout for its default init.
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                bias=conv_bias, padding=d_conv - 1, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # dt_proj: small weights; bias = softplus^-1(dt) with dt log-uniform in [min, max].
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            nn.init.constant_(self.dt_proj.weight, std)
        dt = torch.exp(torch.rand(self.d_inner, **factory) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # mamba-ssm's mark: model-level init keeps it

        # A_log and D stay float32 whatever ``dtype`` is, as in mamba-ssm.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device)
        self.A_log = nn.Parameter(torch.log(A).repeat(self.d_inner, 1))  # (d, n)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    @property
    def conv_weight(self) -> torch.Tensor:
        return rearrange(self.conv1d.weight, "d 1 w -> d w")

    def forward(self, hidden: torch.Tensor, seq_lens: Optional[torch.Tensor] = None,
                reverse: bool = False,
                initial_state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """hidden (b, l, d_model) -> (b, l, d_model). seq_lens (b,) marks right padding.
        initial_state (b, d_inner, d_state): the scan's state before the first token
        (zeros when None); gradients flow into it."""
        if hidden.dim() != 3 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden must have shape (b, l, d_model={self.d_model}), "
                             f"got {tuple(hidden.shape)}")
        # Activations stay in (b, l, .) memory throughout; the kernels take (b, d, l)
        # views of it and read through strides, so no layout is copied.
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                    # (b, l, d) views
        x = self._conv(rearrange(x, "b l d -> b d l"), seq_lens, reverse)
        x_dbl = self.x_proj(rearrange(x, "b d l -> b l d"))             # (b, l, r + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = dt @ self.dt_proj.weight.t()        # (b, l, d); its bias is added in the scan
        y = selective_scan_fn(x, rearrange(delta, "b l d -> b d l"),
                              -torch.exp(self.A_log.float()), rearrange(B, "b l n -> b n l"),
                              rearrange(C, "b l n -> b n l"), self.D.float(),
                              rearrange(z, "b l d -> b d l"),
                              delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                              seq_lens=seq_lens, reverse=reverse, initial_state=initial_state,
                              backend=self.backend)
        return self.out_proj(rearrange(y, "b d l -> b l d"))

    def _conv(self, x, seq_lens, reverse):
        """silu(causal conv) over (b, d, l); with ``reverse``, causal from each row's end."""
        return causal_conv1d_fn(x, self.conv_weight, self.conv1d.bias, "silu",
                                seq_lens=seq_lens, reverse=reverse, backend=self.backend)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: Optional[int] = None,
                                 dtype: Optional[torch.dtype] = None, *, device=None, **kwargs):
        """Zero decode states for ``step``, called as mamba-ssm's is.

        Returns conv_state (b, d, d_conv) in ``dtype`` (default: the conv weight's dtype)
        and ssm_state (b, d, n) in float32 always: the scan and the step keep the state in
        float32 (mamba-ssm stores it in ``dtype``; float32 is at least as precise).
        ``max_seqlen`` is accepted and unused: a Mamba state does not grow with length.
        Other keywords (mamba-ssm passes some through its model) are ignored.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise TypeError(f"batch_size must be a positive int, got {batch_size!r}")
        if max_seqlen is not None and (isinstance(max_seqlen, bool)
                                       or not isinstance(max_seqlen, int) or max_seqlen < 1):
            raise TypeError(f"max_seqlen must be a positive int or None, got {max_seqlen!r} "
                            "(the signature is (batch_size, max_seqlen, dtype=None), as in "
                            "mamba-ssm; pass device= by keyword)")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
        device = device or self.out_proj.weight.device
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device,
                                 dtype=dtype or self.conv1d.weight.dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                                dtype=torch.float32)
        return conv_state, ssm_state

    def step(self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
        """One decode step, as mamba-ssm's: hidden (b, 1, d_model) (or (b, d_model)) ->
        (out of the same shape, conv_state, ssm_state); the states are updated in place and
        returned. Matches ``forward`` on the sequence so far."""
        squeeze = hidden.dim() == 3
        if squeeze:
            if hidden.shape[1] != 1:
                raise ValueError(f"step takes one token, got hidden of shape {tuple(hidden.shape)}")
            hidden = hidden[:, 0]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                     # (b, d) each
        x = causal_conv1d_update(x, conv_state, self.conv_weight, self.conv1d.bias, "silu")
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], -1)
        dt = dt @ self.dt_proj.weight.t()                                # (b, d)
        y = selective_state_update(ssm_state, x, dt, -torch.exp(self.A_log.float()), B, C,
                                   self.D.float(), z, self.dt_proj.bias.float(), True)
        out = self.out_proj(y)
        return (out[:, None] if squeeze else out), conv_state, ssm_state
