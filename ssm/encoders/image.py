"""Image encoders for image-text training: a small ViT and a small CNN.

Both map images (b, 3, h, w) to pooled features (b, width) for the contrastive loss and to
per-location features (b, p, width) for an image-text matching head to cross-attend to.
``encode`` returns both from one pass; ``forward`` and ``forward_patches`` are its halves.
"""
from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from ssm.modules import TransformerBlock


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (b, 3, h, w), got {images.dim()} dimensions "
                         f"{tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 channels in (b, 3, h, w), got {images.shape[1]}")


class ViTImageEncoder(nn.Module):
    """Vision transformer; pooled output is the class token, patches are the other p tokens.

    p = (image_size / patch_size)^2, in row-major order over the patch grid.
    """

    def __init__(self, image_size: int = 64, patch_size: int = 8, width: int = 192, depth: int = 4,
                 heads: int = 3, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if image_size <= 0 or patch_size <= 0 or image_size % patch_size != 0:
            raise ValueError(f"image_size = {image_size} must be a positive multiple of "
                             f"patch_size = {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, width))
        if width % heads:
            raise ValueError(f"width = {width} must be divisible by heads = {heads}")
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio, dropout)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed, self.patch_embed.weight):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.zeros_(self.patch_embed.bias)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _check(self, images: Tensor) -> None:
        _check_images(images)
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"images height and width ({h}, {w}) must be divisible by "
                             f"patch_size = {self.patch_size}")
        if (h, w) != (self.image_size, self.image_size):
            # The learned position embedding has one entry per patch of the configured size.
            raise ValueError(f"images must be {self.image_size}x{self.image_size} (image_size), "
                             f"got {h}x{w}")

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled (b, width) and patch (b, p, width) features of images (b, 3, h, w)."""
        self._check(images)
        x = rearrange(self.patch_embed(images), "b c gh gw -> b (gh gw) c")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:]

    def forward(self, images: Tensor) -> Tensor:
        """Class-token features (b, width) of images (b, 3, h, w)."""
        return self.encode(images)[0]

    def forward_patches(self, images: Tensor) -> Tensor:
        """Patch features (b, p, width) of images (b, 3, h, w), after the final norm."""
        return self.encode(images)[1]


class ConvNetImageEncoder(nn.Module):
    """Small CNN: per stage, a stride-2 conv and a stride-1 conv, each GroupNorm + GELU.

    GroupNorm rather than BatchNorm keeps each image's features independent of the rest of the
    batch. With s = len(channels) stages the final map is (ceil(h / 2^s), ceil(w / 2^s)), and
    p = h' * w' locations in row-major order. Inputs must be at least 16x16.
    """

    min_size = 16

    def __init__(self, width: int = 192, channels: tuple[int, ...] = (32, 64, 128),
                 norm_groups: int = 8, pool: str = "mean", image_size: Optional[int] = None):
        super().__init__()
        if len(channels) == 0:
            raise ValueError("channels must name at least one stage")
        if pool not in ("mean", "flatten"):
            raise ValueError(f"pool must be 'mean' or 'flatten', got {pool!r}")
        if pool == "flatten" and not (isinstance(image_size, int) and image_size >= self.min_size):
            raise ValueError(f"pool='flatten' needs image_size >= {self.min_size}, got {image_size!r}")
        for c in channels:
            if c % norm_groups != 0:
                raise ValueError(f"every entry of channels = {tuple(channels)} must be divisible "
                                 f"by norm_groups = {norm_groups}")
        self.width = width
        layers = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False),
                       nn.GroupNorm(norm_groups, c), nn.GELU(),
                       nn.Conv2d(c, c, 3, stride=1, padding=1, bias=False),
                       nn.GroupNorm(norm_groups, c), nn.GELU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, width, kernel_size=1)
        self.pool, self.image_size = pool, image_size
        if pool == "flatten":
            # Every location keeps its own weights, so the pooled feature knows where
            # things are (a mean over locations forgets it; captions speak of positions).
            side = -(-image_size // 2 ** len(channels))
            self.flatten_proj = nn.Linear(side * side * width, width)
        self.pool_norm = nn.LayerNorm(width)

    def _check(self, images: Tensor) -> None:
        _check_images(images)
        h, w = images.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise ValueError(f"images must be at least {self.min_size}x{self.min_size}, got {h}x{w}")

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled (b, width) and per-location (b, p, width) features of images (b, 3, h, w)."""
        self._check(images)
        if self.pool == "flatten" and images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"pool='flatten' was built for {self.image_size}x{self.image_size} "
                             f"images, got {tuple(images.shape[-2:])}")
        patches = rearrange(self.proj(self.features(images)), "b c h w -> b (h w) c")
        if self.pool == "flatten":
            pooled = self.flatten_proj(rearrange(patches, "b p c -> b (p c)"))
        else:
            pooled = patches.mean(dim=1)
        return self.pool_norm(pooled), patches

    def forward(self, images: Tensor) -> Tensor:
        """Pooled features (b, width) of images (b, 3, h, w): LayerNorm of the mean location
        feature, or with pool='flatten' of a linear map of all locations."""
        return self.encode(images)[0]

    def forward_patches(self, images: Tensor) -> Tensor:
        """Per-location features (b, p, width) of images (b, 3, h, w)."""
        return self.encode(images)[1]
