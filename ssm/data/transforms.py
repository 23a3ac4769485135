"""Image decoding and resizing in plain torch (torchvision does not import beside our torch).

Images are (3, H, W) float32 in [0, 1] throughout; ``S`` is the square output size.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview]


class BadImage(ValueError):
    """An image file that is missing, unreadable, corrupt or truncated."""


def load_image(path_or_bytes: PathOrBytes) -> Tensor:
    """Decode an image file (a path, or its encoded bytes) to RGB (3, H, W) float32 in [0, 1].

    Grey, palette, CMYK and alpha images come out as RGB; alpha is dropped. Raises
    ``BadImage`` naming the file (or the byte count) when it cannot be fully decoded.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source, name = io.BytesIO(bytes(path_or_bytes)), f"<{len(path_or_bytes)} bytes>"
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        source, name = path_or_bytes, os.fspath(path_or_bytes)
    else:
        raise TypeError(f"path_or_bytes must be a path or bytes, got {type(path_or_bytes).__name__}")
    try:
        with Image.open(source) as image:
            # open() only reads the header; convert() decodes every pixel, so a truncated
            # file fails here rather than later as grey padding.
            rgb = image.convert("RGB")
    # Pillow's format plugins raise many exception types on malformed data (OSError,
    # SyntaxError, struct.error, ValueError, DecompressionBombError, ...); all mean "bad file".
    except Exception as exc:
        raise BadImage(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from exc
    # np.array (not asarray) copies, so torch gets a writable buffer. (H, W, 3) uint8.
    pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8))
    return pixels.permute(2, 0, 1).float().div_(255.0).contiguous()


def resize_center_crop(image: Tensor, size: int) -> Tensor:
    """Scale (3, H, W) so its shorter side is ``size``, then cut the central (3, S, S), S = size.

    Antialiased bilinear, so downscaling averages rather than aliases. Aspect ratio is kept;
    what falls outside the centre square of the longer side is dropped.
    """
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not isinstance(image, Tensor) or image.dim() != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) tensor, got {got}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a float tensor in [0, 1], got {image.dtype}")
    _, height, width = image.shape
    if height < 1 or width < 1:
        raise ValueError(f"image has an empty side: {tuple(image.shape)}")

    scale = size / min(height, width)
    # max(): rounding must never leave the longer side short of the crop.
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                              align_corners=False, antialias=True)[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    # Interpolation weights are non-negative, but float rounding can step just past 1.
    return image[:, top:top + size, left:left + size].clamp(0.0, 1.0).contiguous()
