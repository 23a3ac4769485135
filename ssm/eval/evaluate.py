"""Evaluate a CLIP model: retrieval, zero-shot classification, the word-order probe and
the compositional probe suite (each beside a blind text-only baseline fitted on training
captions), the needle test on dense scenes, ITM accuracy, and for a model with a caption
decoder the caption metrics of ``ssm.eval.generation``. Returns the flat keys of
results.json; ``Evaluator.items`` then holds the per-item outcomes (for paired bootstrap
intervals in the reports)."""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader

from ssm.eval.blind import blind_outcomes, fit_on_training_captions
from ssm.data import ByteTokenizer, SceneObject, SyntheticScenes
from ssm.eval.composition import forced_shape_choice
from ssm.eval.generation import CaptionEvaluation
from ssm.eval.metrics import (BagOfBytesBaseline, class_embeddings, retrieval_metrics,
                              retrieval_ranks, word_order_accuracy, zero_shot_accuracy)
from ssm.eval.needle import needle_test
from ssm.eval.probes import CATEGORIES, probe_negatives, probe_rng


def _plain_scenes(dataset) -> bool:
    """Built-in scenes whose captions are the plain grammar's (not dense scenes, not
    stretched to a fixed length): the composition diagnostic rewrites such captions."""
    return (isinstance(dataset, SyntheticScenes) and dataset.caption_tokens is None
            and isinstance(dataset.describe(0)["objects"][0], SceneObject))


def _items(dataset, batch_size: int):
    """Batches of raw items (dicts) in order; items that failed to load (None) dropped."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda items: [x for x in items if x is not None])
    yield from loader


class Evaluator:
    """Runs the evaluation sets of one data source through a model, in eval mode.

    needle_items: dense-scene items in the needle test (when the val set has ``needle``).
    blind_captions: training captions the blind baseline is fitted on (when a training
    set is given); it is fitted once per training set and kept.
    probe_items: None (every val item), or the first this many items get the probe suite
    (long captions make its negatives the costliest part of an evaluation).
    caption: the settings of ``CaptionEvaluation`` (``eval.caption``), used when the model
    has a caption decoder.
    """

    def __init__(self, tokenizer, max_length: int, device: torch.device, batch_size: int = 250,
                 needle_items: int = 200, blind_captions: int = 2000,
                 probe_items: Optional[int] = None, caption: Optional[dict] = None):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.device, self.batch_size = device, batch_size
        self.needle_items, self.blind_captions = needle_items, blind_captions
        self.probe_items = probe_items
        self.caption = CaptionEvaluation(**(caption or {}))
        self.items: dict = {}     # per-item outcomes of the last call
        self._blind = {}          # training set's identity -> fitted blind model

    def encode_text(self, model, captions: list[str]) -> torch.Tensor:
        """(m, e) features of m captions, encoded batch_size at a time."""
        feats = []
        for start in range(0, len(captions), self.batch_size):
            tokens, mask = self.tokenizer.batch_encode(captions[start:start + self.batch_size],
                                                       self.max_length)
            feats.append(model.encode_text(tokens.to(self.device),
                                           mask.to(self.device)).float().cpu())
        return torch.cat(feats)

    def encode_images(self, model, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([model.encode_image(chunk.to(self.device)).float().cpu()
                          for chunk in images.split(self.batch_size)])

    @torch.no_grad()
    def __call__(self, model, val_dataset, zero_shot_dataset=None,
                 zero_shot_templates: Optional[dict] = None, train_dataset=None) -> dict:
        was_training = model.training
        model.eval()
        self.items = {}
        try:
            results = self._paired(model, val_dataset)
            if train_dataset is not None and (self.items.get("probes") or self.items.get("order")):
                results.update(self._blind_baseline(train_dataset))
            if zero_shot_dataset is not None and zero_shot_templates:
                results.update(self._zero_shot(model, zero_shot_dataset, zero_shot_templates))
            if hasattr(val_dataset, "needle") and self.needle_items > 0:
                metrics, self.items["needle"] = needle_test(
                    val_dataset, self.needle_items, lambda texts: self.encode_text(model, texts),
                    lambda images: self.encode_images(model, images), self.batch_size)
                results.update(metrics)
            if getattr(model, "decoder", None) is not None:
                results.update(self.caption(
                    model, _items(val_dataset, self.batch_size), self.tokenizer, self.max_length,
                    self.device, getattr(val_dataset, "held_out", frozenset()),
                    getattr(val_dataset, "verbosity", None)))
                if self.caption.forced_shape_scenes and _plain_scenes(val_dataset):
                    results.update(forced_shape_choice(
                        model, self.tokenizer, self.max_length, val_dataset.held_out,
                        val_dataset.verbosity, val_dataset.image_size, self.device,
                        self.caption.forced_shape_scenes))
        finally:
            model.train(was_training)
        return results

    @torch.no_grad()
    def curve(self, model, val_dataset, pairs: int) -> dict:
        """A cheap point of the validation curve: the contrastive (ITC) loss at the model's
        logit scale and retrieval R@5 both ways over the first ``pairs`` validation pairs."""
        was_training = model.training
        model.eval()
        try:
            items = [x for x in (val_dataset[i] for i in range(min(pairs, len(val_dataset))))
                     if x is not None]  # a file that fails to load is skipped, as in __call__
            count = len(items)
            img = self.encode_images(model, torch.stack([x["image"] for x in items]))
            txt = self.encode_text(model, [x["caption"] for x in items])
            # CLIP's symmetric InfoNCE, computed here without ssm.losses' cross-rank gather:
            # only rank 0 evaluates.
            logits = model.logit_scale.detach().float().cpu().exp() * img @ txt.T  # (p, p)
            target = torch.arange(count)
            loss = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2
            metrics = retrieval_metrics(img, txt)
        finally:
            model.train(was_training)
        return {"val_loss": float(loss), "val_t2i_r5": metrics["t2i_r5"],
                "val_i2t_r5": metrics["i2t_r5"], "val_curve_pairs": count}

    def _paired(self, model, dataset) -> dict:
        image_feats, text_feats, captions_all = [], [], []
        probe_pos, probe_neg, probe_rows, probe_negatives = [], [], [], []
        suite = []  # (category, item index, true caption, negative, image-text outcome)
        true_captions = []
        self._texts = {}  # the probe pairs' texts, for the blind baseline
        itm_correct, itm_total = 0, 0
        seed = getattr(dataset, "seed", 0)
        for items in _items(dataset, self.batch_size):
            images = torch.stack([x["image"] for x in items]).to(self.device)
            captions = [x["caption"] for x in items]
            true_captions += captions
            tokens, mask = self.tokenizer.batch_encode(captions, self.max_length)
            img = model.encode_image(images).float().cpu()
            txt = model.encode_text(tokens.to(self.device), mask.to(self.device)).float().cpu()
            offset = sum(f.shape[0] for f in image_feats)
            image_feats.append(img)
            text_feats.append(txt)
            captions_all += captions
            # Every negative of the batch in one encoder call; rows[k] is its item.
            rows = [row for row, item in enumerate(items) for _ in item.get("negatives") or []]
            negatives = [neg for item in items for neg in item.get("negatives") or []]
            if negatives:
                rows_t = torch.tensor(rows)
                neg = self.encode_text(model, negatives)                          # (m, e)
                probe_pos += (img[rows_t] * txt[rows_t]).sum(-1).tolist()
                probe_neg += (neg * img[rows_t]).sum(-1).tolist()
                probe_rows += [offset + row for row in rows]
                probe_negatives += negatives
            suite += self._probe_suite(model, items, img, txt, offset, seed)
            if model.itm is not None and len(items) >= 2:
                correct, total = self._itm(model, images, tokens, mask)
                itm_correct, itm_total = itm_correct + correct, itm_total + total
        image_feats, text_feats = torch.cat(image_feats), torch.cat(text_feats)
        results = {"val_pairs": image_feats.shape[0],
                   **retrieval_metrics(image_feats, text_feats)}
        self.items["t2i_rank"] = retrieval_ranks(image_feats, text_feats)[0].tolist()
        if probe_pos:
            results["order_acc"] = word_order_accuracy(torch.tensor(probe_pos),
                                                       torch.tensor(probe_neg))
            results["order_acc_text_only"] = self._text_only_probe(
                image_feats, captions_all, probe_rows, probe_negatives)
            results["order_pairs"] = len(probe_pos)
            self.items["order"] = [{"index": row, "correct": _outcome(p, n)}
                                   for row, p, n in zip(probe_rows, probe_pos, probe_neg)]
            self._texts = {"order": [(true_captions[row], negative)
                                     for row, negative in zip(probe_rows, probe_negatives)]}
        if suite:
            self.items["probes"] = [{"index": i, "category": c, "correct": o}
                                    for c, i, _, _, o in suite]
            self._texts["probes"] = [(t, n) for _, _, t, n, _ in suite]
            for category in CATEGORIES:
                outcomes = [o for c, *_, o in suite if c == category]
                if outcomes:
                    results[f"probe_{category}"] = sum(outcomes) / len(outcomes)
                    results[f"probe_{category}_items"] = len(outcomes)
        if itm_total:
            results["itm_acc"] = itm_correct / itm_total
        return results

    def _probe_suite(self, model, items, img, txt, offset, seed) -> list[tuple]:
        """The compositional probes of one batch (items with scene objects): one negative
        per category per item, all encoded in one call, each scored against its image."""
        made = []
        for row, item in enumerate(items):
            if not item.get("objects") or (self.probe_items is not None
                                           and offset + row >= self.probe_items):
                continue
            negatives = probe_negatives(item["caption"], item["objects"],
                                        probe_rng(seed, offset + row))
            made += [(category, row, negative.text) for category, negative in negatives.items()]
        if not made:
            return []
        rows = torch.tensor([row for _, row, _ in made])
        neg = self.encode_text(model, [text for _, _, text in made])           # (m, e)
        positive = (img[rows] * txt[rows]).sum(-1).tolist()
        negative = (img[rows] * neg).sum(-1).tolist()
        return [(category, offset + row, items[row]["caption"], text, _outcome(p, n))
                for (category, row, text), p, n in zip(made, positive, negative)]

    def _blind_baseline(self, train_dataset) -> dict:
        """The probes scored by the blind text-only model fitted on training captions:
        ``blind_<category>`` and ``order_acc_blind``; each item record gets ``blind``."""
        key = (type(train_dataset).__name__, getattr(train_dataset, "split", None),
               getattr(train_dataset, "seed", None), len(train_dataset),
               getattr(train_dataset, "detail", None), self.blind_captions)
        if key not in self._blind:
            self._blind[key] = fit_on_training_captions(train_dataset, self.blind_captions)
        model = self._blind[key]
        results = {"blind_captions": model.n_captions}
        for name, records in (("probes", self.items.get("probes")),
                              ("order", self.items.get("order"))):
            if not records:
                continue
            for record, outcome in zip(records, blind_outcomes(model, self._texts[name])):
                record["blind"] = outcome
        for category in CATEGORIES:
            outcomes = [r["blind"] for r in self.items.get("probes") or []
                        if r["category"] == category]
            if outcomes:
                results[f"blind_{category}"] = sum(outcomes) / len(outcomes)
        if self.items.get("order"):
            results["order_acc_blind"] = (sum(r["blind"] for r in self.items["order"])
                                          / len(self.items["order"]))
        return results

    def _text_only_probe(self, image_feats, captions, rows, negatives) -> float:
        """The same probe scored by a bag-of-bytes text model fitted to these pairs. It reads
        the captions' bytes whatever the model's tokenizer is: its chance level is a
        property of the captions, not of the tokenizer."""
        byte_tokens = ByteTokenizer()
        tokens, mask = byte_tokens.batch_encode(captions, self.max_length)
        baseline = BagOfBytesBaseline().fit(image_feats, tokens, mask)
        rows = torch.tensor(rows)
        neg_tokens, neg_mask = byte_tokens.batch_encode(negatives, self.max_length)
        positive = baseline.score(image_feats[rows], tokens[rows], mask[rows])
        negative = baseline.score(image_feats[rows], neg_tokens, neg_mask)
        return word_order_accuracy(positive, negative)

    @staticmethod
    def _itm(model, images, tokens, mask):
        """Each image with its caption (label 1) and with the next item's caption (0)."""
        device = images.device
        tokens, mask = tokens.to(device), mask.to(device)
        out = model(images, tokens, mask)
        shifted = torch.roll(torch.arange(images.shape[0], device=device), 1)
        match = model.itm_logits(out.text_states, mask, out.image_patches).argmax(-1) == 1
        mismatch = model.itm_logits(out.text_states[shifted], mask[shifted],
                                    out.image_patches).argmax(-1) == 0
        return int(match.sum() + mismatch.sum()), 2 * images.shape[0]

    def _zero_shot(self, model, dataset, templates: dict) -> dict:
        items = [x for batch in _items(dataset, self.batch_size) for x in batch]
        image_feats = self.encode_images(model, torch.stack([x["image"] for x in items]))
        results = {}
        for task, task_templates in templates.items():
            classes = sorted({x[task] for x in items})
            labels = torch.tensor([classes.index(x[task]) for x in items])
            class_feats = class_embeddings(lambda texts: self.encode_text(model, texts),
                                           classes, task_templates)
            results[f"zeroshot_{task}_acc"] = zero_shot_accuracy(image_feats, class_feats, labels)
        results["zeroshot_acc"] = sum(results.values()) / len(results)
        return results


def _outcome(positive: float, negative: float) -> float:
    """A probe item: 1 when the true caption scores higher, 0.5 on a tie, else 0."""
    return 1.0 if positive > negative else (0.5 if positive == negative else 0.0)
