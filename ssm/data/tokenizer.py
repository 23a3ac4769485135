"""Byte-level tokenizer: UTF-8 bytes plus BOS, EOS and PAD. Nothing to download or train.

Token ids 0..255 are the byte values themselves, so any Unicode string round-trips exactly.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

Tokens = Union[Sequence[int], Tensor]


def _is_continuation(byte: int) -> bool:
    # UTF-8 continuation bytes look like 0b10xxxxxx; a character never starts with one.
    return byte & 0xC0 == 0x80


def _truncate_utf8(data: bytes, limit: int) -> bytes:
    """The longest prefix of ``data`` of at most ``limit`` bytes that ends on a character boundary."""
    if len(data) <= limit:
        return data
    cut = limit
    while cut > 0 and _is_continuation(data[cut]):
        cut -= 1
    return data[:cut]


def check_batch(texts, max_length, specials: int) -> None:
    """The checks every tokenizer's ``batch_encode`` makes: a non-empty list of str, and a
    max_length that holds the ``specials`` (BOS, EOS) a row always keeps."""
    if isinstance(max_length, bool) or not isinstance(max_length, int):
        raise TypeError(f"max_length must be an int, got {type(max_length).__name__}")
    if max_length < max(1, specials):
        raise ValueError(f"max_length must be >= {max(1, specials)} to hold the special "
                         f"tokens (BOS, EOS) of every row, got {max_length}")
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("texts must be a non-empty list of str")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")


def pad_rows(rows: list[list[int]], length: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad id lists to (b, length): tokens long and mask bool (True on real ids)."""
    tokens = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for row, ids in enumerate(rows):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = True
    return tokens, mask


class Tokenizer:
    """What the trainer and evaluator use of a tokenizer: ``vocab_size``, ``bos_id``,
    ``eos_id``, ``pad_id``, ``batch_encode(texts, max_length) -> (tokens, mask)``,
    ``decode``, and ``export(directory)`` (a config that rebuilds it). Subclasses define
    ``batch_encode`` and ``decode``; decoding a batch and checking ids are shared."""

    vocab_size: int

    def batch_decode(self, tokens: Union[Tensor, Sequence[Sequence[int]]],
                     mask: Optional[Tensor] = None, errors: str = "replace") -> list[str]:
        """One string per row of tokens (b, l); rows are cut to ``mask`` (b, l) when given."""
        if isinstance(tokens, Tensor):
            if tokens.dim() != 2:
                raise ValueError(f"tokens must have shape (b, l), got {tuple(tokens.shape)}")
            rows = list(tokens)
        elif isinstance(tokens, (list, tuple)):
            rows = list(tokens)
        else:
            raise TypeError(f"tokens must be a tensor or a list of lists, got {type(tokens).__name__}")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise TypeError("mask must be a bool tensor of shape (b, l)")
            lengths = [len(row) for row in rows]
            if mask.dim() != 2 or mask.shape[0] != len(rows) or any(n != mask.shape[1] for n in lengths):
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match tokens (b, l)")
            rows = [[int(t) for t, keep in zip(row, m.tolist()) if keep] for row, m in zip(rows, mask)]
        return [self.decode(row, errors=errors) for row in rows]

    def _as_id_list(self, tokens: Tokens, name: str) -> list[int]:
        if isinstance(tokens, Tensor):
            if tokens.dim() != 1:
                raise ValueError(f"{name} must be 1-D, got shape {tuple(tokens.shape)}")
            if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
                raise TypeError(f"{name} must be an integer tensor, got {tokens.dtype}")
            ids = tokens.tolist()
        elif isinstance(tokens, (list, tuple)):
            ids = list(tokens)
            for i in ids:
                if isinstance(i, bool) or not isinstance(i, int):
                    raise TypeError(f"{name} must contain ints, got {type(i).__name__}")
        else:
            raise TypeError(f"{name} must be a list of ints or a 1-D tensor, got {type(tokens).__name__}")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"{name} contains id {bad[0]} outside [0, vocab_size = {self.vocab_size})")
        return ids


class ByteTokenizer(Tokenizer):
    """Bytes 0..255, then ``bos_id = 256``, ``eos_id = 257``, ``pad_id = 258``; ``vocab_size = 259``."""

    bos_id = 256
    eos_id = 257
    pad_id = 258
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        """``[BOS] + UTF-8 bytes of text + [EOS]``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [self.bos_id, *text.encode("utf-8"), self.eos_id]

    def batch_encode(self, texts: list[str], max_length: int) -> tuple[Tensor, Tensor]:
        """Encode, truncate and right-pad a batch.

        Returns tokens (b, l) long and mask (b, l) bool, True on real tokens (BOS and EOS
        included), where l = min(max_length, longest encoded text). A text that does not fit
        keeps its BOS and EOS and loses whole characters from the end, never part of one.
        """
        check_batch(texts, max_length, specials=2)
        encoded = [text.encode("utf-8") for text in texts]
        # The width is fixed by max_length, not by the rows after trimming partial characters,
        # so a batch of long texts always comes out (b, max_length).
        length = min(max_length, max(len(data) for data in encoded) + 2)
        bodies = [_truncate_utf8(data, length - 2) for data in encoded]
        return pad_rows([[self.bos_id, *body, self.eos_id] for body in bodies], length,
                        self.pad_id)

    def export(self, directory) -> dict:
        """What rebuilds this tokenizer (for a model export): nothing to write."""
        return {"_target_": "ssm.data.ByteTokenizer"}

    def decode(self, tokens: Tokens, errors: str = "replace") -> str:
        """Text from token ids (a list of ints or a 1-D integer tensor), dropping BOS/EOS/PAD.

        ``errors`` goes to ``bytes.decode``: the default ``"replace"`` turns byte sequences
        that are not valid UTF-8 (possible in sampled ids, never in ``encode`` output) into
        U+FFFD; ``"strict"`` raises instead.
        """
        ids = self._as_id_list(tokens, "tokens")
        data = bytes(i for i in ids if i < 256)
        return data.decode("utf-8", errors=errors)
