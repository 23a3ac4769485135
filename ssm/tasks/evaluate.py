"""The task behind ``experiments/evaluate.py``: re-evaluate a saved checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

from ssm.eval.evaluate import Evaluator
from ssm.tasks.build import build, model_from_checkpoint, resolve_device


def evaluate_checkpoint(checkpoint: Path, device: str = "auto", batch_size: int = 250,
                        output: Path | None = None) -> tuple[dict, Path]:
    """Rebuild a run's model from its .hydra/config.yaml, load ``checkpoint`` and evaluate
    it on the run's data. Writes eval_<checkpoint stem>.json in the run dir (or ``output``)."""
    checkpoint = Path(checkpoint)
    run = model_from_checkpoint(checkpoint)
    target = resolve_device(device)
    data = build(run.cfg.data)
    model = run.model.to(target)
    results = Evaluator(run.tokenizer, data.max_length, target, batch_size)(
        model, data.val_dataset(), data.zero_shot_dataset(), data.zero_shot_templates)
    path = output or run.run_dir / f"eval_{checkpoint.stem}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results, path
