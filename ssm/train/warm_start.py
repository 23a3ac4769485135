"""Start a run from an earlier run's weights (``init_from``) and freeze towers (``freeze``).

The seed recipe: pre-train on image-text pairs with the contrastive loss, then fine-tune
for captioning. ``init_from`` copies every weight the checkpoint and the new model share
(image and text towers, projections, logit scale; the decoder too when both have one);
what the checkpoint lacks (a new caption decoder, a new ITM head) keeps its fresh
initialisation. Only weights are taken: the optimiser, schedule, step and RNG start anew.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from torch import nn

from ssm.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

TOWERS = ("image_encoder", "text_encoder")


def load_weights(model: nn.Module, checkpoint) -> dict:
    """Copy the shared weights of ``checkpoint`` (a training checkpoint with a "model"
    state dict) into ``model``. Returns {"loaded": [...], "fresh": [...], "unused": [...]}
    key lists. A shared key with another shape is an error, naming the key."""
    path = Path(checkpoint)
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"init_from={path} is not a training checkpoint (no 'model' weights)")
    weights, own = state["model"], model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
                  for k, v in weights.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise ValueError(f"init_from={path} does not fit this model; shapes differ for "
                         + "; ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else ""))
    shared = {k: v for k, v in weights.items() if k in own}
    if not shared:
        raise ValueError(f"init_from={path} shares no weights with this model")
    model.load_state_dict(shared, strict=False)
    return {"loaded": sorted(shared), "fresh": sorted(set(own) - set(weights)),
            "unused": sorted(set(weights) - set(own))}


def freeze_towers(model: nn.Module, image_encoder: bool = False,
                  text_encoder: bool = False) -> list[str]:
    """Stop gradients into the chosen towers (before the optimiser is built, which then
    leaves them out). Returns the names of the frozen towers."""
    frozen = []
    for name, wanted in zip(TOWERS, (image_encoder, text_encoder)):
        if not isinstance(wanted, bool):
            raise ValueError(f"freeze.{name} must be true or false, got {wanted!r}")
        if wanted:
            for p in getattr(model, name).parameters():
                p.requires_grad_(False)
            frozen.append(name)
    return frozen


def warm_start(model: nn.Module, init_from: Optional[str] = None,
               freeze: Optional[dict] = None) -> dict:
    """``init_from`` and ``freeze`` from the config applied to ``model``; returns the facts
    for results.json (init_from, init_loaded, init_fresh, frozen)."""
    facts = {}
    if init_from:
        keys = load_weights(model, init_from)
        log.info("init_from %s: %d tensors loaded, %d fresh (%s), %d unused", init_from,
                 len(keys["loaded"]), len(keys["fresh"]),
                 ", ".join(sorted({k.split(".")[0] for k in keys["fresh"]})) or "none",
                 len(keys["unused"]))
        facts = {"init_from": str(init_from), "init_loaded": len(keys["loaded"]),
                 "init_fresh": len(keys["fresh"])}
    unknown = set(freeze or {}) - set(TOWERS)
    if unknown:
        raise ValueError(f"freeze takes {list(TOWERS)}, got {sorted(unknown)}")
    facts["frozen"] = freeze_towers(model, **dict(freeze or {}))
    return facts
