"""What every caption decoder shares: checks, the tied output layer, and image tokens.

A caption decoder is a tower that generates text conditioned on an image tower's output:
    forward(image_pooled (b, wi), image_patches (b, p, wi), tokens (b, l), mask (b, l))
        -> logits (b, l, V): position t predicts tokens[:, t + 1] (teacher forcing);
    start(image_pooled, image_patches, max_new_tokens) -> cache: the image read, nothing
        generated yet;
    step(tokens (b,) long, cache) -> logits (b, V): one more token through the cache.
A cache has ``select(index)`` (rows in a new order: beam search) and ``nbytes()``.

``image_dropout`` p: in training, each row's image is replaced by the null image (zeros)
with probability p, so the same decoder also learns the captions' language alone; guided
generation (``generate(..., guidance=s)``) then contrasts the two.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ssm.encoders.text import check_tokens


def sinusoid_positions(length: int, width: int, device=None) -> Tensor:
    """Fixed (length, width) position codes (Vaswani et al.): sin on even channels, cos on
    odd ones, wavelengths from 2 pi to 10000 * 2 pi. No parameters, any length."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32, device=device)
                          * (-math.log(10000.0) / width))                       # (ceil(w / 2),)
    codes = torch.zeros(length, width, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return codes


class ImageTokens(nn.Module):
    """The image as decoder tokens: [patches; pooled], each projected to the decoder width
    and layer-normed: (b, p + 1, width). Patches add fixed sinusoidal codes of their
    row-major index, so a decoder knows where each one sits even when the image tower's
    patch features do not say (a CNN's do not). The pooled summary comes last: read as a
    prefix by a causal decoder, it sits next to the caption."""

    def __init__(self, image_width: int, width: int):
        super().__init__()
        self.pooled_in = nn.Linear(image_width, width)
        self.patches_in = nn.Linear(image_width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, pooled: Tensor, patches: Tensor) -> Tensor:
        """pooled (b, wi), patches (b, p, wi) -> (b, p + 1, width)."""
        p, width = patches.shape[1], self.patches_in.out_features
        patches = self.patches_in(patches) + sinusoid_positions(p, width, patches.device)
        return self.norm(torch.cat([patches, self.pooled_in(pooled)[:, None]], dim=1))


class CaptionDecoder(nn.Module):
    """Token embedding tied to the output layer, and the checks every decoder runs.
    Subclasses define ``_logits`` (teacher forcing), ``_start`` and ``step``."""

    def __init__(self, vocab_size: int, width: int, image_width: int, image_dropout: float = 0.0):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("width", width),
                            ("image_width", image_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(image_dropout, bool) or not isinstance(image_dropout, (int, float)) \
                or not 0 <= image_dropout < 1:
            raise ValueError(f"image_dropout must be a number in [0, 1), got {image_dropout!r}")
        self.image_dropout = float(image_dropout)
        self.vocab_size, self.width, self.image_width = vocab_size, width, image_width
        self.embed = nn.Embedding(vocab_size, width)
        nn.init.normal_(self.embed.weight, std=0.02)

    def output_logits(self, hidden: Tensor) -> Tensor:
        """(..., width) -> (..., V) through the tied embedding."""
        return hidden @ self.embed.weight.t()

    def check_image(self, image_pooled: Tensor, image_patches: Tensor) -> int:
        """Validate the image tower's outputs; returns the batch size b."""
        for name, t, dims in (("image_pooled", image_pooled, "(b, image_width)"),
                              ("image_patches", image_patches, "(b, p, image_width)")):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor {dims}, got "
                                f"{getattr(t, 'dtype', type(t).__name__)}")
        if image_pooled.dim() != 2 or image_pooled.shape[1] != self.image_width:
            raise ValueError(f"image_pooled must have shape (b, image_width={self.image_width}), "
                             f"got {tuple(image_pooled.shape)}")
        if (image_patches.dim() != 3 or image_patches.shape[2] != self.image_width
                or image_patches.shape[0] != image_pooled.shape[0] or image_patches.shape[1] < 1):
            raise ValueError(f"image_patches must have shape (b={image_pooled.shape[0]}, p >= 1, "
                             f"image_width={self.image_width}), got {tuple(image_patches.shape)}")
        return image_pooled.shape[0]

    def forward(self, image_pooled: Tensor, image_patches: Tensor, tokens: Tensor,
                mask: Tensor) -> Tensor:
        """Next-token logits (b, l, V) of right-padded captions (tokens, mask (b, l)) read
        with the image; rows at padded positions carry no meaning."""
        b = self.check_image(image_pooled, image_patches)
        lengths = check_tokens(tokens, mask, self.vocab_size)
        if tokens.shape[0] != b:
            raise ValueError(f"tokens must have the images' batch size {b}, got {tokens.shape[0]}")
        if self.training and self.image_dropout > 0:
            keep = (torch.rand(b, device=image_pooled.device) >= self.image_dropout)
            keep = keep.to(image_pooled.dtype)                              # (b,) 1: image kept
            image_pooled = image_pooled * keep[:, None]
            image_patches = image_patches * keep[:, None, None]
        return self._logits(image_pooled, image_patches, tokens, lengths)

    @staticmethod
    def null_image(image_pooled: Tensor, image_patches: Tensor) -> tuple[Tensor, Tensor]:
        """The image that image dropout trains as "no image": zeros of the same shapes."""
        return torch.zeros_like(image_pooled), torch.zeros_like(image_patches)

    def start(self, image_pooled: Tensor, image_patches: Tensor, max_new_tokens: int):
        """A cache that has read the image and can take ``max_new_tokens`` steps."""
        self.check_image(image_pooled, image_patches)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        return self._start(image_pooled, image_patches, max_new_tokens)

    def _logits(self, image_pooled, image_patches, tokens, lengths) -> Tensor:
        raise NotImplementedError

    def _start(self, image_pooled, image_patches, max_new_tokens):
        raise NotImplementedError

    def step(self, tokens: Tensor, cache) -> Tensor:
        raise NotImplementedError
