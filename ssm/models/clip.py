"""Dual-encoder CLIP model with optional ITM head, text-only LM head and caption decoder."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ssm.decoders import generate as generate_captions

from .heads import ITMHead


@dataclass
class CLIPOutput:
    """What one forward pass gives the objective. Features are L2-normalised (b, e)."""

    image_features: torch.Tensor
    text_features: Optional[torch.Tensor]  # None when the forward skips the text tower
    logit_scale: torch.Tensor            # log of the temperature factor, 0-d
    logit_bias: Optional[torch.Tensor]   # SigLIP's bias, 0-d, or None
    text_states: Optional[torch.Tensor]  # (b, l, text width), for the ITM and LM heads
    image_patches: Optional[torch.Tensor]  # (b, p, image width) with an ITM head or decoder
    image_pooled: Optional[torch.Tensor] = None  # (b, image width), before the projection


class CLIP(nn.Module):
    """Image and text towers projected to a shared ``embed_dim``.

    logit_scale is learnable, initialised at ``init_logit_scale`` (ln(1/0.07) for CLIP,
    ln 10 for SigLIP) and clamped to [0, ln 100] by ``clamp_logit_scale`` after each step.
    ``init_logit_bias`` (SigLIP: -10) adds a learnable bias. ``itm_head`` adds BLIP's
    matching head. ``text_lm_head`` ties an output layer to the text tower's embedding for
    next-token prediction from the text alone: it never sees the image (needs a causal text
    tower). ``decoder`` (``ssm.decoders``) is the image-grounded captioner: it reads the
    image tower's pooled and patch features and generates captions (``generate``).
    ``text_in_forward=False`` skips the text tower in ``forward`` (captioning alone reads
    no text features); ``encode_text`` and evaluation still use it.
    """

    MAX_LOGIT_SCALE = math.log(100.0)

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, embed_dim: int = 256,
                 init_logit_scale: float = math.log(1 / 0.07),
                 init_logit_bias: Optional[float] = None, itm_head: bool = False,
                 text_lm_head: bool = False, decoder: Optional[nn.Module] = None,
                 text_in_forward: bool = True):
        super().__init__()
        if text_lm_head and not getattr(text_encoder, "causal", False):
            raise ValueError(f"text_lm_head needs a causal text encoder; "
                             f"{type(text_encoder).__name__} reads both directions")
        if decoder is not None and getattr(decoder, "image_width", None) != image_encoder.width:
            raise ValueError(f"decoder.image_width ({getattr(decoder, 'image_width', None)}) "
                             f"must equal the image encoder's width ({image_encoder.width})")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.width, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = (nn.Parameter(torch.tensor(float(init_logit_bias)))
                           if init_logit_bias is not None else None)
        self.itm = ITMHead(text_encoder.width, image_encoder.width) if itm_head else None
        self.has_text_lm_head = text_lm_head
        self.decoder = decoder
        self.text_in_forward = text_in_forward

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> CLIPOutput:
        """images (b, 3, h, w), tokens and mask (b, l) -> CLIPOutput."""
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(f"images and tokens must have the same batch size, got "
                             f"{images.shape[0]} and {tokens.shape[0]}")
        if self.itm is not None or self.decoder is not None:
            pooled_image, patches = self.image_encoder.encode(images)
        else:
            pooled_image, patches = self.image_encoder(images), None
        text_states = text_features = None
        if self.text_in_forward:
            text_states = self.text_encoder.forward_tokens(tokens, mask)
            pooled_text = self.text_encoder.pool(text_states, mask)
            text_features = F.normalize(self.text_proj(pooled_text), dim=-1)
        return CLIPOutput(
            image_features=F.normalize(self.image_proj(pooled_image), dim=-1),
            text_features=text_features,
            logit_scale=self.logit_scale, logit_bias=self.logit_bias,
            text_states=text_states, image_patches=patches, image_pooled=pooled_image)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) -> L2-normalised (b, e)."""
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(b, l) tokens and mask -> L2-normalised (b, e)."""
        return F.normalize(self.text_proj(self.text_encoder(tokens, mask)), dim=-1)

    def text_lm_logits(self, text_states: torch.Tensor) -> torch.Tensor:
        """Next-token logits (b, l, vocab) from the text tower's states, through the text
        encoder's LM head (its embedding, tied, unless a pretrained LM brought its own).
        Text only: these logits never see the image (``caption_logits`` do)."""
        if not self.has_text_lm_head:
            raise ValueError("this CLIP was built without text_lm_head=True")
        return self.text_encoder.lm_logits(text_states)

    def caption_logits(self, out: CLIPOutput, tokens: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        """The decoder's next-token logits (b, l, vocab) for the captions, read with the
        images of ``out`` (this model's forward output)."""
        if self.decoder is None:
            raise ValueError("this CLIP was built without a caption decoder (decoder=None)")
        return self.decoder(out.image_pooled, out.image_patches, tokens, mask)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_new_tokens: int, strategy="greedy", *,
                 tokenizer, stop_at_eos: bool = True, guidance: float = 1.0):
        """Captions of images (b, 3, h, w): ``ssm.decoders.Generation`` with token ids
        (b, t) and decoded strings. strategy: "greedy", "sample", "beam", a mapping such as
        {"name": "sample", "top_p": 0.9, "seed": 0}, or an ``ssm.decoders`` strategy object.
        tokenizer: gives the BOS, EOS and pad ids and decodes (``ssm.data.ByteTokenizer``).
        guidance: classifier-free guidance scale (1: none; needs a decoder trained with
        image_dropout, see ``ssm.decoders.generation``)."""
        if self.decoder is None:
            raise ValueError("this CLIP has no caption decoder to generate with (decoder=None)")
        was_training = self.training
        self.eval()
        try:
            pooled, patches = self.image_encoder.encode(images)
            return generate_captions(self.decoder, pooled, patches, max_new_tokens, strategy,
                                     tokenizer, stop_at_eos, guidance)
        finally:
            self.train(was_training)

    def itm_logits(self, text_states, text_mask, image_patches) -> torch.Tensor:
        """Match / no-match logits (b, 2) for paired rows."""
        if self.itm is None:
            raise ValueError("this CLIP was built without itm_head=True")
        return self.itm(text_states, text_mask, image_patches)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0.0, self.MAX_LOGIT_SCALE)
