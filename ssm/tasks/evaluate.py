"""The task behind ``experiments/evaluate.py``: re-evaluate a saved checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ssm.data import ByteTokenizer
from ssm.eval.evaluate import Evaluator
from ssm.tasks.build import build, build_model
from ssm.train.checkpoint import load_checkpoint


def resolve_device(device: str = "auto") -> torch.device:
    """"auto": CUDA when there is one, else CPU; anything else as torch names it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_run(checkpoint: Path, device: str = "auto"):
    """(config, data source, model in eval mode on the device, device) of the training run
    that wrote ``checkpoint``, rebuilt from its .hydra/config.yaml."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.resolve().parent.parent
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not inside a training run: no {config_path}")
    cfg = OmegaConf.load(config_path)
    target = resolve_device(device)
    data = build(cfg.data)
    model = build_model(cfg, build(cfg.loss))
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return cfg, data, model.to(target).eval(), target


def evaluate_checkpoint(checkpoint: Path, device: str = "auto", batch_size: int = 250,
                        output: Path | None = None) -> tuple[dict, Path]:
    """Rebuild a run's model from its .hydra/config.yaml, load ``checkpoint`` and evaluate
    it on the run's data. Writes eval_<checkpoint stem>.json in the run dir (or ``output``)."""
    checkpoint = Path(checkpoint)
    cfg, data, model, target = load_run(checkpoint, device)
    evaluator = Evaluator(ByteTokenizer(), data.max_length, target, batch_size,
                          cfg.get("eval", {}).get("caption"))
    results = evaluator(model, data.val_dataset(), data.zero_shot_dataset(),
                        data.zero_shot_templates)
    path = output or checkpoint.resolve().parent.parent / f"eval_{checkpoint.stem}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results, path
