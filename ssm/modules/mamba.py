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

    Initialisation follows the paper: A_log = log(1..n) per channel (S4D-real); dt drawn
    log-uniformly in [dt_min, dt_max], stored as the inverse softplus in dt_proj.bias;
    D = 1. A_log and D carry ``_no_weight_decay = True``.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_scale: float = 1.0, conv_bias: bool = True,
                 bias: bool = False, backend: str = "auto"):
        super().__init__()
        if dt_rank != "auto" and not (isinstance(dt_rank, int) and dt_rank > 0):
            raise ValueError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.backend = backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        # Depthwise conv weights kept in nn.Conv1d's layout for its default init.
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                bias=conv_bias, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

        # dt_proj: small weights; bias = softplus^-1(dt) with dt log-uniform in [min, max].
        std = self.dt_rank ** -0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # mamba-ssm's mark: model-level init keeps it

        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))                        # (d, n)
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

    @property
    def conv_weight(self) -> torch.Tensor:
        return rearrange(self.conv1d.weight, "d 1 w -> d w")

    def forward(self, hidden: torch.Tensor, seq_lens: Optional[torch.Tensor] = None,
                reverse: bool = False) -> torch.Tensor:
        """hidden (b, l, d_model) -> (b, l, d_model). seq_lens (b,) marks right padding."""
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
                              seq_lens=seq_lens, reverse=reverse, backend=self.backend)
        return self.out_proj(rearrange(y, "b d l -> b l d"))

    def _conv(self, x, seq_lens, reverse):
        """silu(causal conv) over (b, d, l); with ``reverse``, causal from each row's end."""
        return causal_conv1d_fn(x, self.conv_weight, self.conv1d.bias, "silu",
                                seq_lens=seq_lens, reverse=reverse, backend=self.backend)

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None):
        """Zero (conv_state (b, d, d_conv), ssm_state (b, d, n) float32) for ``step``."""
        device = device or self.in_proj.weight.device
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device,
                                 dtype=dtype or self.conv1d.weight.dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                                dtype=torch.float32)
        return conv_state, ssm_state

    def step(self, hidden: torch.Tensor, conv_state: torch.Tensor,
             ssm_state: torch.Tensor) -> torch.Tensor:
        """One decode step: hidden (b, d_model) or (b, 1, d_model) -> same shape; the two
        states are updated in place. Matches ``forward`` on the sequence so far."""
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
        return out[:, None] if squeeze else out
