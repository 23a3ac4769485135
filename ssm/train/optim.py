"""AdamW with the usual weight-decay exclusions and a cosine schedule with warmup."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights (1-D), embeddings' scale-free parameters, the logit scale and
    bias, and parameters marked ``_no_weight_decay`` (Mamba's A_log and D) skip decay."""
    return (param.ndim < 2 or getattr(param, "_no_weight_decay", False)
            or name.endswith("bias") or "logit_scale" in name or "logit_bias" in name)


@dataclass
class OptimizerSpec:
    """What ``optim=`` configures; ``build`` makes the optimizer and its schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    # The cosine's length in steps; None: trainer.max_steps. A resumed run extended with a
    # larger trainer.max_steps keeps the length it started with (then holds the floor).
    schedule_steps: Optional[int] = None

    def __post_init__(self):
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(f"optim needs lr > 0, weight_decay >= 0, warmup_steps >= 0; got "
                             f"lr={self.lr}, weight_decay={self.weight_decay}, "
                             f"warmup_steps={self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        steps = self.schedule_steps
        if steps is not None and not (type(steps) is int and steps >= 1):
            raise ValueError(f"optim.schedule_steps must be null or an int >= 1, got "
                             f"{self.schedule_steps!r}")

    def build(self, model: nn.Module, max_steps: int):
        """AdamW over ``model``'s parameters and a warmup-then-cosine schedule over
        ``schedule_steps`` (``max_steps`` when that is None), flat at the floor after it."""
        decay, keep = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (keep if no_decay(name, param) else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay},
             {"params": keep, "weight_decay": 0.0}],
            lr=self.lr, betas=tuple(self.betas), eps=self.eps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, self._lr_factor(self.schedule_steps or max_steps))
        return optimizer, scheduler

    def _lr_factor(self, max_steps: int):
        warmup, floor = self.warmup_steps, self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return factor
