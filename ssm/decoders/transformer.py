"""BLIP's caption decoder: causal self-attention over the caption, cross-attention to the
image tokens, a KV cache for generation.

Pre-norm blocks: x + SelfAttn(LN(x)) [causal], + CrossAttn(LN(x), image), + MLP(LN(x)).
The image tokens are ``ImageTokens`` (the patches with their position codes, then the
pooled feature), the same ones the Mamba decoder reads as its prefix. Caption positions are fixed
sinusoids (no parameters, no length limit), so that parameter counts do not depend on the
caption budget and generation can run to any length, as the Mamba decoder's can.

Generation: the cross-attention keys and values of the image are computed once; each step
appends one key and value per layer to buffers sized for the whole generation, (b, h, T, e)
with T = max_new_tokens, so a row's memory grows with the text it writes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .base import CaptionDecoder, ImageTokens, sinusoid_positions


class CrossAttentionBlock(nn.Module):
    """(b, l, width) -> (b, l, width), attending causally to itself and to memory (b, m, width)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.norm_self = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj_self = nn.Linear(width, width)
        self.norm_cross = nn.LayerNorm(width)
        self.q_cross = nn.Linear(width, width)
        self.kv_cross = nn.Linear(width, 2 * width)
        self.proj_cross = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of memory (b, m, width): each (b, h, m, e)."""
        return tuple(rearrange(self.kv_cross(memory), "b m (two h e) -> two b h m e",
                               two=2, h=self.heads))

    def _cross(self, x: Tensor, memory_kv) -> Tensor:
        q = rearrange(self.q_cross(self.norm_cross(x)), "b l (h e) -> b h l e", h=self.heads)
        attn = F.scaled_dot_product_attention(q, *memory_kv)
        return x + self.proj_cross(rearrange(attn, "b h l e -> b l (h e)"))

    def forward(self, x: Tensor, memory_kv) -> Tensor:
        """Teacher forcing over the whole caption x (b, l, width)."""
        q, k, v = rearrange(self.qkv(self.norm_self(x)), "b l (three h e) -> three b h l e",
                            three=3, h=self.heads)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj_self(rearrange(attn, "b h l e -> b l (h e)"))
        x = self._cross(x, memory_kv)
        return x + self.mlp(self.norm_mlp(x))

    def step(self, x: Tensor, memory_kv, keys: Tensor, values: Tensor, position: int) -> Tensor:
        """One token x (b, 1, width) at ``position``; its key and value are written into
        keys, values (b, h, T, e) there, and it attends to positions 0..position."""
        q, k, v = rearrange(self.qkv(self.norm_self(x)), "b l (three h e) -> three b h l e",
                            three=3, h=self.heads)
        keys[:, :, position] = k[:, :, 0]
        values[:, :, position] = v[:, :, 0]
        attn = F.scaled_dot_product_attention(q, keys[:, :, :position + 1],
                                              values[:, :, :position + 1])
        x = x + self.proj_self(rearrange(attn, "b h l e -> b l (h e)"))
        x = self._cross(x, memory_kv)
        return x + self.mlp(self.norm_mlp(x))


@dataclass
class KVCache:
    """Per layer the image's cross-attention (keys, values) (b, h, m, e), and the caption's
    self-attention keys and values (b, h, T, e), filled up to ``position``; the position
    codes (T, width) of the T steps."""

    memory: list
    keys: list
    values: list
    positions: Tensor
    position: int = 0

    def select(self, index: Tensor) -> "KVCache":
        pick = lambda ts: [t.index_select(0, index) for t in ts]  # noqa: E731
        return KVCache([tuple(pick(kv)) for kv in self.memory], pick(self.keys),
                       pick(self.values), self.positions, self.position)

    def nbytes(self) -> int:
        tensors = [t for kv in self.memory for t in kv] + self.keys + self.values
        return sum(t.numel() * t.element_size() for t in tensors)


class TransformerCaptionDecoder(CaptionDecoder):
    """embed + sinusoid positions -> CrossAttentionBlock * depth -> LayerNorm -> tied output."""

    def __init__(self, vocab_size: int = 259, width: int = 96, depth: int = 1, heads: int = 4,
                 mlp_ratio: float = 4.0, image_width: int = 128, image_dropout: float = 0.0):
        super().__init__(vocab_size, width, image_width, image_dropout)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        # The codes are +-1 and the embedding starts at std 0.02: a learned factor, started
        # where code and embedding have about the same norm, keeps positions from drowning
        # out the tokens.
        self.position_scale = nn.Parameter(torch.tensor(0.02))
        self.image_tokens = ImageTokens(image_width, width)
        self.blocks = nn.ModuleList(CrossAttentionBlock(width, heads, mlp_ratio)
                                    for _ in range(depth))
        self.norm_f = nn.LayerNorm(width)

    def _memory_kv(self, image_pooled, image_patches) -> list:
        memory = self.image_tokens(image_pooled, image_patches)            # (b, p + 1, width)
        return [block.memory_kv(memory) for block in self.blocks]

    def _logits(self, image_pooled, image_patches, tokens, lengths):
        h = self.embed(tokens)
        h = h + self.position_scale * sinusoid_positions(tokens.shape[1], self.width, h.device)
        for block, kv in zip(self.blocks, self._memory_kv(image_pooled, image_patches)):
            h = block(h, kv)
        return self.output_logits(self.norm_f(h))

    def _start(self, image_pooled, image_patches, max_new_tokens) -> KVCache:
        b, heads = image_pooled.shape[0], self.blocks[0].heads
        shape = (b, heads, max_new_tokens, self.width // heads)
        like = self.embed.weight
        return KVCache(self._memory_kv(image_pooled, image_patches),
                       [like.new_zeros(shape) for _ in self.blocks],
                       [like.new_zeros(shape) for _ in self.blocks],
                       sinusoid_positions(max_new_tokens, self.width, like.device).to(like.dtype))

    def step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """tokens (b,) long -> next-token logits (b, V); the cache takes their keys/values."""
        t = cache.position
        if cache.keys and t >= cache.keys[0].shape[2]:
            raise ValueError(f"the cache holds {t} tokens, as many as start() was told "
                             "(max_new_tokens); start a new one")
        h = self.embed(tokens) + self.position_scale * cache.positions[t]
        h = h[:, None]                                                     # (b, 1, width)
        for block, kv, keys, values in zip(self.blocks, cache.memory, cache.keys, cache.values):
            h = block.step(h, kv, keys, values, t)
        cache.position = t + 1
        return self.output_logits(self.norm_f(h[:, 0]))
