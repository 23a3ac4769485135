"""The training objective: a weighted sum of loss terms, chosen from config.

Terms: ``itc`` (CLIP InfoNCE), ``siglip`` (sigmoid loss; needs the model's logit_bias),
``cosine`` ((1 - cos)^2 on positive pairs only: it admits collapse, see ssm.losses),
``lm`` (next-token loss through the tied head; needs a causal text tower) and ``itm``
(BLIP's matching loss with hard negatives drawn from the ITC similarities).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ssm import losses
from ssm.models import CLIP, CLIPOutput


class Objective(nn.Module):
    """total = sum of weight * term over terms with weight > 0."""

    def __init__(self, itc: float = 1.0, siglip: float = 0.0, cosine: float = 0.0,
                 lm: float = 0.0, itm: float = 0.0):
        super().__init__()
        self.weights = {"itc": itc, "siglip": siglip, "cosine": cosine, "lm": lm, "itm": itm}
        for name, weight in self.weights.items():
            if not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"loss weight {name} must be a number >= 0, got {weight!r}")
        if not any(self.weights.values()):
            raise ValueError(f"at least one loss weight must be > 0, got {self.weights}")

    def check_model(self, model: CLIP) -> None:
        """Fail before training when a term needs a head the model lacks."""
        if self.weights["itm"] and model.itm is None:
            raise ValueError("loss term itm needs CLIP(itm_head=True)")
        if self.weights["lm"] and not model.has_lm_head:
            raise ValueError("loss term lm needs CLIP(lm_head=True) and a causal text encoder")
        if self.weights["siglip"] and model.logit_bias is None:
            raise ValueError("loss term siglip needs CLIP(init_logit_bias=...), e.g. -10")

    def forward(self, model: CLIP, out: CLIPOutput, tokens: torch.Tensor, mask: torch.Tensor,
                generator: Optional[torch.Generator] = None):
        """Returns (total loss, {term: detached value}) for one batch's model output."""
        self.check_model(model)
        terms = {}
        if self.weights["itc"]:
            terms["itc"] = losses.itc_loss(out.image_features, out.text_features, out.logit_scale)
        if self.weights["siglip"]:
            terms["siglip"] = losses.siglip_loss(out.image_features, out.text_features,
                                                 out.logit_scale, out.logit_bias)
        if self.weights["cosine"]:
            terms["cosine"] = losses.cosine_loss(out.image_features, out.text_features)
        if self.weights["lm"]:
            terms["lm"] = losses.lm_loss(model.lm_logits(out.text_states), tokens, mask)
        if self.weights["itm"]:
            terms["itm"] = self._itm(model, out, mask, generator)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}

    @staticmethod
    def _itm(model, out, mask, generator):
        """Each image with its caption (match), with a hard negative caption, and each
        caption with a hard negative image (BLIP), scored by the ITM head."""
        with torch.no_grad():
            sim = out.logit_scale.exp() * out.image_features @ out.text_features.t()  # (b, b)
            hard_text = losses.sample_hard_negatives(sim, generator)         # per image
            hard_image = losses.sample_hard_negatives(sim.t(), generator)    # per caption
        states, patches = out.text_states, out.image_patches
        positive = model.itm_logits(states, mask, patches)
        negative = torch.cat([model.itm_logits(states[hard_text], mask[hard_text], patches),
                              model.itm_logits(states, mask, patches[hard_image])])
        return losses.itm_loss(positive, negative)


def model_options(objective: Objective) -> dict:
    """CLIP keyword arguments the objective's terms need: the heads they use, and for
    SigLIP its logit initialisation (scale ln 10, bias -10)."""
    options = {"itm_head": objective.weights["itm"] > 0, "lm_head": objective.weights["lm"] > 0}
    if objective.weights["siglip"] > 0:
        options.update(init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
    return options
