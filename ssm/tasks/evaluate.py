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


def evaluate_checkpoint(checkpoint: Path, device: str = "auto", batch_size: int = 250,
                        output: Path | None = None) -> tuple[dict, Path]:
    """Rebuild a run's model from its .hydra/config.yaml, load ``checkpoint`` and evaluate
    it on the run's data. Writes eval_<checkpoint stem>.json in the run dir (or ``output``)."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.resolve().parent.parent
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not inside a training run: no {config_path}")
    cfg = OmegaConf.load(config_path)
    target = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                          else ("cpu" if device == "auto" else device))
    data = build(cfg.data)
    model = build_model(cfg, build(cfg.loss))
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model.to(target)
    options = {k: cfg.eval[k] for k in ("needle_items", "blind_captions", "probe_items")
               if k in cfg.get("eval", {})}
    results = Evaluator(ByteTokenizer(), data.max_length, target, batch_size, **options)(
        model, data.val_dataset(), data.zero_shot_dataset(), data.zero_shot_templates,
        train_dataset=data.train_dataset())
    path = output or run_dir / f"eval_{checkpoint.stem}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results, path
