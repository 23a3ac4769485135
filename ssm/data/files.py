"""Image-text pairs from files: a CSV of paths and captions, or WebDataset tar shards.

Both datasets give ``dict(image=(3, S, S) float32 in [0, 1], caption=str)`` per sample, or
``None`` for a sample whose image is missing or will not decode: one bad file among millions
should cost one sample, not a run. ``collate_image_text`` drops the ``None`` items and reports
how many it dropped; ``BadSampleTracker`` turns a high rate of them into an error, because
that means a broken dataset rather than a few broken files. A CSV caption that is not valid
UTF-8 is such a bad sample too. Skips are logged as warnings (the first few of each dataset
one by one, naming the file; the tracker reports the running count).
"""
from __future__ import annotations

import csv
import logging
import os
import random
from typing import Optional, Sequence, Union

import torch
import torch.distributed as dist
import webdataset as wds
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ssm.data.transforms import BadImage, load_image, resize_center_crop

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")


class _SkipLog:
    """Warns about the first ``shown`` samples a dataset skips, one line each naming the
    file, then once that later skips are counted but not listed (a broken shard must not
    flood the console). Each DataLoader worker holds its own copy."""

    def __init__(self, shown: int = 5):
        self.shown, self.count = shown, 0

    def __call__(self, message: str, *args) -> None:
        self.count += 1
        if self.count <= self.shown:
            log.warning(message, *args)
        else:
            if self.count == self.shown + 1:
                log.warning("more samples skipped: counted (bad_samples in metrics.jsonl and "
                            "results.json) but no longer listed one by one")
            log.debug(message, *args)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class CsvImageText(Dataset):
    """Rows of a delimited text file with a header, one image path and one caption per row.

    open_clip's layout by default: tab-separated, columns ``filepath`` and ``title``. Relative
    paths are relative to the CSV file's folder (not the working directory). The file is read
    once, at construction; a missing column, an empty file or a short row raises ValueError
    there. A caption that is not valid UTF-8 does not: its row becomes a bad sample, warned
    about now with the file and line, and skipped and counted when drawn. Images are read
    lazily: ``self[i]`` is ``dict(image=(3, S, S), caption=str)`` with S = image_size, or
    ``None`` when that image is missing or corrupt or the caption unreadable.
    ``sep`` is one character; the two characters ``\\t`` also mean a tab (command lines).
    """

    def __init__(self, csv_path: Union[str, os.PathLike], image_size: int = 64,
                 img_key: str = "filepath", caption_key: str = "title", sep: str = "\t"):
        self.image_size = _check_int("image_size", image_size, 1)
        if sep == "\\t":
            sep = "\t"
        if not isinstance(sep, str) or len(sep) != 1:
            raise ValueError(f"sep must be a single character, got {sep!r}")
        for name, key in (("img_key", img_key), ("caption_key", caption_key)):
            if not isinstance(key, str) or not key:
                raise ValueError(f"{name} must be a column name, got {key!r}")
        self.csv_path = os.path.abspath(os.fspath(csv_path))
        self._skip_log = _SkipLog()
        # Resolved now, so a later chdir (e.g. by Hydra) cannot change what the paths mean.
        folder = os.path.dirname(self.csv_path)
        # surrogateescape: bytes that are not UTF-8 survive as lone surrogates, so one bad
        # caption costs its row, not the file; utf-8-sig drops a byte-order mark.
        with open(self.csv_path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f, delimiter=sep)
            if reader.fieldnames is None:
                raise ValueError(f"{self.csv_path} is empty: expected a header row with "
                                 f"columns {img_key!r} and {caption_key!r}")
            for key in (img_key, caption_key):
                if key not in reader.fieldnames:
                    raise ValueError(f"{self.csv_path} has no column {key!r}; its header has "
                                     f"{reader.fieldnames} (separator {sep!r})")
            self.paths: list[str] = []
            self.captions: list[Optional[str]] = []  # None: not valid UTF-8
            self.lines: list[int] = []               # each row's line in the file
            for row in reader:
                path, caption = row[img_key], row[caption_key]
                if path is None or caption is None:
                    raise ValueError(f"{self.csv_path} line {reader.line_num}: too few fields "
                                     f"for columns {img_key!r} and {caption_key!r}")
                problem = _undecodable(caption)
                self.paths.append(os.path.join(folder, path))  # join keeps absolute paths as they are
                self.captions.append(None if problem else caption)
                self.lines.append(reader.line_num)
                if problem:
                    self._skip_log("%s line %d: caption is not valid UTF-8 (%s); the sample "
                                   "is skipped and counted", self.csv_path, reader.line_num,
                                   problem)
        if not self.paths:
            raise ValueError(f"{self.csv_path} has a header but no rows")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Optional[dict]:
        if self.captions[index] is None:
            return None  # warned about, with its line, when the file was read
        try:
            image = load_image(self.paths[index])
        except BadImage as exc:
            self._skip_log("skipping line %d of %s: %s", self.lines[index], self.csv_path, exc)
            return None
        return dict(image=resize_center_crop(image, self.image_size), caption=self.captions[index])


def _undecodable(text: str) -> str:
    """'' when ``text`` was valid UTF-8, else what is wrong (it was read with
    surrogateescape, which keeps each undecodable byte as a lone surrogate)."""
    raw = text.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte 0x{raw[exc.start]:02x} at byte {exc.start}: {exc.reason}"
    return ""


def _is_local(url: str) -> bool:
    """A plain file path (not pipe:..., http://..., s3://...), whose existence can be checked."""
    return not url.startswith("pipe:") and "://" not in url and not url.startswith("file:")


def _distributed_rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torch.distributed if it is up, else torchrun's RANK/WORLD_SIZE."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


class WebDatasetImageText(IterableDataset):
    """WebDataset tar shards: members ``KEY.jpg`` / ``KEY.jpeg`` / ``KEY.png`` plus ``KEY.txt``.

    ``urls`` is a list of shard paths/URLs or one string in WebDataset's brace notation
    (``"data/shard-{000000..000099}.tar"``, several joined by ``::``). Yields
    ``dict(image=(3, S, S), caption=str)``, or ``None`` for a sample whose image will not
    decode or that lacks an image or a caption. A tar file that cannot be read at all raises.

    Splitting, so that every shard is read exactly once per epoch across the whole job:
    rank ``r`` of ``world_size`` takes shards ``r, r + world_size, ...`` of the (optionally
    shuffled) shard list, then DataLoader worker ``w`` of ``n`` takes every ``n``-th of those
    starting at ``w``. ``rank`` and ``world_size`` default to torch.distributed's when it is
    initialised at construction, else to the ``RANK``/``WORLD_SIZE`` environment variables
    (set by torchrun), else 0 and 1. Shards are the unit of splitting: ranks (and workers)
    with fewer shards give fewer samples, so give every process the same number of shards
    of similar size, or bound the steps per epoch, lest a rank's DDP all-reduce wait forever.

    With ``shuffle_buffer > 0`` the shard order is shuffled (the same way on every rank, from
    ``seed`` and the epoch, so the split stays disjoint) and samples pass through a shuffle
    buffer of that many samples. Call ``set_epoch`` before each epoch for a new order; it
    reaches DataLoader workers only when they are started afresh (not persistent_workers).
    """

    def __init__(self, urls: Union[str, Sequence[str]], image_size: int = 64,
                 shuffle_buffer: int = 0, seed: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        self.image_size = _check_int("image_size", image_size, 1)
        self.shuffle_buffer = _check_int("shuffle_buffer", shuffle_buffer, 0)
        self.seed = _check_int("seed", seed, 0)
        self.shards = self._expand(urls)
        if (rank is None) != (world_size is None):
            raise ValueError(f"give rank and world_size together or neither, got rank={rank}, "
                             f"world_size={world_size}")
        if rank is None:
            rank, world_size = _distributed_rank_and_world()
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be < world_size = {self.world_size}, got {self.rank}")
        missing = [url for url in self.shards if _is_local(url) and not os.path.isfile(url)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.shards)} shards do not exist: "
                                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if len(self.shards) < self.world_size:
            raise ValueError(f"{len(self.shards)} shards cannot be split over {self.world_size} "
                             f"ranks: some ranks would get no data")
        self.epoch = 0
        self._skip_log = _SkipLog()

    @staticmethod
    def _expand(urls) -> list[str]:
        if isinstance(urls, (str, os.PathLike)):
            shards = wds.shardlists.expand_urls(os.fspath(urls))
        elif isinstance(urls, (list, tuple)):
            shards = [os.fspath(url) for url in urls]
        else:
            raise TypeError(f"urls must be a str or a list of str, got {type(urls).__name__}")
        if not shards:
            raise ValueError("urls names no shards")
        return shards

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_int("epoch", epoch, 0)

    def shards_for(self, worker: int = 0, num_workers: int = 1) -> list[str]:
        """The shards that DataLoader worker ``worker`` of ``num_workers`` on this rank reads."""
        shards = list(self.shards)
        if self.shuffle_buffer > 0:
            # Same seed on every rank: they must agree on the order before taking their slices.
            random.Random(f"shards-{self.seed}-{self.epoch}").shuffle(shards)
        return shards[self.rank::self.world_size][worker::num_workers]

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        samples = self._read(self.shards_for(worker, num_workers))
        if self.shuffle_buffer > 0:
            rng = random.Random(f"samples-{self.seed}-{self.epoch}-{self.rank}-{worker}")
            samples = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)
        for sample in samples:
            yield self._decode(sample)

    @staticmethod
    def _read(shards: list[str]):
        """Raw samples, dict(__key__, __url__, png=bytes, txt=bytes, ...), shard after shard."""
        for url in shards:
            # Opened here rather than by wds.tarfile_samples, which leaves each shard's file
            # (or download pipe) for the garbage collector to close.
            with wds.gopen(url) as stream:
                members = wds.tariterators.tar_file_expander([dict(url=url, stream=stream)])
                yield from wds.tariterators.group_by_keys(members)

    def _decode(self, sample: dict) -> Optional[dict]:
        where = f"{sample.get('__key__')} in {sample.get('__url__')}"
        data = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
        if data is None or "txt" not in sample:
            self._skip_log("skipping sample %s: no image or no txt (members: %s)", where,
                           sorted(k for k in sample if not k.startswith("__")))
            return None
        try:
            image = load_image(data)
            # Caption files are usually written with a trailing newline that is not caption.
            caption = sample["txt"].decode("utf-8").strip()
        except (BadImage, UnicodeDecodeError) as exc:
            self._skip_log("skipping sample %s: %s", where, exc)
            return None
        return dict(image=resize_center_crop(image, self.image_size), caption=caption)


class TooManyBadSamples(RuntimeError):
    """More of the data failed to load than the run allows."""


class BadSampleTracker:
    """Counts skipped samples; raises when too many are bad.

    Counts are cumulative over the run. ``update`` raises ``TooManyBadSamples`` once at least
    ``min_seen`` samples have been seen and more than ``max_bad_fraction`` of them were bad;
    ``min_seen`` keeps an unlucky first batch from ending a run. Skips are reported as they
    happen, rate-limited: a warning at the first bad sample and each time the count doubles.
    """

    def __init__(self, max_bad_fraction: float = 0.1, min_seen: int = 20):
        if isinstance(max_bad_fraction, bool) or not isinstance(max_bad_fraction, (int, float)):
            raise TypeError("max_bad_fraction must be a number, got "
                            f"{type(max_bad_fraction).__name__}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction = float(max_bad_fraction)
        self.min_seen = _check_int("min_seen", min_seen, 0)
        self._good = 0
        self._bad = 0
        self._next_report = 1  # the bad count at which the next warning goes out

    @property
    def seen(self) -> int:
        return self._good + self._bad

    @property
    def bad(self) -> int:
        return self._bad

    @property
    def fraction(self) -> float:
        """bad / seen, 0.0 before anything was seen."""
        return self._bad / self.seen if self.seen else 0.0

    def state_dict(self) -> dict:
        """Counts to checkpoint, so a resumed run keeps counting where it stopped."""
        return {"good": self._good, "bad": self._bad}

    def load_state_dict(self, state: dict) -> None:
        self._good, self._bad = int(state["good"]), int(state["bad"])
        self._next_report = 2 * self._bad if self._bad else 1

    def update(self, n_good: int, n_bad: int) -> None:
        self._good += _check_int("n_good", n_good, 0)
        self._bad += _check_int("n_bad", n_bad, 0)
        if n_bad and self._bad >= self._next_report:
            log.warning("bad samples skipped so far: %d of %d seen (%.2f%%); the run stops "
                        "above max_bad_fraction = %.2f%%", self._bad, self.seen,
                        100 * self.fraction, 100 * self.max_bad_fraction)
            self._next_report = 2 * self._bad
        if self.seen >= self.min_seen and self.fraction > self.max_bad_fraction:
            raise TooManyBadSamples(
                f"{self.bad} of {self.seen} samples were bad ({self.fraction:.2%}), more than "
                f"max_bad_fraction = {self.max_bad_fraction:.2%}: check the dataset's files")


def collate_image_text(items: list[Optional[dict]], tokenizer, max_length: int) -> dict:
    """Batch dataset items, dropping the ``None`` ones.

    Returns ``images`` (b, 3, S, S), ``tokens`` (b, l) long, ``mask`` (b, l) bool,
    ``captions`` (b strings) and ``n_bad``, the number of ``None`` items dropped. When every
    item is ``None``, b = 0 (images are (0, 3, 0, 0), tokens and mask (0, 0)): skip the batch.
    Use with a DataLoader as ``collate_fn=functools.partial(collate_image_text,
    tokenizer=tokenizer, max_length=...)``.
    """
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"items must be a list, got {type(items).__name__}")
    good = [item for item in items if item is not None]
    n_bad = len(items) - len(good)
    if not good:
        return dict(images=torch.zeros(0, 3, 0, 0), tokens=torch.zeros(0, 0, dtype=torch.long),
                    mask=torch.zeros(0, 0, dtype=torch.bool), captions=[], n_bad=n_bad)
    captions = [item["caption"] for item in good]
    tokens, mask = tokenizer.batch_encode(captions, max_length)
    images: Tensor = torch.stack([item["image"] for item in good])
    return dict(images=images, tokens=tokens, mask=mask, captions=captions, n_bad=n_bad)
