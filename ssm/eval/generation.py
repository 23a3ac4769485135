"""Evaluation of a captioning model: generate for a dataset and score (``CaptionEvaluation``),
and how fast it generates (``generation_speed``).

``generation_speed`` times generation with EOS ignored, so every row writes exactly
max_new_tokens tokens: tokens/s over the whole call (image tower, reading the image, every
step), peak memory of the call (``ssm.train.memory.PeakMemory``) and the bytes of the
decoder's cache (exact: the Mamba decoder's fixed states, the Transformer's KV buffers).
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import time
from typing import Optional

import torch

from ssm.decoders import as_strategy, check_guidance, generate
from ssm.eval.captioning import caption_scores
from ssm.train.memory import PeakMemory

log = logging.getLogger(__name__)


class CaptionEvaluation:
    """``eval.caption`` in the config: captions for the validation set, scored.

    max_new_tokens: None means the caption budget, max_length - 1 (BOS takes one).
    strategy: as ``ssm.decoders.as_strategy`` takes it. references: reference captions per
    scene for BLEU and CIDEr. guidance: classifier-free guidance scale (1: none), as
    ``ssm.decoders.generate`` takes it. forced_shape_scenes: single-object scenes for
    ``ssm.eval.composition.forced_shape_choice`` on the built-in scenes (0: skip it).
    """

    def __init__(self, max_new_tokens: Optional[int] = None, strategy="greedy",
                 references: int = 5, guidance: float = 1.0, forced_shape_scenes: int = 240):
        as_strategy(strategy)  # a bad strategy fails now, not after training
        self.guidance = check_guidance(guidance)  # a bad scale fails now, not after training
        if max_new_tokens is not None and (isinstance(max_new_tokens, bool)
                                           or not isinstance(max_new_tokens, int)
                                           or max_new_tokens < 1):
            raise ValueError(f"eval.caption.max_new_tokens must be null or an int >= 1, "
                             f"got {max_new_tokens!r}")
        if isinstance(references, bool) or not isinstance(references, int) or references < 1:
            raise ValueError(f"eval.caption.references must be an int >= 1, got {references!r}")
        if isinstance(forced_shape_scenes, bool) or not isinstance(forced_shape_scenes, int) \
                or forced_shape_scenes < 0:
            raise ValueError(f"eval.caption.forced_shape_scenes must be an int >= 0, got "
                             f"{forced_shape_scenes!r}")
        self.max_new_tokens, self.strategy, self.references = max_new_tokens, strategy, references
        self.forced_shape_scenes = forced_shape_scenes

    def __call__(self, model, batches, tokenizer, max_length: int, device,
                 held_out=frozenset(), verbosity: Optional[int] = None) -> dict:
        """Caption metrics over ``batches`` (lists of dataset items, e.g. the validation
        set's); held_out and verbosity as ``caption_scores`` takes them."""
        max_new = self.max_new_tokens or max_length - 1
        captions, items = [], []
        for batch in batches:
            images = torch.stack([x["image"] for x in batch]).to(device)
            captions += model.generate(images, max_new, self.strategy, tokenizer=tokenizer,
                                       guidance=self.guidance).texts
            items += batch
        for text, item in list(zip(captions, items))[:3]:
            log.info("caption: %r (reference: %r)", text, item["caption"])
        results = caption_scores(captions, items, held_out, self.references, verbosity)
        results["caption_val_images"] = len(items)
        return results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generation_speed(image_encoder, decoder, images: torch.Tensor, max_new_tokens: int,
                     tokenizer, repeats: int = 1) -> dict:
    """Greedy generation of exactly max_new_tokens tokens per image of images (b, 3, h, w),
    EOS ignored, image tower included. Returns seconds (median of ``repeats`` timed calls,
    after one untimed call of 8 tokens for one-time costs), tokens_per_s =
    b * max_new_tokens / seconds, peak_mem_mb and peak_mem_kind (over the first timed
    call), and cache_mb (the decoder's cache for this batch and length)."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    device = images.device

    def run(n):
        return generate(decoder, *image_encoder.encode(images), n, "greedy", tokenizer,
                        stop_at_eos=False)

    run(min(8, max_new_tokens))
    peak, seconds = PeakMemory(device), []
    for repeat in range(repeats):
        with peak if repeat == 0 else contextlib.nullcontext():
            _sync(device)
            start = time.perf_counter()
            run(max_new_tokens)
            _sync(device)
            seconds.append(time.perf_counter() - start)
    cache = decoder.start(*image_encoder.encode(images), max_new_tokens)
    median = statistics.median(seconds)
    return {"batch_size": images.shape[0], "new_tokens": max_new_tokens, "seconds": median,
            "tokens_per_s": images.shape[0] * max_new_tokens / median, **peak.facts(),
            "cache_mb": cache.nbytes() / 2 ** 20}
