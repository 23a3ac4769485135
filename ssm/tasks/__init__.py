"""Task functions behind the entry points in experiments/: config in, run directory out.

Each reads a composed Hydra config, builds what it needs from the layers below (data,
model, trainer, evaluator) and writes its files. Tests call them directly.
"""
from ssm.tasks.evaluate import evaluate_checkpoint
from ssm.tasks.train import train

__all__ = ["evaluate_checkpoint", "train"]
