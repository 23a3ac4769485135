"""Heads on top of the two towers: image-text matching (BLIP's ITM)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class ITMHead(nn.Module):
    """Scores (image, text) pairs as match / no match.

    Text token states attend to image patch states in one cross-attention block (with a
    feed-forward layer), the fused tokens are mean-pooled over each caption's real tokens,
    and a linear layer gives two logits (class 1 = match).
    """

    def __init__(self, text_width: int, image_width: int, width: int = 256, heads: int = 4):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.text_in = nn.Linear(text_width, width)
        self.image_in = nn.Linear(image_width, width)
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.classify = nn.Linear(width, 2)

    def forward(self, text_states: torch.Tensor, text_mask: torch.Tensor,
                image_patches: torch.Tensor) -> torch.Tensor:
        """text_states (b, l, wt), text_mask (b, l) bool, image_patches (b, p, wi) -> (b, 2)."""
        if text_states.shape[0] != image_patches.shape[0]:
            raise ValueError(f"text_states and image_patches must pair up: batch sizes "
                             f"{text_states.shape[0]} and {image_patches.shape[0]}")
        x = self.text_in(text_states)
        kv = self.norm_kv(self.image_in(image_patches))
        q = rearrange(self.q(self.norm_q(x)), "b l (h e) -> b h l e", h=self.heads)
        k, v = rearrange(self.kv(kv), "b p (two h e) -> two b h p e", two=2, h=self.heads)
        x = x + self.proj(rearrange(F.scaled_dot_product_attention(q, k, v),
                                    "b h l e -> b l (h e)"))
        x = x + self.ff(self.norm_ff(x))
        weights = text_mask.to(x.dtype)[..., None]                       # (b, l, 1)
        return self.classify((x * weights).sum(1) / weights.sum(1))
