"""Data sources: what ``data=`` configures. Each gives the trainer a training set, a paired
validation set, optionally a zero-shot set with its prompt templates, and the caption
token budget (max_length)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from ssm.data.files import CsvImageText, WebDatasetImageText
from ssm.data.scenes import ZERO_SHOT_TEMPLATES, SyntheticScenes, zero_shot_set


class ScenesData:
    """The built-in synthetic scenes (no download). Validation pairs use their own seed
    stream and favour held-out (shape, colour) combinations; the zero-shot set is
    single-object scenes labelled by shape and colour. caption_tokens (null or an int up to
    max_length) makes every train and val caption exactly that many tokens long, continuing
    its description of the scene (see ``SyntheticScenes``); zero-shot prompts stay short."""

    def __init__(self, train_size: int = 50_000, val_size: int = 500, zero_shot_size: int = 300,
                 image_size: int = 64, min_objects: int = 1, max_objects: int = 2,
                 verbosity: int = 1, held_out_fraction: float = 0.2, max_length: int = 128,
                 seed: int = 0, caption_tokens: Optional[int] = None):
        if max_length < 2:
            raise ValueError(f"data.max_length must be >= 2, got {max_length}")
        self.scene_args = dict(seed=seed, image_size=image_size, min_objects=min_objects,
                               max_objects=max_objects, verbosity=verbosity,
                               held_out_fraction=held_out_fraction, caption_tokens=caption_tokens)
        self.train_size, self.val_size, self.zero_shot_size = train_size, val_size, zero_shot_size
        self.image_size, self.max_length, self.seed = image_size, max_length, seed
        self.zero_shot_templates = ZERO_SHOT_TEMPLATES
        self.train_dataset()  # SyntheticScenes checks its settings (caption_tokens too) now
        if caption_tokens is not None and caption_tokens > max_length:
            raise ValueError(f"data.caption_tokens ({caption_tokens}) must be <= data.max_length "
                             f"({max_length}): longer captions would be cut")

    def train_dataset(self):
        return SyntheticScenes("train", self.train_size, **self.scene_args)

    def val_dataset(self):
        return SyntheticScenes("val", self.val_size, **self.scene_args)

    def zero_shot_dataset(self):
        if not self.zero_shot_size:
            return None
        return zero_shot_set(self.zero_shot_size, self.seed, self.image_size)


class CsvData:
    """open_clip-style CSVs: by default tab-separated ``filepath`` and ``title`` columns;
    ``img_key``, ``caption_key`` and ``sep`` name other columns and separators."""

    zero_shot_templates = None

    def __init__(self, train_csv: str, val_csv: str, image_size: int = 64,
                 max_length: int = 128, img_key: str = "filepath", caption_key: str = "title",
                 sep: str = "\t"):
        self.train_csv, self.val_csv = train_csv, val_csv
        self.image_size, self.max_length = image_size, max_length
        self.columns = dict(img_key=img_key, caption_key=caption_key, sep=sep)

    def train_dataset(self):
        return CsvImageText(self.train_csv, image_size=self.image_size, **self.columns)

    def val_dataset(self):
        return CsvImageText(self.val_csv, image_size=self.image_size, **self.columns)

    def zero_shot_dataset(self):
        return None


class WebDatasetData:
    """WebDataset tar shards (jpg/png + txt) for training; validation from shards or a CSV
    (read with ``img_key``, ``caption_key`` and ``sep``, as ``data=csv`` reads its files)."""

    zero_shot_templates = None

    def __init__(self, train_urls: Union[str, Sequence[str]], val_urls: Union[str, Sequence[str], None] = None,
                 val_csv: Optional[str] = None, image_size: int = 64, max_length: int = 128,
                 shuffle_buffer: int = 1000, seed: int = 0, img_key: str = "filepath",
                 caption_key: str = "title", sep: str = "\t"):
        if (val_urls is None) == (val_csv is None):
            raise ValueError("data needs exactly one of val_urls and val_csv")
        self.train_urls, self.val_urls, self.val_csv = train_urls, val_urls, val_csv
        self.image_size, self.max_length = image_size, max_length
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.columns = dict(img_key=img_key, caption_key=caption_key, sep=sep)

    def train_dataset(self):
        return WebDatasetImageText(self.train_urls, image_size=self.image_size,
                                   shuffle_buffer=self.shuffle_buffer, seed=self.seed)

    def val_dataset(self):
        if self.val_csv is not None:
            return CsvImageText(self.val_csv, image_size=self.image_size, **self.columns)
        return WebDatasetImageText(self.val_urls, image_size=self.image_size)

    def zero_shot_dataset(self):
        return None
