"""A Hugging Face tokenizer from a local directory, behaving as the byte tokenizer does.

Rows are ``[BOS] + ids + [EOS]`` (each special optional), right-padded with ``pad_id`` and
masked; a text that does not fit keeps its BOS and EOS and loses whole tokens from the end,
never part of a character (a byte-level BPE can split one character over two tokens; such a
pair is kept or dropped together). Needs the ``transformers`` package (``pip install -e
".[hf]"``) and a fast tokenizer (``tokenizer.json``), as every Mamba LM ships.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import Tensor

from ssm.data.tokenizer import Tokenizer, Tokens, check_batch, pad_rows


class HFTokenizer(Tokenizer):
    """``AutoTokenizer.from_pretrained(path, local_files_only=True)`` with the interface of
    ``ByteTokenizer``. ``vocab_size`` counts added tokens too (``len(tokenizer)``);
    ``pad_id`` is the tokenizer's pad token, else its EOS (padding is masked anyway)."""

    def __init__(self, path: Optional[str], add_bos: bool = True, add_eos: bool = True):
        if path is None:
            raise ValueError("tokenizer.path is required: a local directory holding a Hugging "
                             "Face tokenizer (tokenizer.json). It defaults to "
                             "model.text_encoder.path, where a pretrained model's is usually")
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer directory {folder} does not exist")
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ImportError("tokenizer=hf needs the transformers package: "
                              "pip install -e '.[hf]'") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds; all mean "not loadable"
            raise ValueError(f"{folder} does not load as a Hugging Face tokenizer: "
                             f"{type(exc).__name__}: {exc}") from exc
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{folder} holds a slow tokenizer; a fast one (tokenizer.json) "
                             "is needed, for its character offsets")
        self.path, self.add_bos, self.add_eos = folder, bool(add_bos), bool(add_eos)
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.bos_id, self.eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        for wanted, name, token_id in ((add_bos, "bos", self.bos_id),
                                       (add_eos, "eos", self.eos_id)):
            if wanted and token_id is None:
                raise ValueError(f"add_{name}=true but the tokenizer in {folder} has no "
                                 f"{name.upper()} token; set tokenizer.add_{name}=false")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_id if self.eos_id is not None else 0)
        self.specials = int(self.add_bos) + int(self.add_eos)

    def _frame(self, body: list[int]) -> list[int]:
        return [self.bos_id] * self.add_bos + body + [self.eos_id] * self.add_eos

    def encode(self, text: str) -> list[int]:
        """``[BOS] + ids of text + [EOS]``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._frame(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def batch_encode(self, texts: list[str], max_length: int) -> tuple[Tensor, Tensor]:
        """tokens (b, l) long and mask (b, l) bool, l = min(max_length, longest row), as
        ``ByteTokenizer.batch_encode``."""
        check_batch(texts, max_length, self.specials)
        encoded = self.tokenizer(list(texts), add_special_tokens=False,
                                 return_offsets_mapping=True)
        length = min(max_length, max(len(ids) for ids in encoded["input_ids"]) + self.specials)
        rows = [self._frame(_truncate_tokens(ids, offsets, length - self.specials))
                for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"])]
        return pad_rows(rows, length, self.pad_id)

    def decode(self, tokens: Tokens, errors: str = "replace") -> str:
        """Text from ids, special tokens dropped. Byte sequences that are not valid UTF-8
        come out as U+FFFD (the tokenizer's own decoder; ``errors`` must be "replace")."""
        if errors != "replace":
            raise ValueError(f"HFTokenizer.decode supports errors='replace' only, got {errors!r}")
        ids = self._as_id_list(tokens, "tokens")
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def export(self, directory) -> dict:
        """Write the tokenizer's files into ``directory``; the config that rebuilds it."""
        self.tokenizer.save_pretrained(str(directory))
        return {"_target_": "ssm.data.HFTokenizer", "path": str(directory),
                "add_bos": self.add_bos, "add_eos": self.add_eos}


def _truncate_tokens(ids: list[int], offsets: list, limit: int) -> list[int]:
    """The longest prefix of at most ``limit`` ids that does not end inside a character:
    a token whose character span overlaps the next token's shares a character with it."""
    if len(ids) <= limit:
        return list(ids)
    cut = limit
    while cut > 0 and offsets[cut - 1][1] > offsets[cut][0]:
        cut -= 1
    return list(ids[:cut])
