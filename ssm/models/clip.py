"""Dual-encoder CLIP model with optional ITM and LM heads."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .heads import ITMHead


@dataclass
class CLIPOutput:
    """What one forward pass gives the objective. Features are L2-normalised (b, e)."""

    image_features: torch.Tensor
    text_features: torch.Tensor
    logit_scale: torch.Tensor            # log of the temperature factor, 0-d
    logit_bias: Optional[torch.Tensor]   # SigLIP's bias, 0-d, or None
    text_states: torch.Tensor            # (b, l, text width), for the ITM and LM heads
    image_patches: Optional[torch.Tensor]  # (b, p, image width) when the ITM head is on


class CLIP(nn.Module):
    """Image and text towers projected to a shared ``embed_dim``.

    logit_scale is learnable, initialised at ``init_logit_scale`` (ln(1/0.07) for CLIP,
    ln 10 for SigLIP) and clamped to [0, ln 100] by ``clamp_logit_scale`` after each step.
    ``init_logit_bias`` (SigLIP: -10) adds a learnable bias. ``itm_head`` adds BLIP's
    matching head; ``lm_head`` ties an output layer to the text embedding for next-token
    prediction, which needs a causal text tower.
    """

    MAX_LOGIT_SCALE = math.log(100.0)

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int = 256,
                 init_logit_scale: float = math.log(1 / 0.07),
                 init_logit_bias: Optional[float] = None, itm_head: bool = False,
                 lm_head: bool = False):
        super().__init__()
        if lm_head and not getattr(text_encoder, "causal", False):
            raise ValueError(f"lm_head needs a causal text encoder; "
                             f"{type(text_encoder).__name__} reads both directions")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.width, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = (nn.Parameter(torch.tensor(float(init_logit_bias)))
                           if init_logit_bias is not None else None)
        self.itm = ITMHead(text_encoder.width, image_encoder.width) if itm_head else None
        self.has_lm_head = lm_head

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> CLIPOutput:
        """images (b, 3, h, w), tokens and mask (b, l) -> CLIPOutput."""
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(f"images and tokens must have the same batch size, got "
                             f"{images.shape[0]} and {tokens.shape[0]}")
        if self.itm is not None:
            pooled_image, patches = self.image_encoder.encode(images)
        else:
            pooled_image, patches = self.image_encoder(images), None
        text_states = self.text_encoder.forward_tokens(tokens, mask)
        pooled_text = self.text_encoder.pool(text_states, mask)
        return CLIPOutput(
            image_features=F.normalize(self.image_proj(pooled_image), dim=-1),
            text_features=F.normalize(self.text_proj(pooled_text), dim=-1),
            logit_scale=self.logit_scale, logit_bias=self.logit_bias,
            text_states=text_states, image_patches=patches)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) -> L2-normalised (b, e)."""
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(b, l) tokens and mask -> L2-normalised (b, e)."""
        return F.normalize(self.text_proj(self.text_encoder(tokens, mask)), dim=-1)

    def lm_logits(self, text_states: torch.Tensor) -> torch.Tensor:
        """Next-token logits (b, l, vocab) from text states, through the text encoder's LM
        head (its embedding, tied, unless a pretrained LM brought its own)."""
        if not self.has_lm_head:
            raise ValueError("this CLIP was built without lm_head=True")
        return self.text_encoder.lm_logits(text_states)

    def itm_logits(self, text_states, text_mask, image_patches) -> torch.Tensor:
        """Match / no-match logits (b, 2) for paired rows."""
        if self.itm is None:
            raise ValueError("this CLIP was built without itm_head=True")
        return self.itm(text_states, text_mask, image_patches)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0.0, self.MAX_LOGIT_SCALE)
