"""Pre-norm Transformer block on ``scaled_dot_product_attention``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class TransformerBlock(nn.Module):
    """x + attn(norm(x)), then + mlp(norm(x)); (b, l, width) -> (b, l, width)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b l (three h e) -> three b h l e",
                            three=3, h=self.heads)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                              dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(rearrange(attn, "b h l e -> b l (h e)"))
        return x + self.mlp(self.norm2(x))
