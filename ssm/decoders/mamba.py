"""The Mamba caption decoder: a causal Mamba stack that reads the image, then the caption.

Three ways to give it the image (``conditioning``):
- ``"prefix"``: the image tokens (``ImageTokens``: the patches, then the pooled
  feature) run through the stack before the caption, [image; caption], as in prefix-LM
  captioners;
- ``"initial_state"``: no prefix; each layer's scan starts from a state set by the image,
  h0 = u(c) v(c)^T (b, d, n) with c a projection of the pooled feature: one rank-1 write,
  the shape of what a token writes (dt * x * B^T). Our scan kernels take initial_state
  with gradients, so this trains end to end.
- ``"patch_state"``: the same, but every image token writes: h0 = sum_t u(c_t) v(c_t)^T
  over the patches (with position codes) and the pooled feature, what reading them as a
  prefix would write, in one parallel step and with no decay between them.

Generation runs ``Mamba.step`` (the conv-update and state-update kernels): per row a fixed
(d, d_conv) conv state and (d, n) scan state per layer, whatever the length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssm.modules import Mamba, RMSNorm

from .base import CaptionDecoder, ImageTokens, sinusoid_positions

CONDITIONINGS = ("prefix", "initial_state", "patch_state")


@dataclass
class MambaCache:
    """Per layer (conv_state (b, d, d_conv), ssm_state (b, d, n) float32): all a row needs."""

    layers: list

    def select(self, index: Tensor) -> "MambaCache":
        """The rows ``index`` (b',) in that order (copies: steps update states in place)."""
        return MambaCache([(conv.index_select(0, index), ssm.index_select(0, index))
                           for conv, ssm in self.layers])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer)


class MambaCaptionDecoder(CaptionDecoder):
    """embed -> [x + Mamba(RMSNorm(x))] * depth -> RMSNorm -> tied output layer.

    state_width: width of c, the image's projection that the state conditionings map to
    each layer's state (unused with "prefix").
    """

    def __init__(self, vocab_size: int = 259, width: int = 96, depth: int = 2,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, image_width: int = 128,
                 conditioning: str = "prefix", state_width: int = 32, backend: str = "auto",
                 image_dropout: float = 0.0):
        super().__init__(vocab_size, width, image_width, image_dropout)
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        self.conditioning = conditioning
        self.norms = nn.ModuleList(RMSNorm(width) for _ in range(depth))
        self.mixers = nn.ModuleList(Mamba(width, d_state, d_conv, expand, backend=backend)
                                    for _ in range(depth))
        self.norm_f = RMSNorm(width)
        if conditioning == "prefix":
            self.image_tokens = ImageTokens(image_width, width)
        else:
            d_inner = self.mixers[0].d_inner
            self.split = (d_inner, d_state)
            self.image_in = nn.Linear(image_width, state_width)
            self.state_in = nn.ModuleList(nn.Linear(state_width, d_inner + d_state)
                                          for _ in range(depth))

    def initial_states(self, image_pooled: Tensor, image_patches: Tensor) -> list[Tensor]:
        """Each layer's scan state (b, d, n) float32: a sum of rank-1 writes u(c) v(c)^T
        over the image's codes c (b, t, state_width), t = 1 (the pooled feature) for
        "initial_state", t = p + 1 (the patches with their position codes, then the
        pooled feature) for "patch_state", scaled by t ** -0.5."""
        if self.conditioning == "patch_state":
            x = self.image_in(torch.cat([image_patches, image_pooled[:, None]], dim=1))
            x = x + sinusoid_positions(x.shape[1], x.shape[2], x.device)  # (b, p + 1, sw)
        else:
            x = self.image_in(image_pooled)[:, None]                      # (b, 1, sw)
        c, scale = F.gelu(x), x.shape[1] ** -0.5
        states = []
        for proj in self.state_in:
            u, v = proj(c).float().split(self.split, dim=-1)              # (b, t, d), (b, t, n)
            states.append(torch.einsum("btd,btn->bdn", u, v) * scale)     # (b, d, n)
        return states

    def _logits(self, image_pooled, image_patches, tokens, lengths):
        h = self.embed(tokens)                                          # (b, l, width)
        prefix = 0
        if self.conditioning == "prefix":
            image = self.image_tokens(image_pooled, image_patches)       # (b, p + 1, width)
            prefix = image.shape[1]
            h = torch.cat([image.to(h.dtype), h], dim=1)
            lengths = lengths + prefix                                  # right padding follows
            states = [None] * len(self.mixers)
        else:
            states = self.initial_states(image_pooled, image_patches)
        for norm, mixer, h0 in zip(self.norms, self.mixers, states):
            h = h + mixer(norm(h), seq_lens=lengths, initial_state=h0)
        return self.output_logits(self.norm_f(h[:, prefix:]))

    def _advance(self, h: Tensor, cache: MambaCache) -> Tensor:
        """One position h (b, width) through every layer; the cache advances in place."""
        for norm, mixer, state in zip(self.norms, self.mixers, cache.layers):
            h = h + mixer.step(norm(h), *state)[0]  # (out, conv_state, ssm_state)
        return h

    def _start(self, image_pooled, image_patches, max_new_tokens) -> MambaCache:
        b = image_pooled.shape[0]
        dtype = self.embed.weight.dtype
        # Per layer: conv_state (b, d, d_conv) in dtype, ssm_state (b, d, n) float32.
        cache = MambaCache([mixer.allocate_inference_cache(b, dtype=dtype)
                            for mixer in self.mixers])
        if self.conditioning != "prefix":
            states = self.initial_states(image_pooled, image_patches)
            for (_, ssm_state), h0 in zip(cache.layers, states):
                ssm_state.copy_(h0)
        else:
            image = self.image_tokens(image_pooled, image_patches)       # (b, p + 1, width)
            for t in range(image.shape[1]):
                self._advance(image[:, t], cache)
        return cache

    def step(self, tokens: Tensor, cache: MambaCache) -> Tensor:
        """tokens (b,) long -> next-token logits (b, V); ``cache`` advances in place."""
        h = self._advance(self.embed(tokens), cache)
        return self.output_logits(self.norm_f(h))
