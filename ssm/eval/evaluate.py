"""Evaluate a CLIP model: retrieval, zero-shot classification, the word-order probe (with
its text-only baseline), ITM accuracy, and for a model with a caption decoder the caption
metrics of ``ssm.eval.generation``. Returns the flat keys of results.json."""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DataLoader

from ssm.data import ByteTokenizer
from ssm.eval.generation import CaptionEvaluation
from ssm.eval.metrics import (BagOfBytesBaseline, class_embeddings, retrieval_metrics,
                              word_order_accuracy, zero_shot_accuracy)


def _items(dataset, batch_size: int):
    """Batches of raw items (dicts) in order; items that failed to load (None) dropped."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda items: [x for x in items if x is not None])
    yield from loader


class Evaluator:
    """Runs the evaluation sets of one data source through a model, in eval mode.
    ``caption``: the settings of ``CaptionEvaluation`` (``eval.caption``), used when the
    model has a caption decoder."""

    def __init__(self, tokenizer, max_length: int, device: torch.device, batch_size: int = 250,
                 caption: Optional[dict] = None):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.device, self.batch_size = device, batch_size
        self.caption = CaptionEvaluation(**(caption or {}))

    def encode_text(self, model, captions: list[str]) -> torch.Tensor:
        tokens, mask = self.tokenizer.batch_encode(captions, self.max_length)
        return model.encode_text(tokens.to(self.device), mask.to(self.device)).float().cpu()

    @torch.no_grad()
    def __call__(self, model, val_dataset, zero_shot_dataset=None,
                 zero_shot_templates: Optional[dict] = None) -> dict:
        was_training = model.training
        model.eval()
        try:
            results = self._paired(model, val_dataset)
            if zero_shot_dataset is not None and zero_shot_templates:
                results.update(self._zero_shot(model, zero_shot_dataset, zero_shot_templates))
            if getattr(model, "decoder", None) is not None:
                results.update(self.caption(
                    model, _items(val_dataset, self.batch_size), self.tokenizer, self.max_length,
                    self.device, getattr(val_dataset, "held_out", frozenset()),
                    getattr(val_dataset, "verbosity", None)))
        finally:
            model.train(was_training)
        return results

    def _paired(self, model, dataset) -> dict:
        image_feats, text_feats, captions_all = [], [], []
        probe_pos, probe_neg, probe_rows, probe_negatives = [], [], [], []
        itm_correct, itm_total = 0, 0
        for items in _items(dataset, self.batch_size):
            images = torch.stack([x["image"] for x in items]).to(self.device)
            captions = [x["caption"] for x in items]
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
            if model.itm is not None and len(items) >= 2:
                correct, total = self._itm(model, images, tokens, mask)
                itm_correct, itm_total = itm_correct + correct, itm_total + total
        image_feats, text_feats = torch.cat(image_feats), torch.cat(text_feats)
        results = {"val_pairs": image_feats.shape[0],
                   **retrieval_metrics(image_feats, text_feats)}
        if probe_pos:
            results["order_acc"] = word_order_accuracy(torch.tensor(probe_pos),
                                                       torch.tensor(probe_neg))
            results["order_acc_text_only"] = self._text_only_probe(
                image_feats, captions_all, probe_rows, probe_negatives)
            results["order_pairs"] = len(probe_pos)
        if itm_total:
            results["itm_acc"] = itm_correct / itm_total
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
        images = torch.stack([x["image"] for x in items])
        image_feats = torch.cat([model.encode_image(chunk.to(self.device)).float().cpu()
                                 for chunk in images.split(self.batch_size)])
        results = {}
        for task, task_templates in templates.items():
            classes = sorted({x[task] for x in items})
            labels = torch.tensor([classes.index(x[task]) for x in items])
            class_feats = class_embeddings(lambda texts: self.encode_text(model, texts),
                                           classes, task_templates)
            results[f"zeroshot_{task}_acc"] = zero_shot_accuracy(image_feats, class_feats, labels)
        results["zeroshot_acc"] = sum(results.values()) / len(results)
        return results
