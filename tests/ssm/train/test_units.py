"""Pieces of the trainer on their own: sampler, optimizer groups, checkpoints, loggers."""
import json
import logging
import os
import random

import numpy as np
import pytest
import torch

from ssm.encoders import MambaTextEncoder
from ssm.train.checkpoint import (CheckpointError, load_checkpoint, newest_intact,
                                  remove_temporary_files, rng_state, save_checkpoint,
                                  set_rng_state)
from ssm.train.loggers import JsonlWriter, RunLog, WandbLogger
from ssm.train.optim import OptimizerSpec, no_decay
from ssm.train.sampling import StepBatchSampler


def test_ranks_together_see_the_single_process_batch():
    single = iter(StepBatchSampler(100, 8, seed=3))
    ranks = [iter(StepBatchSampler(100, 8, seed=3, rank=r, world_size=2)) for r in range(2)]
    for _ in range(30):  # crosses epoch boundaries (12 batches per epoch)
        assert next(single) == next(ranks[0]) + next(ranks[1])


def test_resuming_the_sampler_continues_the_sequence():
    full = iter(StepBatchSampler(50, 5, seed=0))
    batches = [next(full) for _ in range(25)]
    resumed = iter(StepBatchSampler(50, 5, seed=0, start=17))
    assert [next(resumed) for _ in range(8)] == batches[17:]
    epoch = [i for b in batches[:10] for i in b]
    assert sorted(epoch) == list(range(50))  # one epoch visits every item once


def test_sampler_bad_settings():
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        StepBatchSampler(100, 7, seed=0, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(4, 8, seed=0)


def test_weight_decay_skips_norms_biases_logit_scale_and_ssm_parameters():
    model = MambaTextEncoder(width=16, depth=1, d_state=4)
    names = {n for n, p in model.named_parameters() if no_decay(n, p)}
    assert "mixers.0.A_log" in names and "mixers.0.D" in names and "norms.0.weight" in names
    assert "mixers.0.in_proj.weight" not in names and "embed.weight" not in names
    optimizer, _ = OptimizerSpec(weight_decay=0.3).build(model, max_steps=10)
    decayed, kept = optimizer.param_groups
    assert decayed["weight_decay"] == 0.3 and kept["weight_decay"] == 0.0
    assert len(decayed["params"]) + len(kept["params"]) == len(list(model.parameters()))


def test_schedule_warms_up_then_follows_a_cosine_to_the_floor():
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = OptimizerSpec(lr=1.0, warmup_steps=4, min_lr_ratio=0.1).build(model, 20)
    lrs = []
    for _ in range(20):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        OptimizerSpec(min_lr_ratio=2.0)


def test_checkpoint_round_trip_restores_every_rng(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    weights = torch.randn(3)
    state = {"rng": rng_state(), "weights": weights}
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(state, tmp_path / "ckpt" / "last.pt")
    loaded = load_checkpoint(tmp_path / "ckpt" / "last.pt")  # weights_only=True inside
    set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    torch.testing.assert_close(loaded["weights"], state["weights"])
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["last.pt"]  # no temp left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):
        save_checkpoint({"step": 2, "bad": lambda: None}, path)  # not picklable
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # its temporary file removed


def test_one_save_puts_the_numbered_file_in_place_then_last(tmp_path):
    save_checkpoint({"step": 4, "model": {}}, tmp_path / "last.pt", also=[tmp_path / "step_4.pt"])
    assert load_checkpoint(tmp_path / "step_4.pt") == load_checkpoint(tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_4.pt"]


def test_an_unreadable_checkpoint_is_named(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 3}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def _checkpoints(folder, steps, last):
    for step in steps:
        save_checkpoint({"step": step, "model": {}}, folder / f"step_{step:07d}.pt")
    if last is not None:
        save_checkpoint({"step": last, "model": {}}, folder / "last.pt")


def test_newest_intact_checkpoint(tmp_path):
    assert newest_intact(tmp_path) is None
    _checkpoints(tmp_path, [2, 4], last=5)
    path, state, problems = newest_intact(tmp_path)
    assert (path.name, state["step"], problems) == ("last.pt", 5, [])
    _checkpoints(tmp_path, [6], last=None)  # killed between the numbered file and last.pt
    assert newest_intact(tmp_path)[0].name == "step_0000006.pt"
    (tmp_path / "last.pt").write_bytes(b"garbage")
    (tmp_path / "step_0000006.pt").write_bytes(b"garbage")
    path, state, problems = newest_intact(tmp_path)
    assert path.name == "step_0000004.pt" and len(problems) == 2
    assert str(tmp_path / "last.pt") in problems[0]
    for p in tmp_path.glob("*.pt"):
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="step_0000002.pt"):
        newest_intact(tmp_path)


def test_temporary_files_of_killed_saves_are_removed(tmp_path):
    save_checkpoint({"step": 1}, tmp_path / "last.pt")
    for name in (".last.pt.tmp-123", ".step_0000002.pt.tmp-9"):
        (tmp_path / name).write_bytes(b"half a checkpoint")
    removed = remove_temporary_files(tmp_path)
    assert sorted(p.name for p in removed) == [".last.pt.tmp-123", ".step_0000002.pt.tmp-9"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": os.getcwd, "step": 3}, path)
    with pytest.raises(Exception):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_jsonl_truncation_drops_only_later_steps(tmp_path):
    writer = JsonlWriter(tmp_path / "metrics.jsonl")
    for step in range(1, 7):
        writer.log({"step": step, "loss": float(step)})
    assert writer.truncate_after(4) == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]


def test_jsonl_truncation_drops_a_line_a_kill_cut_short(tmp_path):
    writer = JsonlWriter(tmp_path / "metrics.jsonl")
    for step in range(1, 4):
        writer.log({"step": step, "loss": float(step)})
    with open(writer.path, "a") as f:
        f.write('{"step": 4, "lo')
    assert writer.truncate_after(3) == 1
    assert [json.loads(x)["step"] for x in writer.path.read_text().splitlines()] == [1, 2, 3]


def test_schedule_steps_keeps_the_cosine_length_and_then_holds_the_floor():
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = OptimizerSpec(lr=1.0, warmup_steps=0, min_lr_ratio=0.1,
                                         schedule_steps=4).build(model, max_steps=8)
    lrs = []
    for _ in range(8):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[0] > 0.5 and lrs[3:] == pytest.approx([0.1] * 5)
    with pytest.raises(ValueError, match="optim.schedule_steps"):
        OptimizerSpec(schedule_steps=0)


@pytest.mark.parametrize("accepted", [True, False])
def test_run_log_holds_records_until_the_start_is_accepted(tmp_path, accepted):
    path, log = tmp_path / "train.log", logging.getLogger("ssm.test_run_log")
    with RunLog(path, held=True) as run_log:
        log.info("checked the data")
        assert not path.exists() or path.read_text() == ""
        if accepted:
            run_log.accept()
            log.info("step 1")
    text = path.read_text() if path.exists() else ""
    assert (("checked the data" in text and "step 1" in text) if accepted else text == "")
    with RunLog(path):  # a run's own log, without Hydra
        log.info("more")
    assert "more" in path.read_text()


def test_wandb_offline_writes_a_local_run(tmp_path):
    logger = WandbLogger(project="test", mode="offline")
    logger.start({"seed": 0, "model": {"width": 8}}, tmp_path, group="sweep-1")
    logger.log({"loss": 1.0}, step=1)
    logger.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    with pytest.raises(ValueError, match="logger.mode"):
        WandbLogger(mode="sometimes")
