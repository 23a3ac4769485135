"""Where a captioner's composition fails: the shape it chooses under teacher forcing.

A decoder that never names a held-out (shape, colour) pair may fail in two places: its
image features may not show the shape of an unseen pair, or the caption's own history
(the colour word, said before the shape) may veto a shape that never followed that word in
training. ``forced_shape_choice`` tells them apart on single-object scenes. For every scene
it scores one caption per shape, the scene's caption with the shape word swapped (the same
sentence frame, ``ssm.data.caption`` with a fixed rng), by the decoder's log-likelihood of
the whole caption given the image, and counts the scene right when the true shape scores
highest. Two histories:

- the true colour word: what generation sees after naming the colour rightly;
- a neutral colour word: a colour trained with every shape (when the held-out set leaves
  one), so no candidate shape is vetoed by the word; images already of that colour are
  left out of this count.

Seen-pair scenes are the control. Keys (prefix ``caption_forced_shape_``): ``seen``,
``novel``, ``seen_neutral``, ``novel_neutral``, and ``neutral_colour`` (the word used).
"""
from __future__ import annotations

import dataclasses
import random
from typing import Optional, Sequence

import torch

from ssm.data import COLOURS, SHAPES, caption, zero_shot_set

__all__ = ["forced_shape_choice", "neutral_colour", "caption_log_likelihood"]


def neutral_colour(held_out) -> Optional[str]:
    """The first colour (in ``COLOURS`` order) that no held-out pair uses, or None."""
    vetoed = {colour for _, colour in held_out}
    return next((c for c in COLOURS if c not in vetoed), None)


@torch.no_grad()
def caption_log_likelihood(decoder, image_pooled: torch.Tensor, image_patches: torch.Tensor,
                           texts: Sequence[str], tokenizer, max_length: int) -> torch.Tensor:
    """log p(text | image) under a caption decoder (in eval mode), summed over the caption's
    tokens after BOS (EOS included): the image tower's image_pooled (m, wi) and
    image_patches (m, p, wi), one text each -> (m,)."""
    tokens, mask = tokenizer.batch_encode(list(texts), max_length)
    tokens, mask = tokens.to(image_pooled.device), mask.to(image_pooled.device)
    logits = decoder(image_pooled, image_patches, tokens, mask).float()
    # Position t predicts token t + 1; pad positions (mask False) add nothing.
    log_p = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return (log_p * mask[:, 1:]).sum(1).cpu()


@torch.no_grad()
def forced_shape_choice(model, tokenizer, max_length: int, held_out, verbosity: int,
                        image_size: int, device, scenes: int = 240, seed: int = 0,
                        batch_size: int = 256) -> dict:
    """Shape accuracy under teacher forcing on ``scenes`` single-object scenes, every
    (shape, colour) pair equally often (``ssm.data.zero_shot_set``), split into pairs seen
    in training and ``held_out`` ones; see the module docstring. {} without held-out pairs.
    """
    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < 1:
        raise ValueError(f"scenes must be an int >= 1, got {scenes!r}")
    if not held_out:
        return {}
    was_training = model.training
    model.eval()
    neutral = neutral_colour(held_out)
    items = list(zero_shot_set(scenes, seed, image_size))
    rows = []           # (scene index, group, true shape, candidate caption)
    for index, item in enumerate(items):
        obj, = item["objects"]
        group = "novel" if (obj.shape, obj.colour) in held_out else "seen"
        histories = [(group, obj.colour)]
        if neutral is not None and obj.colour != neutral:
            histories.append((f"{group}_neutral", neutral))
        for key, colour in histories:
            for shape in SHAPES:
                candidate = dataclasses.replace(obj, shape=shape, colour=colour)
                # One rng seed per scene: every candidate gets the same sentence frame.
                text = caption([candidate], random.Random(f"forced|{seed}|{index}"), verbosity)
                rows.append((index, key, obj.shape, text))
    scores = []
    try:
        # Each scene's image through the tower once; its candidates index the features.
        images = torch.stack([item["image"] for item in items])
        features = [model.image_encoder.encode(chunk.to(device))
                    for chunk in images.split(batch_size)]
        pooled = torch.cat([f[0] for f in features])                  # (scenes, wi)
        patches = torch.cat([f[1] for f in features])                 # (scenes, p, wi)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            scene = torch.tensor([r[0] for r in chunk], device=pooled.device)
            scores.append(caption_log_likelihood(model.decoder, pooled[scene], patches[scene],
                                                 [r[3] for r in chunk], tokenizer, max_length))
    finally:
        model.train(was_training)
    scores = torch.cat(scores).view(-1, len(SHAPES))          # (scene x history, shape)
    right: dict[str, list[bool]] = {}
    for (_, key, true_shape, _), row in zip(rows[::len(SHAPES)], scores):
        right.setdefault(key, []).append(SHAPES[int(row.argmax())] == true_shape)
    results = {f"caption_forced_shape_{key}": sum(v) / len(v) for key, v in right.items()}
    results["caption_forced_shape_neutral_colour"] = neutral
    return results
