"""The task behind ``experiments/caption.py``: caption image files with a trained model.

Each file is decoded to RGB and resized as training data is (``resize_center_crop`` to the
run's data.image_size: shorter side scaled, centre square cut), so any PNG or JPEG works.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from ssm.data import load_image, resize_center_crop
from ssm.decoders import as_strategy
from ssm.tasks.evaluate import load_run


class NoDecoder(ValueError):
    """The checkpoint's model has no caption decoder."""


def load_images(paths: Sequence, image_size: int) -> torch.Tensor:
    """(b, 3, image_size, image_size) in [0, 1] from image files. An unreadable file raises
    ``ssm.data.BadImage`` naming its path."""
    if isinstance(paths, (str, Path)) or not paths:
        raise ValueError(f"images must be a non-empty list of image paths, got {paths!r}")
    return torch.stack([resize_center_crop(load_image(Path(p)), image_size) for p in paths])


def caption_images(checkpoint, images: Sequence, max_new_tokens: Optional[int] = None,
                   strategy="greedy", device: str = "auto") -> list[tuple[str, str]]:
    """[(image path, caption)] for each image file, by the checkpoint's caption decoder.
    max_new_tokens: None means the run's caption budget (data.max_length - 1)."""
    strategy = as_strategy(strategy)
    run, data, target = load_run(Path(checkpoint), device)
    cfg, model = run.cfg, run.model
    if model.decoder is None:
        raise NoDecoder(f"checkpoint {checkpoint} has no caption decoder: its run's loss has "
                        f"caption weight {cfg.loss.get('caption', 0)}; caption with a run "
                        "trained with loss=caption or loss=blip (e.g. +experiment=captioning)")
    pixels = load_images(images, cfg.data.image_size).to(target)
    generation = model.generate(pixels, max_new_tokens or data.max_length - 1, strategy,
                                tokenizer=run.tokenizer)
    return [(str(path), text) for path, text in zip(images, generation.texts)]
