"""Losses for image-text training: contrastive (CLIP, SigLIP), cosine, captioning and matching.

Shapes use b (batch), e (embedding width), l (sequence length), V (vocabulary). All functions
are pure on tensors; the only state they read is the default ``torch.distributed`` process
group, which turns ``itc_loss`` and ``siglip_loss`` into their per-rank "local" forms.

Distributed contract: every rank holds the same local batch size b and calls the loss (and
later ``backward``) the same number of times, because both run collectives. Each rank's loss
is a mean over its own rows, so the mean of the per-rank losses equals the single-process loss
on the concatenated batch, and the gradient a rank receives for its own features is world
times the single-process one; DDP's gradient averaging divides that factor back out.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gather_with_grad", "itc_loss", "siglip_loss", "cosine_loss", "lm_loss",
           "sample_hard_negatives", "itm_loss"]


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        rank, world = _world()
        ctx.rows = slice(rank * x.shape[0], (rank + 1) * x.shape[0])
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        # Every rank's loss used this rank's rows, so their gradients must be summed here;
        # the clone keeps the in-place reduction off a buffer autograd may still share.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (b, ...) from all ranks in rank order into (world * b, ...).

    Gradients flow back: the backward sums the gradient of the gathered tensor over ranks and
    hands each rank the slice for its own rows. Without an initialised process group, or with
    world size 1, ``x`` is returned unchanged. All ranks must pass the same shape.
    """
    _check_tensor("x", x)
    if x.dim() == 0:
        raise ValueError("x must have a leading batch dimension, shape (b, ...), got ()")
    _, world = _world()
    return x if world == 1 else _AllGather.apply(x)


def itc_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE loss, a 0-d tensor.

    image_features, text_features: (b, e), L2-normalised, row i of each forms a positive pair.
    logit_scale: 0-d log of the temperature factor; logits are ``logit_scale.exp() * img @ txt.T``.

    Loss = (CE(logits_per_image, arange(b)) + CE(logits_per_text, arange(b))) / 2, each CE a
    mean over rows. Distributed, a rank scores its b local rows against all world * b gathered
    rows of the other modality, positives at column rank * b + i (open_clip's "local loss").
    """
    _check_pair(image_features, text_features)
    _check_scalar("logit_scale", logit_scale)
    rank, _ = _world()
    all_image, all_text = gather_with_grad(image_features), gather_with_grad(text_features)
    scale = logit_scale.exp()
    logits_per_image = scale * image_features @ all_text.T  # (b, world * b)
    logits_per_text = scale * text_features @ all_image.T
    b = image_features.shape[0]
    labels = torch.arange(b, device=image_features.device) + rank * b
    return (F.cross_entropy(logits_per_image, labels)
            + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor,
                logit_bias: Tensor) -> Tensor:
    """SigLIP's pairwise sigmoid loss, a 0-d tensor.

    image_features, text_features: (b, e), L2-normalised, row i of each forms a positive pair.
    logit_scale: 0-d log scale (the caller initialises it to ln 10); logit_bias: 0-d (init -10).

    logits = exp(logit_scale) * img @ txt.T + logit_bias, labels +1 on positives and -1
    elsewhere, loss = -sum(logsigmoid(labels * logits)) / b: a sum over every image-text pair,
    normalised by the number of images, as in the SigLIP paper.

    Distributed, the text features are gathered; a rank scores its b local images against all
    world * b texts (positives at column rank * b + i) and divides the (b, world * b) sum by its
    local b. Each image row lives on exactly one rank, so the per-rank sums add up to the full
    (world * b)^2 sum and the mean over ranks of the losses is the single-process loss.
    """
    _check_pair(image_features, text_features)
    _check_scalar("logit_scale", logit_scale)
    _check_scalar("logit_bias", logit_bias)
    rank, _ = _world()
    all_text = gather_with_grad(text_features)
    logits = logit_scale.exp() * image_features @ all_text.T + logit_bias  # (b, world * b)
    b = image_features.shape[0]
    labels = -torch.ones_like(logits)
    labels[:, rank * b:(rank + 1) * b].fill_diagonal_(1.0)
    return -F.logsigmoid(labels * logits).sum() / b


def cosine_loss(image_features: Tensor, text_features: Tensor) -> Tensor:
    """Mean over the batch of (1 - cos(image_i, text_i))^2, a 0-d tensor.

    image_features, text_features: (b, e); they need not be normalised.

    Positive pairs only: nothing pushes non-matching pairs apart, so the loss admits collapse
    (every embedding equal gives zero loss). Use it next to a contrastive loss, not instead.
    """
    _check_pair(image_features, text_features)
    cos = F.cosine_similarity(image_features, text_features, dim=1)
    return ((1 - cos) ** 2).mean()


def lm_loss(logits: Tensor, tokens: Tensor, mask: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Next-token cross-entropy, a 0-d tensor.

    logits: (b, l, V); tokens: (b, l) long; mask: (b, l) bool, True for real tokens.
    Position t predicts tokens[:, t + 1] from logits[:, t]; targets where mask[:, 1:] is False
    are ignored (their token values may be anything, e.g. a pad id outside the vocabulary), and
    the loss is the mean over the counted targets of the whole batch, not per sequence. With
    no counted target (l == 1, or all padding) it is 0, still attached to ``logits``' graph.
    label_smoothing in [0, 1) spreads that share of each target's mass uniformly over the
    vocabulary (BLIP's captioner uses 0.1).

    A caption decoder's logits cover the caption positions only (never an image prefix),
    so this is also the captioning loss: it counts caption tokens and nothing else.
    """
    _check_tensor("logits", logits)
    _check_tensor("tokens", tokens, floating=False)
    _check_tensor("mask", mask, floating=False)
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (b, l, V), got {tuple(logits.shape)}")
    if tokens.shape != logits.shape[:2]:
        raise ValueError(f"tokens must have shape (b, l) = {tuple(logits.shape[:2])} to match "
                         f"logits, got {tuple(tokens.shape)}")
    if mask.shape != logits.shape[:2]:
        raise ValueError(f"mask must have shape (b, l) = {tuple(logits.shape[:2])} to match "
                         f"logits, got {tuple(mask.shape)}")
    if tokens.dtype != torch.long:
        raise TypeError(f"tokens must be a long tensor, got {tokens.dtype}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing!r}")
    counted = mask[:, 1:]
    if not counted.any():
        return logits.sum() * 0
    return F.cross_entropy(logits[:, :-1][counted], tokens[:, 1:][counted],
                           label_smoothing=float(label_smoothing))


@torch.no_grad()
def sample_hard_negatives(sim: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """For each query row i, one column j != i drawn with probability softmax(sim[i])_j.

    sim: (b, b) similarities, rows are queries and the diagonal holds the positives; b >= 2.
    Returns (b,) long column indices (BLIP/ALBEF hard negative mining). No gradient flows.
    ``generator`` must live on sim's device.

    Softmax with the diagonal zeroed and renormalised equals a softmax with the diagonal at
    -inf, which is what is computed: it cannot underflow to an all-zero row when a positive
    dominates.
    """
    _check_tensor("sim", sim)
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ValueError(f"sim must be a square (b, b) matrix with b >= 2, got {tuple(sim.shape)}")
    b = sim.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    probs = sim.detach().float().masked_fill(eye, float("-inf")).softmax(dim=1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def itm_loss(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    """Image-text matching cross-entropy, a 0-d tensor.

    pos_logits: (p, 2) head outputs for matching pairs, neg_logits: (q, 2) for non-matching
    ones; class 1 means "match". The mean is over all p + q rows, so the caller sets the
    positive/negative balance (BLIP uses q = 2p).
    """
    _check_tensor("pos_logits", pos_logits)
    _check_tensor("neg_logits", neg_logits)
    for name, t in (("pos_logits", pos_logits), ("neg_logits", neg_logits)):
        if t.dim() != 2 or t.shape[1] != 2:
            raise ValueError(f"{name} must have shape (n, 2), got {tuple(t.shape)}")
    if pos_logits.shape[0] + neg_logits.shape[0] == 0:
        raise ValueError("pos_logits and neg_logits are both empty; need at least one row")
    logits = torch.cat([pos_logits, neg_logits])
    labels = torch.cat([torch.ones(pos_logits.shape[0], dtype=torch.long, device=logits.device),
                        torch.zeros(neg_logits.shape[0], dtype=torch.long, device=logits.device)])
    return F.cross_entropy(logits, labels)


def _check_tensor(name, t, floating=True):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def _check_pair(image_features, text_features):
    _check_tensor("image_features", image_features)
    _check_tensor("text_features", text_features)
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (b, e), got {tuple(t.shape)}")
    if image_features.shape != text_features.shape:
        raise ValueError(f"image_features and text_features must both have shape (b, e), got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if image_features.shape[0] == 0:
        raise ValueError("image_features and text_features have batch size b == 0; need b >= 1")


def _check_scalar(name, t):
    _check_tensor(name, t)
    if t.dim() != 0:
        raise ValueError(f"{name} must be a 0-d tensor, shape (), got {tuple(t.shape)}")
