"""The needle-position retrieval test on dense scenes (``ssm.data.dense``).

Each query is an item's dense caption with five candidate images: the true scene and four
distractors, each differing from it in exactly one attribute (colour, shape, size,
position) of one object, the needle. The needle is the object described first, in the
middle or last, so accuracy against that position shows how much of a long caption an
encoder reads (a truncated tower never sees a late needle; a causal last-token pool must
carry an early one through the whole caption). A query is answered correctly when the
true image scores strictly above all four distractors (chance 1/5); per attribute, when
it beats that distractor (chance 1/2).
"""
from __future__ import annotations

from typing import Callable

import torch

from ssm.data.dense import NEEDLE_ATTRIBUTES, NEEDLE_POSITIONS, paragraph_spans

CHANCE = 1 / (1 + len(NEEDLE_ATTRIBUTES))
# Upper edges (bytes) of the caption-length bins the reports use.
LENGTH_BINS = (400, 700, 1000, 1400, 2000)


def length_bin(n_bytes: int) -> str:
    """The label of the caption-length bin holding n_bytes, e.g. "400-700"."""
    low = 0
    for high in LENGTH_BINS:
        if n_bytes <= high:
            return f"{low}-{high}"
        low = high
    return f">{LENGTH_BINS[-1]}"


def needle_test(dataset, n_items: int, encode_text: Callable, encode_images: Callable,
                batch_size: int = 16) -> tuple[dict, list[dict]]:
    """Run the test on items 0 .. n_items - 1 of a DenseScenes split.

    encode_text(list of str) -> (m, e) and encode_images((m, 3, s, s)) -> (m, e) give
    L2-normalised features. Returns (metrics, per-query records). Metrics: ``needle_acc``
    (all queries), ``needle_acc_{position}``, ``needle_acc_{attribute}`` (pairwise),
    ``needle_queries`` and ``needle_chance``. A record: index, position, caption bytes,
    objects, the needle paragraph's start byte, correct (0/1) and the per-attribute
    outcomes.
    """
    if not hasattr(dataset, "needle"):
        raise TypeError(f"{type(dataset).__name__} has no needle(index): the needle test needs "
                        "dense scenes (ssm.data.dense.DenseScenes)")
    records = []
    count = min(n_items, len(dataset))
    for start in range(0, count, batch_size):
        tests = [dataset.needle(i) for i in range(start, min(start + batch_size, count))]
        text = encode_text([t["caption"] for t in tests])                       # (q, e)
        # Per item: the true image, then positions x attributes distractors, in order.
        images = torch.stack([image for t in tests for image in _candidates(t)])
        per_item = 1 + len(NEEDLE_POSITIONS) * len(NEEDLE_ATTRIBUTES)
        scores = (encode_images(images).reshape(len(tests), per_item, -1)
                  * text[:, None, :]).sum(-1)                                   # (q, per_item)
        for row, test in enumerate(tests):
            records += _records(start + row, test, scores[row])
    metrics = {"needle_queries": len(records), "needle_chance": CHANCE}
    if records:
        metrics["needle_acc"] = _mean(r["correct"] for r in records)
        for position in NEEDLE_POSITIONS:
            metrics[f"needle_acc_{position}"] = _mean(r["correct"] for r in records
                                                      if r["position"] == position)
        for attribute in NEEDLE_ATTRIBUTES:
            metrics[f"needle_acc_{attribute}"] = _mean(r["attributes"][attribute]
                                                       for r in records)
    return metrics, records


def _candidates(test: dict) -> list[torch.Tensor]:
    return [test["image"]] + [test["distractors"][p][a] for p in NEEDLE_POSITIONS
                              for a in NEEDLE_ATTRIBUTES]


def _records(index: int, test: dict, scores: torch.Tensor) -> list[dict]:
    true, spans = float(scores[0]), paragraph_spans(test["caption"])
    out = []
    for k, position in enumerate(NEEDLE_POSITIONS):
        block = scores[1 + k * len(NEEDLE_ATTRIBUTES): 1 + (k + 1) * len(NEEDLE_ATTRIBUTES)]
        beats = {a: int(true > float(s)) for a, s in zip(NEEDLE_ATTRIBUTES, block)}
        paragraph = list(test["order"]).index(test["needles"][position])
        out.append({"index": index, "position": position, "bytes": len(test["caption"]),
                    "objects": len(test["objects"]), "needle_byte": spans[paragraph][0],
                    "correct": int(all(beats.values())), "attributes": beats})
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
