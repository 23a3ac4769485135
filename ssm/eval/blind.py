"""A blind (text-only) baseline that is allowed to succeed: a word n-gram language model
of the training captions, which prefers the more plausible of a probe's two captions.

SugarCrepe showed that such caption-only models solve many negatives of older
compositional benchmarks: a negative that reads oddly (an attribute pair never seen in
training, a count that is rare) gives itself away without the image. A probe category
where this model is far above chance measures text priors, not grounding, and the
reports flag it (``bias_verdict``).

The model: words, numbers and punctuation as tokens; interpolated absolute discounting
(Ney et al.) from the n-gram down to an add-one unigram over the training vocabulary plus
an unknown word. It is fitted on captions of the *training* split only
(``fit_on_training_captions``); scoring a pair needs no image and no other caption.
What it cannot see: consistency between distant sentences (a count against the number
of paragraphs, a relation against two stated regions). It is a fast, deterministic floor
for blind success, not a ceiling.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Iterable, Sequence

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
BIAS_MARGIN = 0.1  # a category is "biased" when the blind model beats chance by this much


def words(caption: str) -> list[str]:
    """The caption's tokens: lowercase words, numbers and single punctuation marks."""
    return _TOKEN.findall(caption.lower())


class NGramCaptionModel:
    """Word n-gram LM: ``fit(captions)``, then ``log_prob(caption)`` (natural log)."""

    def __init__(self, order: int = 3, discount: float = 0.75):
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an int >= 1, got {order!r}")
        if not 0 < discount < 1:
            raise ValueError(f"discount must lie in (0, 1), got {discount!r}")
        self.order, self.discount = order, discount
        self.counts: list[dict] = []      # counts[k][history] = Counter of next words
        self.unigrams: Counter = Counter()
        self.vocabulary: set[str] = set()
        self.n_captions = 0

    def fit(self, captions: Iterable[str]) -> "NGramCaptionModel":
        self.counts = [defaultdict(Counter) for _ in range(self.order)]
        self.unigrams, self.n_captions = Counter(), 0
        for caption in captions:
            if not isinstance(caption, str):
                raise TypeError(f"captions must be str, got {type(caption).__name__}")
            tokens = [BOS] * (self.order - 1) + words(caption) + [EOS]
            self.n_captions += 1
            for t in range(self.order - 1, len(tokens)):
                for k in range(1, self.order):  # history lengths 1 .. order - 1
                    self.counts[k][tuple(tokens[t - k:t])][tokens[t]] += 1
                self.unigrams[tokens[t]] += 1
        if not self.n_captions:
            raise ValueError("captions is empty: fit needs at least one training caption")
        self.vocabulary = set(self.unigrams) | {UNK}
        self._total = sum(self.unigrams.values())
        return self

    def _prob(self, history: tuple, word: str) -> float:
        if word not in self.vocabulary:
            word = UNK
        p = (self.unigrams[word] + 1) / (self._total + len(self.vocabulary))
        for k in range(1, len(history) + 1):  # interpolate upwards from the unigram
            following = self.counts[k].get(history[-k:])
            if not following:
                break
            total = sum(following.values())
            seen = max(following[word] - self.discount, 0) / total
            p = seen + self.discount * len(following) / total * p
        return p

    def log_prob(self, caption: str) -> float:
        """Natural-log probability of the caption's tokens and its end."""
        if not self.n_captions:
            raise ValueError("NGramCaptionModel is not fitted; call fit(captions) first")
        tokens = [BOS] * (self.order - 1) + words(caption) + [EOS]
        return sum(math.log(self._prob(tuple(tokens[t - self.order + 1:t]), tokens[t]))
                   for t in range(self.order - 1, len(tokens)))

    def prefers_first(self, first: str, second: str) -> float:
        """1 when ``first`` is more probable, 0 when ``second`` is, 0.5 on a tie: the blind
        model's probe outcome when ``first`` is the true caption."""
        a, b = self.log_prob(first), self.log_prob(second)
        return 1.0 if a > b else (0.5 if a == b else 0.0)


def fit_on_training_captions(train_dataset, n_captions: int = 2000,
                             order: int = 3) -> NGramCaptionModel:
    """The blind model fitted on the captions of items 0 .. n_captions - 1 of a *training*
    split (``train_dataset.split == "train"``; ``describe(i)`` gives an item's caption
    without rendering its image). Any other split is refused: the baseline must not see
    the evaluation captions."""
    split = getattr(train_dataset, "split", None)
    if split != "train":
        raise ValueError(f"the blind baseline is fitted on the training split only; got a "
                         f"dataset with split={split!r}")
    if not hasattr(train_dataset, "describe"):
        raise TypeError(f"{type(train_dataset).__name__} has no describe(index): its captions "
                        "cannot be read without loading images")
    count = min(n_captions, len(train_dataset))
    return NGramCaptionModel(order).fit(train_dataset.describe(i)["caption"]
                                        for i in range(count))


def bias_verdict(accuracy: float, low: float, chance: float = 0.5,
                 margin: float = BIAS_MARGIN) -> str:
    """"biased" when the blind model's accuracy is at least ``margin`` above chance and the
    lower end of its confidence interval is above chance; else "ok"."""
    if math.isnan(accuracy):
        return "n/a"
    return "biased" if accuracy >= chance + margin and low > chance else "ok"


def blind_outcomes(model: NGramCaptionModel, pairs: Sequence[tuple[str, str]]) -> list[float]:
    """The blind model's outcome (1, 0.5 or 0) on each (true, negative) pair."""
    return [model.prefers_first(true, negative) for true, negative in pairs]
