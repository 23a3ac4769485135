"""Evaluation metrics as pure functions on embeddings and scores.

Shapes use b (batch), e (embedding width), k (classes), l (sequence length), m (probe items).
Nothing here trains or holds state except ``BagOfBytesBaseline``, a fitted text-only baseline.

Rank convention, shared by every retrieval number: a query's rank is
``1 + (number of OTHER candidates whose score is >= the true match's score)``, so 1 is best
and ties go against the model. Counting ties optimistically would let a collapsed encoder (every
embedding equal) report R@1 = 1; pessimistically it gets rank b on every query.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["retrieval_ranks", "retrieval_metrics", "class_embeddings", "zero_shot_accuracy",
           "word_order_accuracy", "BagOfBytesBaseline"]

RECALL_AT = (1, 5, 10)


def retrieval_ranks(image_features: Tensor, text_features: Tensor,
                    chunk_size: int = 1024) -> tuple[Tensor, Tensor]:
    """1-based ranks of the true match, ``(t2i, i2t)``, each (b,) long.

    image_features, text_features: (b, e); row i of each is the only match for the other's row i.
    Both are L2-normalised here (in float64), so scores are cosine similarities.
    t2i[j]: text j queries all b images; i2t[i]: image i queries all b texts. Ties count against
    the model (see the module docstring).

    Scores are formed ``chunk_size`` queries at a time, so peak memory is one (chunk_size, b)
    float64 block rather than (b, b): b = 10,000 needs ~80 MB per block at the default.
    """
    _check_features("image_features", image_features)
    _check_features("text_features", text_features)
    if image_features.shape != text_features.shape:
        raise ValueError(f"image_features {tuple(image_features.shape)} and text_features "
                         f"{tuple(text_features.shape)} must have the same shape (b, e)")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    image = F.normalize(image_features.detach().double(), dim=1)
    text = F.normalize(text_features.detach().double(), dim=1)
    return _ranks(text, image, chunk_size), _ranks(image, text, chunk_size)


def retrieval_metrics(image_features: Tensor, text_features: Tensor,
                      chunk_size: int = 1024) -> dict[str, float]:
    """Recall@{1,5,10}, mean and median rank, text-to-image and image-to-text.

    image_features, text_features: (b, e), normalised inside; pair i is the only match for i.
    Keys: ``t2i_r1, t2i_r5, t2i_r10, t2i_mean_rank, t2i_median_rank`` and the same with ``i2t``.
    R@k is the fraction of queries with rank <= k (so 1.0 whenever b <= k). The median of an
    even number of ranks is the mean of the two middle ones (open_clip instead floors it, so
    do not compare the two directly). Ranks and ties: see ``retrieval_ranks``.
    """
    t2i, i2t = retrieval_ranks(image_features, text_features, chunk_size)
    metrics: dict[str, float] = {}
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        for k in RECALL_AT:
            metrics[f"{name}_r{k}"] = (ranks <= k).double().mean().item()
        metrics[f"{name}_mean_rank"] = ranks.double().mean().item()
        metrics[f"{name}_median_rank"] = _median(ranks)
    return metrics


def class_embeddings(encode_text: Callable[[list[str]], Tensor], classes: list[str],
                     templates: Sequence[str]) -> Tensor:
    """CLIP zero-shot prompt ensembling: one unit vector per class, (k, e).

    For each class name, every template (e.g. ``"a photo of a {}."``) is filled in with it and
    the m = len(templates) prompts go to ``encode_text`` in one call, which must return (m, e).
    Each prompt embedding is L2-normalised before averaging, so no template outweighs the others
    by its norm; the mean is renormalised. Runs under ``torch.no_grad``: this is evaluation.
    """
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)):
        raise TypeError(f"classes must be a list of str, got {type(classes).__name__}")
    if isinstance(templates, str):
        # A lone string is a Sequence of characters; iterating it would be a silent bug.
        raise TypeError("templates must be a sequence of str, not a single str")
    templates = list(templates)
    if not classes:
        raise ValueError("classes is empty; need at least one class")
    if not templates:
        raise ValueError("templates is empty; need at least one template")
    for t in templates:
        if not isinstance(t, str):
            raise TypeError(f"templates must contain str, got {type(t).__name__}")
        # A template that ignores its argument gives every class the same prompt.
        if t.format("\x00") == t.format("\x01"):
            raise ValueError(f"template {t!r} has no '{{}}' field for the class name")
    rows = []
    with torch.no_grad():
        for name in classes:
            if not isinstance(name, str):
                raise TypeError(f"classes must contain str, got {type(name).__name__}")
            emb = encode_text([t.format(name) for t in templates])
            if not isinstance(emb, Tensor) or emb.dim() != 2 or emb.shape[0] != len(templates):
                shape = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
                raise ValueError(f"encode_text must return (m, e) with m = {len(templates)} "
                                 f"prompts, got {shape} for class {name!r}")
            rows.append(F.normalize(F.normalize(emb, dim=1).mean(dim=0), dim=0))
    return torch.stack(rows)


def zero_shot_accuracy(image_features: Tensor, class_features: Tensor, labels: Tensor) -> float:
    """Fraction of images whose true class is the unique best match.

    image_features: (b, e); class_features: (k, e); labels: (b,) long in [0, k). Both feature
    sets are L2-normalised here, so the prediction is the argmax of cosine similarity. An image
    whose true class ties with another for the top score counts as wrong: argmax would break
    the tie by index, which rewards class order, not the model.
    """
    _check_features("image_features", image_features)
    _check_features("class_features", class_features)
    if image_features.shape[1] != class_features.shape[1]:
        raise ValueError(f"image_features (b, e) = {tuple(image_features.shape)} and "
                         f"class_features (k, e) = {tuple(class_features.shape)} must share e")
    if not isinstance(labels, Tensor) or labels.dtype != torch.long:
        raise TypeError("labels must be a long tensor of shape (b,)")
    if labels.shape != image_features.shape[:1]:
        raise ValueError(f"labels must have shape (b,) = ({image_features.shape[0]},), "
                         f"got {tuple(labels.shape)}")
    k = class_features.shape[0]
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, k = {k}), got range "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    image = F.normalize(image_features.detach().double(), dim=1)
    classes = F.normalize(class_features.detach().double(), dim=1)
    scores = image @ classes.T  # (b, k)
    labels = labels.to(scores.device)
    true = scores.gather(1, labels[:, None])
    others = scores.scatter(1, labels[:, None], float("-inf"))
    return (true[:, 0] > others.max(dim=1).values).double().mean().item()


def word_order_accuracy(positive_scores: Tensor, negative_scores: Tensor) -> float:
    """Fraction of probe items where the true caption beats its word-order negative.

    positive_scores, negative_scores: (m,), item i pairs the true caption's score with its
    negative's. Strictly higher counts 1, an exact tie 0.5, so a model blind to word order (it
    scores both the same) sits exactly at chance, 0.5.
    """
    for name, t in (("positive_scores", positive_scores), ("negative_scores", negative_scores)):
        _check_finite(name, t)
        if t.dim() != 1:
            raise ValueError(f"{name} must have shape (m,), got {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise ValueError(f"{name} is empty; need at least one probe item")
    if positive_scores.shape != negative_scores.shape:
        raise ValueError(f"positive_scores {tuple(positive_scores.shape)} and negative_scores "
                         f"{tuple(negative_scores.shape)} must have the same length m")
    pos = positive_scores.detach().double()
    neg = negative_scores.detach().double().to(pos.device)
    return ((pos > neg).double() + 0.5 * (pos == neg).double()).mean().item()


class BagOfBytesBaseline:
    """Text-only baseline for the word-order probe.

    A caption is its L2-normalised byte histogram (``vocab_bytes`` = 256 bins; ids >= 256, i.e.
    BOS/EOS/PAD, and masked positions are ignored). ``fit(image_features (b, e), tokens (b, l),
    mask (b, l))`` learns a ridge-regression map W (e, 256) from image features to histograms
    on positive pairs; ``score(image_features, tokens, mask) -> (b,)`` is <image @ W,
    hist(caption)>.

    A word-order negative has the same bytes as its caption, so this baseline scores both
    identically and its probe accuracy is 0.5 by construction: the probe's chance level,
    measured with a real, fitted, order-blind model. ``text_features`` also gives it a
    non-trivial retrieval score through ``retrieval_metrics``.

    The regression has no intercept, and image features are used as given (not normalised),
    the same way in ``fit`` and ``score``.
    """

    def __init__(self, ridge: float = 1e-2, vocab_bytes: int = 256):
        if not ridge > 0:
            # ridge > 0 keeps X^T X + ridge * I invertible even when b < e.
            raise ValueError(f"ridge must be > 0, got {ridge!r}")
        if isinstance(vocab_bytes, bool) or not isinstance(vocab_bytes, int) or vocab_bytes < 1:
            raise ValueError(f"vocab_bytes must be a positive int, got {vocab_bytes!r}")
        self.ridge = float(ridge)
        self.vocab_bytes = vocab_bytes
        self.weight: Tensor | None = None  # W, (e, vocab_bytes), set by fit

    def histograms(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """L2-normalised byte counts, (b, vocab_bytes) float32; an all-special row is all zero."""
        self._check_tokens(tokens, mask)
        keep = mask & (tokens < self.vocab_bytes)
        ids = torch.where(keep, tokens, torch.zeros_like(tokens))
        counts = torch.zeros(tokens.shape[0], self.vocab_bytes, device=tokens.device)
        counts.scatter_add_(1, ids, keep.float())
        return F.normalize(counts, dim=1)

    def fit(self, image_features: Tensor, tokens: Tensor, mask: Tensor) -> "BagOfBytesBaseline":
        """W = (X^T X + ridge I)^-1 X^T H, X the images (b, e), H the histograms (b, 256)."""
        _check_features("image_features", image_features)
        hist = self._histograms_for(image_features, tokens, mask).double()
        x = image_features.detach().double()
        gram = x.T @ x + self.ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
        self.weight = torch.linalg.solve(gram, x.T @ hist.to(x.device)).to(image_features.dtype)
        return self

    def score(self, image_features: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """<image_i @ W, hist(caption_i)> for each pair, (b,)."""
        weight = self._fitted()
        _check_features("image_features", image_features)
        if image_features.shape[1] != weight.shape[0]:
            raise ValueError(f"image_features must have e = {weight.shape[0]} as in fit, "
                             f"got {tuple(image_features.shape)}")
        hist = self._histograms_for(image_features, tokens, mask)
        predicted = image_features.detach().to(weight.dtype) @ weight  # (b, 256)
        return (predicted * hist.to(predicted)).sum(dim=1)

    def text_features(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Captions mapped into image space, histograms @ W.T, L2-normalised: (b, e)."""
        weight = self._fitted()
        hist = self.histograms(tokens, mask)
        return F.normalize(hist.to(weight) @ weight.T, dim=1)

    def _fitted(self) -> Tensor:
        if self.weight is None:
            raise ValueError("BagOfBytesBaseline is not fitted; call fit(...) first")
        return self.weight

    def _histograms_for(self, image_features: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        hist = self.histograms(tokens, mask)
        if hist.shape[0] != image_features.shape[0]:
            raise ValueError(f"image_features has b = {image_features.shape[0]} rows but tokens "
                             f"has {hist.shape[0]}")
        return hist

    @staticmethod
    def _check_tokens(tokens: Tensor, mask: Tensor) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype != torch.long:
            raise TypeError("tokens must be a long tensor of shape (b, l)")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a bool tensor of shape (b, l)")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (b, l), got {tuple(tokens.shape)}")
        if mask.shape != tokens.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must match tokens {tuple(tokens.shape)}")
        if tokens.shape[0] == 0:
            raise ValueError("tokens is empty; need at least one caption")
        if tokens.numel() and tokens.min() < 0:
            raise ValueError(f"tokens must be non-negative ids, got {tokens.min().item()}")


def _ranks(queries: Tensor, candidates: Tensor, chunk_size: int) -> Tensor:
    """Rank of candidate i for query i, (b,) long; queries, candidates: (b, e), unit rows."""
    ranks = []
    for start in range(0, queries.shape[0], chunk_size):
        block = queries[start:start + chunk_size] @ candidates.T  # (c, b)
        rows = torch.arange(block.shape[0], device=block.device)
        # The true score is read from the same block it is compared against, so a candidate
        # equal to the true match ties exactly rather than by the rounding of a second product.
        true = block[rows, start + rows]
        # The true match itself satisfies >=, which supplies the "1 +".
        ranks.append((block >= true[:, None]).sum(dim=1))
    return torch.cat(ranks)


def _median(ranks: Tensor) -> float:
    ordered = ranks.sort().values.double()
    n = ordered.shape[0]
    return ((ordered[(n - 1) // 2] + ordered[n // 2]) / 2).item()


def _check_finite(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor, got {t.dtype}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")


def _check_features(name: str, t: Tensor) -> None:
    _check_finite(name, t)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (b, e), got {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty, shape {tuple(t.shape)}; need b >= 1 and e >= 1")
