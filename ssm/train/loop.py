"""The training loop: one optimizer step = grad_accum micro-batches of the global batch.

Rank 0 alone writes metrics.jsonl, checkpoints and logs; every logged step is also a line
of the run's text log (train.log). A NaN or Inf loss stops the run with the step named,
after saving the last good state.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssm.data.files import TooManyBadSamples
from ssm.train.checkpoint import numbered_name, rng_state, save_checkpoint, set_rng_state
from ssm.train.distributed import DistInfo, mean_across_ranks

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainerSettings:
    """``trainer=`` in the config. batch_size is the global batch over all processes."""

    max_steps: int = 400
    batch_size: int = 64
    grad_accum: int = 1
    precision: str = "fp32"
    grad_clip: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100
    eval_every: int = 0
    num_workers: int = 0
    device: str = "auto"
    max_bad_fraction: float = 0.1
    progress: bool = True
    # Steps left out of step_ms_median in results.json: the first ones pay one-time costs
    # (building the CPU scan extension, Triton compiles, first allocations).
    timing_warmup: int = 2

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision must be one of {sorted(PRECISIONS)}, "
                             f"got {self.precision!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.timing_warmup < 0:
            raise ValueError(f"trainer.timing_warmup must be >= 0, got {self.timing_warmup}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"trainer.batch_size ({self.batch_size}) must be a multiple of "
                             f"trainer.grad_accum ({self.grad_accum})")

    def resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


class TrainStep(nn.Module):
    """Model and objective as one module, so DDP sees every parameter used in a step."""

    def __init__(self, model, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, images, tokens, mask, generator=None):
        out = self.model(images, tokens, mask)
        return self.objective(self.model, out, tokens, mask, generator=generator)


class NonFiniteLoss(FloatingPointError):
    pass


class Trainer:
    def __init__(self, model, objective, optimizer, scheduler, settings: TrainerSettings,
                 batches, run_dir: Path, dist_info: DistInfo, device: torch.device,
                 metrics_writer, logger, bad_tracker, seed: int):
        self.model, self.objective = model, objective
        self.optimizer, self.scheduler, self.settings = optimizer, scheduler, settings
        self.batches, self.run_dir, self.dist, self.device = batches, Path(run_dir), dist_info, device
        self.metrics, self.logger, self.bad_tracker = metrics_writer, logger, bad_tracker
        self.step_module = self._train_step = TrainStep(model, objective)
        if dist_info.enabled:
            # A captioning-only objective leaves the text tower without gradients.
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=not getattr(objective, "uses_text_tower", True))
        self.autocast_dtype = PRECISIONS[settings.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
        # Hard-negative sampling draws from its own generator, so resuming restores it.
        self.generator = torch.Generator().manual_seed(seed + dist_info.rank)
        self.step = 0
        self.skipped_updates = 0  # fp16 steps whose update the grad scaler dropped
        self.samples_seen = 0
        self.train_seconds = 0.0
        # This process's steps only (not checkpointed): the wall time of each optimizer
        # step, and the caption tokens (mask) and captions of this rank's micro-batches.
        self.step_seconds: list[float] = []
        self.text_tokens, self.text_captions = 0, 0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "samples_seen": self.samples_seen,
                "skipped_updates": self.skipped_updates,
                "train_seconds": self.train_seconds, "rng": rng_state(),
                "generator": self.generator.get_state(),
                "bad_samples": self.bad_tracker.state_dict()}

    def save(self, also_numbered: bool = False) -> None:
        """last.pt, and step_N.pt too when ``also_numbered``: one write, the numbered name
        put in place first, so a kill between the two leaves the newer state on disk."""
        if not self.dist.is_main:
            return
        numbered = self.checkpoint_path.with_name(numbered_name(self.step))
        save_checkpoint(self.state(), self.checkpoint_path, also=[numbered] if also_numbered else [])

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.samples_seen = state["step"], state["samples_seen"]
        self.skipped_updates = state["skipped_updates"]
        self.train_seconds = state["train_seconds"]
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        self.bad_tracker.load_state_dict(state["bad_samples"])

    # -- the loop --------------------------------------------------------------------------
    def dry_run(self, max_batches: int = 100) -> None:
        """The first usable micro-batch through model and loss, without an update, so that a
        model, data or device problem shows before step 1. The batch goes back in the queue,
        and parameters, buffers and every RNG are left as they were: training is the same as
        without this call."""
        devices = [self.device] if self.device.type == "cuda" else []
        buffers = {name: b.detach().clone() for name, b in self._train_step.named_buffers()}
        held = []
        with torch.random.fork_rng(devices=devices):
            for _ in range(max_batches):  # all-bad batches come out empty
                held.append(next(self.batches))
                if held[-1]["images"].shape[0] >= 2:
                    break
            else:
                bad = sum(b["n_bad"] for b in held)
                raise TooManyBadSamples(
                    f"the first {max_batches} micro-batches held fewer than 2 usable samples "
                    f"each ({bad} of {bad + sum(b['images'].shape[0] for b in held)} samples "
                    "were bad): check the dataset's files")
            batch = held[-1]
            with torch.no_grad(), torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                                 enabled=self.autocast_dtype is not None):
                self._train_step(batch["images"].to(self.device), batch["tokens"].to(self.device),
                                 batch["mask"].to(self.device),
                                 generator=torch.Generator().manual_seed(0))
        for name, buffer in self._train_step.named_buffers():
            buffer.copy_(buffers[name])
        self.batches = itertools.chain(held, self.batches)

    def fit(self, on_eval=None) -> None:
        """Train to settings.max_steps; ``on_eval(step)`` runs every eval_every steps."""
        progress = self._progress_bar()
        # Log lines print above the progress bar instead of through it.
        redirect = contextlib.nullcontext()
        if progress is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm
            redirect = logging_redirect_tqdm()
        try:
            with redirect:
                self._fit(progress, on_eval)
        finally:
            if progress is not None:
                progress.close()

    def _fit(self, progress, on_eval) -> None:
        s = self.settings
        window_start, window_samples = time.perf_counter(), 0
        while self.step < s.max_steps:
            start = time.perf_counter()
            loss, terms, n = self._optimizer_step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the step's kernels, not their launch
            self.step_seconds.append(time.perf_counter() - start)
            self.train_seconds += self.step_seconds[-1]
            self.step += 1
            self.samples_seen += n
            window_samples += n
            if self.step % s.log_every == 0 or self.step == s.max_steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                          "samples_per_s": window_samples / max(elapsed, 1e-9),
                          "logit_scale": float(self.model.logit_scale.detach().exp()),
                          "bad_samples": self.bad_tracker.bad,
                          "skipped_updates": self.skipped_updates,
                          **{f"loss_{k}": v for k, v in terms.items()}}
                self._log(record)
                if progress is not None:
                    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.2e}",
                                         samples_s=f"{record['samples_per_s']:.0f}",
                                         bad=self.bad_tracker.bad)
                window_start, window_samples = time.perf_counter(), 0
            if progress is not None:
                progress.update(1)
            # Evaluate before saving: a checkpoint at step k then implies its evaluation
            # line is in metrics.jsonl, so a resume from k neither loses nor repeats it.
            if on_eval is not None and s.eval_every and self.step % s.eval_every == 0:
                on_eval(self.step)
            if self.step % s.checkpoint_every == 0 or self.step == s.max_steps:
                self.save(also_numbered=self.step % s.checkpoint_every == 0)

    def step_timing(self) -> dict:
        """Median, min and max wall time (ms) of this process's optimizer steps after the
        first ``settings.timing_warmup`` (all of them when there are no more), and how many
        steps that was. Includes fetching the batch, as train_seconds does."""
        timed = self.step_seconds[self.settings.timing_warmup:] or self.step_seconds
        if not timed:
            return {"step_ms_median": None, "step_ms_min": None, "step_ms_max": None,
                    "timed_steps": 0}
        ms = [1000 * t for t in timed]
        return {"step_ms_median": statistics.median(ms), "step_ms_min": min(ms),
                "step_ms_max": max(ms), "timed_steps": len(ms)}

    def _optimizer_step(self):
        s = self.settings
        self.step_module.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, totals, samples = 0.0, {}, 0
        for micro in range(s.grad_accum):
            images, tokens, mask, n_global = self._next_batch()
            sync = (micro == s.grad_accum - 1 or not self.dist.enabled)
            context = contextlib.nullcontext() if sync else self.step_module.no_sync()
            with context, torch.autocast(self.device.type, dtype=self.autocast_dtype,
                                         enabled=self.autocast_dtype is not None):
                loss, terms = self._loss(images, tokens, mask)
            self.scaler.scale(loss / s.grad_accum).backward()
            total += float(mean_across_ranks(loss.detach().float(), self.dist)) / s.grad_accum
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(mean_across_ranks(v.float(), self.dist)) / s.grad_accum
            samples += n_global
        if not torch.isfinite(torch.tensor(total)):
            self.save()  # parameters are still those of the last good step
            raise NonFiniteLoss(
                f"loss is {total} at step {self.step + 1}; stopped. The last good state "
                f"(step {self.step}) is saved in {self.checkpoint_path}")
        self.scaler.unscale_(self.optimizer)
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() < scale:
            # fp16 overflow: the scaler skipped this update; the schedule waits for a real one.
            self.skipped_updates += 1
        else:
            self.scheduler.step()
        self.model.clamp_logit_scale()
        return total, totals, samples

    def _loss(self, images, tokens, mask):
        """(loss, {term: detached value}) of one micro-batch."""
        return self.step_module(images, tokens, mask, generator=self.generator)

    def _next_batch(self):
        """The next non-empty micro-batch; counts and checks skipped (bad) samples."""
        while True:
            batch = next(self.batches)
            self.bad_tracker.update(n_good=batch["images"].shape[0], n_bad=batch["n_bad"])
            if batch["images"].shape[0] >= 2:
                break
        n_global = batch["images"].shape[0] * self.dist.world_size
        self.text_tokens += int(batch["mask"].sum())
        self.text_captions += batch["mask"].shape[0]
        return (batch["images"].to(self.device, non_blocking=True),
                batch["tokens"].to(self.device), batch["mask"].to(self.device), n_global)

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        self.metrics.log(record)
        self.logger.log(record, step=self.step)
        log.info("step %d/%d  loss %.4f  lr %.3g  %.0f samples/s  bad samples %d",
                 record["step"], self.settings.max_steps, record["loss"], record["lr"],
                 record["samples_per_s"], record["bad_samples"])

    def _progress_bar(self):
        if not (self.settings.progress and self.dist.is_main):
            return None
        from tqdm import tqdm
        return tqdm(total=self.settings.max_steps, initial=self.step, desc="train",
                    dynamic_ncols=True)
