"""The task behind ``experiments/evaluate.py``: re-evaluate a saved checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

from ssm.eval.evaluate import Evaluator
from ssm.tasks.build import RunModel, build, model_from_checkpoint, resolve_device


def load_run(checkpoint: Path, device: str = "auto"):
    """(run, data source, device) of the training run that wrote ``checkpoint``: the run
    (``RunModel``: config, tokenizer, model in eval mode, now on the device) rebuilt from
    its .hydra/config.yaml, and its data source."""
    run: RunModel = model_from_checkpoint(Path(checkpoint))
    target = resolve_device(device)
    run.model = run.model.to(target).eval()
    return run, build(run.cfg.data), target


def evaluate_checkpoint(checkpoint: Path, device: str = "auto", batch_size: int = 250,
                        output: Path | None = None, caption: dict | None = None
                        ) -> tuple[dict, Path]:
    """Rebuild a run's model from its .hydra/config.yaml, load ``checkpoint`` and evaluate
    it on the run's data. Writes eval_<checkpoint stem>.json in the run dir (or ``output``).
    caption: settings that replace the run's ``eval.caption`` ones (strategy, guidance,
    max_new_tokens, references), so one checkpoint can be scored under other decoding."""
    checkpoint = Path(checkpoint)
    run, data, target = load_run(checkpoint, device)
    eval_cfg = run.cfg.get("eval", {})
    caption_cfg = {**(eval_cfg.get("caption") or {}), **(caption or {})}
    options = {k: eval_cfg[k] for k in ("needle_items", "blind_captions", "probe_items")
               if k in eval_cfg}
    evaluator = Evaluator(run.tokenizer, data.max_length, target, batch_size,
                          caption=caption_cfg, **options)
    results = evaluator(run.model, data.val_dataset(), data.zero_shot_dataset(),
                        data.zero_shot_templates, train_dataset=data.train_dataset())
    path = output or run.run_dir / f"eval_{checkpoint.stem}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results, path
