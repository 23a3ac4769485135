"""The task behind ``experiments/train.py``: config in, a run directory with results.json out.

Tests call ``train(cfg, run_dir)`` directly with a composed, shrunk config. Whether a start
may begin or continue the run in ``run_dir`` is ``ssm.tasks.run_dir``'s decision; this module
then checks everything the run will need before step 1 (data, evaluation set, checkpoint
dir, the model on a real batch), and only then writes the start into the run's record,
trains, evaluates and writes the results. The run's text log goes to ``train.log``.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from kernels.common.machine import device_name
from ssm.data import ByteTokenizer
from ssm.data.files import BadSampleTracker, collate_image_text
from ssm.encoders import parameter_count
from ssm.eval.evaluate import Evaluator
from ssm.tasks.build import build, build_model, build_tokenizer, check_vocabulary
from ssm.tasks.run_dir import (CHECKPOINTS, HydraStart, RunStart, accept, open_run, record_event,
                               write_text_atomic)
from ssm.train.budget import calibrate_steps
from ssm.train.checkpoint import CheckpointError, load_checkpoint
from ssm.train.distributed import (DistInfo, barrier, broadcast_object, init_distributed,
                                   shutdown_distributed)
from ssm.train.loggers import JsonlWriter, NullLogger, RunLog
from ssm.train.loop import Trainer
from ssm.train.memory import PeakMemory
from ssm.train.sampling import StepBatchSampler
from ssm.train.warm_start import warm_start

log = logging.getLogger(__name__)
TIME_BUDGET = "time_budget.json"  # in the run dir: the step count a time budget chose


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
    time stamps; the other ranks' own (empty but for train.log) dirs are removed."""
    shared = Path(broadcast_object(str(run_dir), dist))
    if shared != run_dir and run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    return shared


def _device_type(device: str) -> str:
    """'cuda' or 'cpu', as TrainerSettings.resolve_device would resolve ``device``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def train(cfg: DictConfig, run_dir: Path, group=None) -> dict:
    """Train, evaluate, write metrics.jsonl, checkpoints/ and results.json; return results.

    ``resume=true`` continues the run in ``run_dir`` with the config it started with; see
    ``ssm.tasks.run_dir`` for what a resume may change and what refuses a start."""
    group_device = _device_type(cfg.trainer.get("device", "auto"))
    dist = init_distributed(group_device)
    try:
        run_dir = _shared_run_dir(Path(run_dir), dist)
        start = _open(run_dir, cfg, dist)
        # A resume's log lines reach train.log only once the resume is accepted.
        with RunLog(run_dir / "train.log", enabled=dist.is_main, held=start.resumed) as run_log:
            return _train(start, dist, group, run_log, group_device)
    finally:
        shutdown_distributed()


def _open(run_dir: Path, cfg: DictConfig, dist: DistInfo) -> RunStart:
    """Rank 0 decides how this start goes; every rank gets its decision, or its refusal."""
    decision = None
    if dist.is_main:
        try:
            decision = open_run(run_dir, cfg, HydraStart.current())
        except Exception as exc:  # noqa: BLE001 (every rank raises it, below)
            decision = exc
    shared = broadcast_object(decision.without_state() if isinstance(decision, RunStart)
                              else decision, dist)
    if dist.is_main:
        shared = decision  # rank 0 keeps the checkpoint it already loaded
    if isinstance(shared, BaseException):
        raise shared
    if shared.state is None and shared.checkpoint is not None:
        shared.state = load_checkpoint(shared.checkpoint)
    return shared


def _train(start: RunStart, dist: DistInfo, group, run_log: RunLog, group_device: str) -> dict:
    cfg, run_dir = start.cfg, start.run_dir
    settings = build(cfg.trainer)
    device = settings.resolve_device()
    if dist.enabled and device.type != group_device:
        # The process group was set up from the command line, before the run's config was read.
        raise ValueError(f"the run trains on trainer.device={settings.device}, but the process "
                         f"group was set up for {group_device}: pass trainer.device="
                         f"{settings.device} on the command line")
    torch.manual_seed(cfg.seed)
    data = build(cfg.data)
    tokenizer = build_tokenizer(cfg)
    objective = build(cfg.loss)
    _prepare_word_noise(objective, tokenizer, data)
    model = build_model(cfg, objective).to(device)
    check_vocabulary(tokenizer, model.text_encoder)
    start_facts = warm_start(model, cfg.get("init_from"), cfg.get("freeze"))  # before the optimiser
    # After warm_start: a frozen tower makes steps cheaper, and the budget times real steps.
    budget = _time_budget(start, settings, model, objective, data, dist, device, tokenizer)
    optimizer, scheduler = build(cfg.optim).build(model, settings.max_steps)
    metrics = JsonlWriter(run_dir / "metrics.jsonl")
    logger = build(cfg.logger) if dist.is_main else NullLogger()
    bad = BadSampleTracker(max_bad_fraction=settings.max_bad_fraction)

    # -- before step 1: everything the run will need ---------------------------------------
    # Rank 0 alone evaluates, so it alone reads the evaluation sets.
    evaluating = cfg.eval.get("enabled", True)
    val_set, zero_shot = (_on_main(dist, lambda: _evaluation_sets(data)) if evaluating
                          else None) or (None, None)
    evaluating = evaluating and dist.is_main
    train_set = data.train_dataset()  # one object: the batches, and the blind probe baseline
    batches = _batches(train_set, settings, dist, cfg.seed,
                       start.step * settings.grad_accum, tokenizer, data.max_length)
    trainer = Trainer(model, objective, optimizer, scheduler, settings, batches, run_dir, dist,
                      device, metrics, logger, bad, cfg.seed)
    if start.state is not None:
        try:
            trainer.restore(start.state)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{start.checkpoint} does not fit the run's model and "
                                  f"trainer: {type(exc).__name__}: {exc}") from exc
    trainer.dry_run()

    def record_start():
        _check_writable(run_dir / CHECKPOINTS)
        notes = accept(start)  # from here on, this start is part of the run's record
        run_log.accept()
        if budget:  # the step count a resumed run must keep
            write_text_atomic(run_dir / TIME_BUDGET, json.dumps(
                {k: v for k, v in budget.items() if k != "time_budget_s"}) + "\n")
        _log_start(start, notes, model, device)
    _on_main(dist, record_start)

    evaluator = Evaluator(tokenizer, data.max_length, device, cfg.eval.batch_size,
                          needle_items=cfg.eval.get("needle_items", 200),
                          blind_captions=cfg.eval.get("blind_captions", 2000),
                          probe_items=cfg.eval.get("probe_items"),
                          caption=cfg.eval.get("caption"))
    curve_pairs = cfg.eval.get("curve_pairs", 0)

    def evaluate(step=None):
        if step is not None and curve_pairs:  # during training: a validation-curve point
            results = evaluator.curve(model, val_set, curve_pairs)
        else:
            results = evaluator(model, val_set, zero_shot, data.zero_shot_templates,
                                train_dataset=train_set)
        if step is not None:
            metrics.log({"step": step, **{f"eval/{k}": v for k, v in results.items()}})
            log.info("evaluation at step %d: %s", step, _summary(results))
        return results

    started = time.perf_counter()
    try:
        if dist.is_main:
            logger.start(OmegaConf.to_container(cfg, resolve=True), run_dir, group)
        with PeakMemory(device) as peak:
            trainer.fit(on_eval=evaluate if evaluating else None)
        results = {}
        if dist.is_main:
            results = evaluate() if evaluating else {}
            results.update(_run_facts(cfg, start.choices, model, trainer, bad, started, peak,
                                      device))
            results.update(start_facts)
            results.update(budget)
            write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
            if evaluator.items:  # per-item outcomes: the reports' paired bootstrap reads them
                write_text_atomic(run_dir / "eval_items.json",
                                  json.dumps(evaluator.items) + "\n")
            logger.log({f"final/{k}": v for k, v in results.items()
                        if isinstance(v, (int, float))}, step=trainer.step)
            _log_end(run_dir, results, bad)
            record_event(run_dir, "finish", step=trainer.step, results="results.json")
        barrier(dist)
        return results
    except BaseException as exc:
        if dist.is_main:
            log.error("stopped at step %d: %s: %s", trainer.step, type(exc).__name__, exc)
            record_event(run_dir, "stopped", step=trainer.step,
                         error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        logger.finish()


def _time_budget(start: RunStart, settings, model, objective, data, dist, device,
                 tokenizer) -> dict:
    """With trainer.time_budget_s, set settings.max_steps to the steps that fit (timed on
    copies, see ssm.train.budget; a resumed run keeps the count it chose, from
    time_budget.json). Returns the facts for results.json ({} without a budget)."""
    if settings.time_budget_s is None:
        return {}
    record = start.run_dir / TIME_BUDGET
    if start.resumed and record.exists():
        chosen = json.loads(record.read_text())
    else:
        batches = _batches(data.train_dataset(), settings, dist, start.cfg.seed, 0, tokenizer,
                           data.max_length)
        chosen = calibrate_steps(model, objective, build(start.cfg.optim), batches, device,
                                 settings.time_budget_s, dist)
    settings.max_steps = chosen["max_steps"]
    log.info("time budget %.0f s: %d steps of %.0f ms", settings.time_budget_s,
             chosen["max_steps"], chosen["step_ms_calibrated"])
    return {"time_budget_s": settings.time_budget_s, **chosen}


def _prepare_word_noise(objective, tokenizer, data) -> None:
    """The caption history noise splits words at the space byte, so it needs byte tokens;
    and it must never write the data's held-out pairs as text."""
    if not objective.caption_word_noise:
        return
    if not isinstance(tokenizer, ByteTokenizer):
        raise ValueError(f"loss.caption_word_noise needs the byte tokenizer (words are split "
                         f"at the space byte), got {type(tokenizer).__name__}")
    objective.avoid_word_pairs(getattr(data.train_dataset(), "held_out_phrases", ()))


def _on_main(dist: DistInfo, work):
    """``work()`` on rank 0 alone; what it raises is raised on every rank (none is left
    waiting for rank 0), and what it returns is returned on rank 0 (None elsewhere)."""
    value, problem = None, None
    if dist.is_main:
        try:
            value = work()
        except Exception as exc:  # noqa: BLE001 (re-raised on every rank, below)
            problem = exc
    problem = broadcast_object(problem, dist)
    if problem is not None:
        raise problem
    return value


def _evaluation_sets(data) -> tuple:
    """(validation set, zero-shot set or None), the validation set checked readable."""
    val_set = data.val_dataset()  # a missing file raises here, not after training
    _check_eval_set(val_set)
    return val_set, data.zero_shot_dataset()


def _check_eval_set(dataset, limit: int = 64) -> None:
    """The evaluation set is there and readable: one of its first ``limit`` samples loads."""
    if isinstance(dataset, IterableDataset):
        items = itertools.islice(iter(dataset), limit)
    else:
        items = (dataset[i] for i in range(min(limit, len(dataset))))
    if not any(item is not None for item in items):
        raise ValueError(f"the evaluation set ({type(dataset).__name__}) is empty or none of "
                         f"its first {limit} samples loads; see the warnings above")


def _check_writable(folder: Path) -> None:
    """Checkpoints can be written into ``folder``: made, and a probe file written and removed,
    now rather than at the first save. (The probe's name is one that the next start clears
    as a checkpoint temporary file, should a kill leave it.)"""
    probe = folder / f".write-check.tmp-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write checkpoints into {folder}: {exc}") from exc


def _summary(results: dict) -> str:
    keys = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "order_acc", "zeroshot_acc", "val_loss",
            "val_t2i_r5")
    return ", ".join(f"{k} {results[k]:.3f}" for k in keys if isinstance(results.get(k), float))


def _log_start(start: RunStart, notes, model, device) -> None:
    if start.resumed:
        where = (f"from {start.checkpoint.relative_to(start.run_dir)}" if start.checkpoint
                 else "from step 0 (the run was stopped before its first checkpoint)")
        log.info("resuming the run in %s at step %d %s", start.run_dir, start.step, where)
    else:
        log.info("new run in %s", start.run_dir)
    for key, (old, new) in start.changes.items():
        log.info("changed on resume: %s %s -> %s", key, old, new)
    for level, message in notes:
        getattr(log, level)(message)
    log.info("%d parameters (text %d, image %d) on %s", parameter_count(model),
             parameter_count(model.text_encoder), parameter_count(model.image_encoder),
             device_name(device))


def _log_end(run_dir: Path, results: dict, bad: BadSampleTracker) -> None:
    if bad.bad:
        log.warning("bad samples: %d of %d skipped (%.2f%%)", bad.bad, bad.seen,
                    100 * bad.fraction)
    else:
        log.info("bad samples: none of %d", bad.seen)
    log.info("finished at step %d: %s; results in %s", results["steps"],
             _summary(results) or "no evaluation", run_dir / "results.json")


def _run_facts(cfg, choices, model, trainer, bad, started, peak, device) -> dict:
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
