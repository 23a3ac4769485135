"""The task behind ``experiments/train.py``: config in, a run directory with results.json out.

Tests call ``train(cfg, run_dir)`` directly with a composed, shrunk config.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from kernels.common.machine import device_name
from ssm.data import ByteTokenizer
from ssm.data.files import BadSampleTracker, collate_image_text
from ssm.encoders import parameter_count
from ssm.eval.evaluate import Evaluator
from ssm.tasks.build import build, build_model
from ssm.train.checkpoint import load_checkpoint
from ssm.train.distributed import (DistInfo, barrier, broadcast_object, init_distributed,
                                   shutdown_distributed)
from ssm.train.loggers import JsonlWriter, NullLogger
from ssm.train.loop import Trainer
from ssm.train.memory import PeakMemory
from ssm.train.sampling import StepBatchSampler
from ssm.train.warm_start import warm_start

log = logging.getLogger(__name__)


def _batches(dataset, settings, dist: DistInfo, seed: int, start: int, tokenizer, max_length):
    """An endless iterator of collated micro-batches, starting at micro-batch ``start``."""
    local_batch = settings.batch_size // settings.grad_accum // dist.world_size
    collate = lambda items: collate_image_text(items, tokenizer, max_length)  # noqa: E731
    if isinstance(dataset, torch.utils.data.IterableDataset):
        loader = DataLoader(dataset, batch_size=local_batch, collate_fn=collate,
                            num_workers=settings.num_workers)
        batches = repeat_passes(loader)
        for _ in range(start):  # streaming shards can only resume by skipping ahead
            next(batches)
        return batches
    sampler = StepBatchSampler(len(dataset), local_batch * dist.world_size, seed, dist.rank,
                               dist.world_size, start)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                        num_workers=settings.num_workers,
                        persistent_workers=settings.num_workers > 0)
    return iter(loader)


def repeat_passes(loader):
    """The loader's batches, pass after pass; a dataset with ``set_epoch`` (WebDataset
    shards) is told each pass's number, so every pass shuffles its own way."""
    epoch = 0
    while True:
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def _shared_run_dir(run_dir: Path, dist: DistInfo) -> Path:
    """Every rank writes to rank 0's run dir. Hydra made one per process, with different
    time stamps; the other ranks' own (empty but for .hydra) dirs are removed."""
    shared = Path(broadcast_object(str(run_dir), dist))
    if shared != run_dir and run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def train(cfg: DictConfig, run_dir: Path, group=None) -> dict:
    """Train, evaluate, write metrics.jsonl, checkpoints/ and results.json; return results."""
    settings = build(cfg.trainer)
    device = settings.resolve_device()
    dist = init_distributed(device.type)
    try:
        return _train(cfg, Path(run_dir), settings, device, dist, group)
    finally:
        shutdown_distributed()


def _train(cfg, run_dir, settings, device, dist, group) -> dict:
    run_dir = _shared_run_dir(run_dir, dist)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = build(cfg.data)
    tokenizer = ByteTokenizer()
    objective = build(cfg.loss)
    model = build_model(cfg, objective).to(device)
    start_facts = warm_start(model, cfg.get("init_from"), cfg.get("freeze"))  # before the optimiser
    optimizer, scheduler = build(cfg.optim).build(model, settings.max_steps)
    metrics = JsonlWriter(run_dir / "metrics.jsonl")
    logger = build(cfg.logger) if dist.is_main else NullLogger()
    bad = BadSampleTracker(max_bad_fraction=settings.max_bad_fraction)

    start_step, state = 0, None
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if cfg.resume:
        if not checkpoint.exists():
            raise FileNotFoundError(f"resume=true but {checkpoint} does not exist; point "
                                    "hydra.run.dir at the run to continue")
        state = load_checkpoint(checkpoint)
        start_step = state["step"]
    elif dist.is_main and checkpoint.exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass resume=true to continue it "
                              "or choose another hydra.run.dir")
    barrier(dist)

    batches = _batches(data.train_dataset(), settings, dist, cfg.seed,
                       start_step * settings.grad_accum, tokenizer, data.max_length)
    trainer = Trainer(model, objective, optimizer, scheduler, settings, batches, run_dir, dist,
                      device, metrics, logger, bad, cfg.seed)
    if state is not None:
        trainer.restore(state)
        if dist.is_main:
            dropped = metrics.truncate_after(start_step)
            log.info("resumed at step %d (dropped %d later metric lines)", start_step, dropped)
    evaluator = Evaluator(tokenizer, data.max_length, device, cfg.eval.batch_size,
                          cfg.eval.get("caption"))

    def evaluate(step=None):
        results = evaluator(model, data.val_dataset(), data.zero_shot_dataset(),
                            data.zero_shot_templates)
        if step is not None and dist.is_main:
            metrics.log({"step": step, **{f"eval/{k}": v for k, v in results.items()}})
        return results

    evaluating = cfg.eval.get("enabled", True)
    if dist.is_main:
        logger.start(OmegaConf.to_container(cfg, resolve=True), run_dir, group)
    started = time.perf_counter()
    try:
        with PeakMemory(device) as peak:
            trainer.fit(on_eval=(lambda step: evaluate(step))
                        if dist.is_main and evaluating else None)
        results = {}
        if dist.is_main:
            results = evaluate() if evaluating else {}
            results.update(_run_facts(cfg, model, trainer, bad, started, peak, device))
            results.update(start_facts)
            (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            logger.log({f"final/{k}": v for k, v in results.items()
                        if isinstance(v, (int, float))}, step=trainer.step)
        barrier(dist)
        return results
    finally:
        logger.finish()


def _run_facts(cfg, model, trainer, bad, started, peak, device) -> dict:
    from hydra.core.hydra_config import HydraConfig
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {
        "text_encoder": choices.get("model/text_encoder", type(model.text_encoder).__name__),
        "image_encoder": choices.get("model/image_encoder", type(model.image_encoder).__name__),
        "loss": choices.get("loss", "custom"),
        "seed": cfg.seed, "steps": trainer.step, "samples_seen": trainer.samples_seen,
        "samples_per_s": trainer.samples_seen / max(trainer.train_seconds, 1e-9),
        "train_seconds": trainer.train_seconds, "wall_seconds": time.perf_counter() - started,
        **peak.facts(),          # peak_mem_mb, peak_mem_kind: this job's training steps
        **trainer.step_timing(),  # step_ms_median (after trainer.timing_warmup steps), ...
        "tokens_per_caption": trainer.text_tokens / max(trainer.text_captions, 1),
        "device": device_name(device),
        "params_text": parameter_count(model.text_encoder),
        "params_image": parameter_count(model.image_encoder),
        "params_total": parameter_count(model),
        **({"decoder": choices.get("model/decoder", type(model.decoder).__name__),
            "params_decoder": parameter_count(model.decoder)} if model.decoder is not None else {}),
        "bad_samples": bad.bad,
    }

