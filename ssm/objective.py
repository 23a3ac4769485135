"""The training objective: a weighted sum of loss terms, chosen from config.

Terms: ``itc`` (CLIP InfoNCE), ``siglip`` (sigmoid loss; needs the model's logit_bias),
``cosine`` ((1 - cos)^2 on positive pairs only: it admits collapse, see ssm.losses),
``itm`` (BLIP's matching loss with hard negatives drawn from the ITC similarities),
``caption`` (image-grounded captioning: next-token loss of the caption decoder, which
reads the image; caption tokens only, label smoothing ``caption_label_smoothing``; in
training ``caption_word_noise`` of the history's words substituted, see
``ssm.decoders.history_noise``) and
``text_lm`` (next-token loss of the text tower through its tied head: text only, it never
sees the image, so it cannot teach captioning; needs a causal text tower).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ssm import losses
from ssm.decoders import check_word_noise, substitute_words
from ssm.models import CLIP, CLIPOutput

SPACE = 32  # the byte tokenizer's word separator, where caption_word_noise splits words
TERMS = ("itc", "siglip", "cosine", "text_lm", "itm", "caption")


class Objective(nn.Module):
    """total = sum of weight * term over terms with weight > 0."""

    def __init__(self, itc: float = 1.0, siglip: float = 0.0, cosine: float = 0.0,
                 text_lm: float = 0.0, itm: float = 0.0, caption: float = 0.0,
                 caption_label_smoothing: float = 0.0, caption_word_noise: float = 0.0,
                 lm: Optional[float] = None):
        super().__init__()
        if lm is not None:
            raise ValueError("loss term lm is now text_lm (next-token loss on the text alone; "
                             "it never sees the image); for image-grounded captioning use "
                             "caption")
        self.weights = {"itc": itc, "siglip": siglip, "cosine": cosine, "text_lm": text_lm,
                        "itm": itm, "caption": caption}
        for name, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ValueError(f"loss weight {name} must be a number >= 0, got {weight!r}")
        if not any(self.weights.values()):
            raise ValueError(f"at least one loss weight must be > 0, got {self.weights}")
        if not isinstance(caption_label_smoothing, (int, float)) \
                or not 0 <= caption_label_smoothing < 1:
            raise ValueError(f"caption_label_smoothing must lie in [0, 1), got "
                             f"{caption_label_smoothing!r}")
        self.caption_label_smoothing = caption_label_smoothing
        self.caption_word_noise = check_word_noise(caption_word_noise)
        self.word_noise_avoid: frozenset = frozenset()

    def avoid_word_pairs(self, pairs) -> None:
        """Word pairs (left, right) as strings that ``caption_word_noise`` must never put
        side by side: the data's held-out pairs, which the noise would otherwise write as
        text now and then (it draws words blind). Words are byte-tokenised, as the noise
        reads them."""
        self.word_noise_avoid = frozenset((tuple(a.encode()), tuple(b.encode()))
                                          for a, b in pairs)

    @property
    def uses_text_tower(self) -> bool:
        """Whether some term trains the text tower (captioning alone does not)."""
        return any(self.weights[t] for t in ("itc", "siglip", "cosine", "text_lm", "itm"))

    def check_model(self, model: CLIP) -> None:
        """Fail before training when a term needs a head the model lacks."""
        if self.weights["itm"] and model.itm is None:
            raise ValueError("loss term itm needs CLIP(itm_head=True)")
        if self.weights["text_lm"] and not model.has_text_lm_head:
            raise ValueError("loss term text_lm needs CLIP(text_lm_head=True) and a causal "
                             "text encoder")
        if self.weights["caption"] and model.decoder is None:
            raise ValueError("loss term caption needs a caption decoder: CLIP(decoder=...), "
                             "in config model/decoder=mamba (or mamba_state, transformer)")
        if self.uses_text_tower and not model.text_in_forward:
            raise ValueError("loss terms on text features need CLIP(text_in_forward=True)")
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
        if self.weights["text_lm"]:
            terms["text_lm"] = losses.lm_loss(model.text_lm_logits(out.text_states), tokens, mask)
        if self.weights["itm"]:
            terms["itm"] = self._itm(model, out, mask, generator)
        if self.weights["caption"]:
            terms["caption"] = self._caption(model, out, tokens, mask, generator)
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}

    def _caption(self, model, out, tokens, mask, generator):
        """The decoder's next-token loss; in training, over a history with
        ``caption_word_noise`` of its words substituted (``ssm.decoders.history_noise``)."""
        counted = mask
        if self.training and self.caption_word_noise:
            tokens, mask, counted = substitute_words(tokens, mask, self.caption_word_noise,
                                                     SPACE, generator, self.word_noise_avoid)
        return losses.lm_loss(model.caption_logits(out, tokens, mask), tokens, counted,
                              self.caption_label_smoothing)

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
    SigLIP its logit initialisation (scale ln 10, bias -10). Without a caption term the
    configured decoder is left out (decoder=None): it would train nothing; without a text
    term the forward skips the text tower."""
    options = {"itm_head": objective.weights["itm"] > 0,
               "text_lm_head": objective.weights["text_lm"] > 0,
               "text_in_forward": objective.uses_text_tower}
    if not objective.weights["caption"]:
        options["decoder"] = None
    if objective.weights["siglip"] > 0:
        options.update(init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
    return options
