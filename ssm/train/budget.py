"""Equal wall-clock budgets: how many training steps fit in a time budget on this machine.

``calibrate_steps`` times a few real optimizer steps (forward, backward, update) of a copy
of the model, with its own optimizer, on the run's own batches, and returns the number of
steps whose median time fits the budget. The run then trains that many steps with its
schedule laid over them, so it stays deterministic once the count is known (the count is
written to the run's results). The copy leaves the model, its optimizer and the global RNG
untouched, so a budgeted run that lands on N steps trains exactly as a run of N steps.
Under torchrun every rank takes the mean of the ranks' median step times, so all agree.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from ssm.train.distributed import DistInfo, mean_across_ranks
from ssm.train.loop import TrainStep


def steps_within(seconds: float, step_seconds: float) -> int:
    """How many steps of ``step_seconds`` fit in ``seconds`` (at least 1)."""
    if not seconds > 0 or not step_seconds > 0:
        raise ValueError(f"need seconds > 0 and step_seconds > 0, got {seconds}, {step_seconds}")
    return max(1, int(seconds // step_seconds))


def calibrate_steps(model, objective, optim_spec, batches, device: torch.device,
                    seconds: float, dist: DistInfo, timed: int = 5, warmup: int = 2) -> dict:
    """Time ``warmup + timed`` steps on copies; returns {"max_steps", "step_ms_calibrated"}.

    batches: an iterator of collated micro-batches (dicts with images, tokens, mask); one
    is drawn per step (grad_accum is not modelled: pass the micro-batch of a full step).
    """
    if timed < 1 or warmup < 0:
        raise ValueError(f"need timed >= 1 and warmup >= 0, got {timed}, {warmup}")
    twin = copy.deepcopy(model)
    step = TrainStep(twin, objective)
    optimizer, _ = optim_spec.build(twin, warmup + timed)
    rng_state = torch.get_rng_state()
    times = []
    for k in range(warmup + timed):
        batch = next(batches)
        start = time.perf_counter()
        loss, _ = step(batch["images"].to(device), batch["tokens"].to(device),
                       batch["mask"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k >= warmup:
            times.append(time.perf_counter() - start)
    torch.set_rng_state(rng_state)
    median = float(mean_across_ranks(torch.tensor(statistics.median(times)), dist))
    return {"max_steps": steps_within(seconds, median), "step_ms_calibrated": 1000 * median}
