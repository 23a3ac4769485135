"""A run directory keeps its record: resume continues the same run with the config it
started with, refused starts change nothing, a corrupt checkpoint is named and passed over.

Starts are made as Hydra makes them (HydraConfig set with the start's command-line
overrides and group choices), through the real task, on real files.
"""
import logging

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from ssm.tasks import train
from ssm.tasks.run_dir import CHANGEABLE_ON_RESUME, ResumeRefused, reconcile
from ssm.train.checkpoint import CheckpointError
from ssm.train.loop import NonFiniteLoss
from faults import inject
from run_config import CONF, ROOT, shrunk
from run_files import files_of, history, losses, metric_lines


@pytest.fixture
def hydra_start():
    """``hydra_start(*overrides, shrink=True)``: conf/train.yaml composed as a Hydra start
    with these command-line overrides (after the shrink ones, unless shrink=False, as a
    user's bare resume command); HydraConfig is set as in a real run and the task's config
    returned."""
    def start(*overrides, shrink=True):
        args = shrunk(*overrides) if shrink else list(overrides)
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(config_name="train", overrides=args, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg
    yield start
    HydraConfig.instance().cfg = None


FIRST = ("trainer.max_steps=6", "trainer.checkpoint_every=2", "optim.warmup_steps=1",
         "optim.lr=0.003")


@pytest.mark.slow  # three training runs
def test_resume_takes_the_runs_own_config_and_refuses_changes(hydra_start, tmp_path,
                                                               monkeypatch):
    whole, run = tmp_path / "whole", tmp_path / "run"
    train(hydra_start(*FIRST), whole)
    inject(nan_at_step=5, patch=monkeypatch.setattr)  # stops after saving step 4
    with pytest.raises(NonFiniteLoss):
        train(hydra_start(*FIRST), run)
    monkeypatch.undo()
    before = files_of(run)

    # Overrides that would change the run: refused, naming key and both values.
    with pytest.raises(ResumeRefused, match=r"trainer\.batch_size \(the run has 8, this "
                                            r"start asks 16\)"):
        train(hydra_start("resume=true", "trainer.batch_size=16", shrink=False), run)
    with pytest.raises(ResumeRefused, match=r"model/text_encoder \(the run has mamba, this "
                                            r"start asks transformer\)"):
        train(hydra_start("resume=true", "model/text_encoder=transformer", shrink=False), run)
    assert files_of(run) == before  # config snapshot, history, metrics, log: all as they were

    # The README's bare command: the defaults it composes (500 steps of 64, a wider model,
    # another schedule) are not asked for; the run's own config continues the run.
    results = train(hydra_start("resume=true", shrink=False), run)
    assert results["steps"] == 6 and results["samples_seen"] == 48
    assert losses(run) == losses(whole)  # same batches, schedule and arithmetic
    assert (run / ".hydra" / "config.yaml").read_bytes() == before[".hydra/config.yaml"]
    events = history(run)
    assert [e["event"] for e in events] == ["start", "stopped", "resume", "finish"]
    assert events[1]["step"] == 4 and "NonFiniteLoss" in events[1]["error"]
    assert events[2]["step"] == 4 and events[2]["overrides"] == ["resume=true"]
    assert events[2]["changes"] == {}


def test_extending_a_finished_run_keeps_its_schedule_and_records_the_change(hydra_start,
                                                                            tmp_path):
    run = tmp_path / "run"
    train(hydra_start("trainer.max_steps=4", "optim.warmup_steps=1"), run)
    before = files_of(run)
    with pytest.raises(ResumeRefused, match="finished .*trainer.max_steps=N with N > 4"):
        train(hydra_start("resume=true", shrink=False), run)
    assert files_of(run) == before

    results = train(hydra_start("resume=true", "trainer.max_steps=6", "eval.batch_size=8",
                                shrink=False), run)
    assert results["steps"] == 6
    lines = [x for x in metric_lines(run) if "loss" in x]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    floor = saved.optim.lr * saved.optim.min_lr_ratio
    # The cosine ends at step 4 as the run planned; the added steps hold its floor.
    assert [x["lr"] for x in lines[3:]] == pytest.approx([floor] * 3)
    assert lines[2]["lr"] > floor * 1.5
    assert (saved.trainer.max_steps, saved.optim.schedule_steps, saved.eval.batch_size) == (6, 4, 8)
    assert history(run)[-2]["changes"] == {"trainer.max_steps": [4, 6],
                                           "eval.batch_size": [16, 8],
                                           "optim.schedule_steps": [None, 4]}
    assert (run / "results_step_0000004.json").read_bytes() == before["results.json"]


def test_a_fresh_start_in_a_run_dir_is_refused_and_changes_nothing(hydra_start, tmp_path):
    train(hydra_start(), tmp_path)
    before = files_of(tmp_path)
    with pytest.raises(FileExistsError, match="resume=true"):
        train(hydra_start("model/text_encoder=transformer"), tmp_path)
    assert files_of(tmp_path) == before
    snapshot = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert snapshot.model.text_encoder._target_.endswith("MambaTextEncoder")
    assert OmegaConf.load(tmp_path / ".hydra" / "overrides.yaml") == shrunk()


def test_a_corrupt_last_checkpoint_is_named_and_the_newest_intact_one_taken(
        compose_train, tmp_path, monkeypatch, caplog):
    args = ("trainer.max_steps=6", "trainer.checkpoint_every=2")
    inject(nan_at_step=5, patch=monkeypatch.setattr)
    with pytest.raises(NonFiniteLoss):
        train(compose_train(*args), tmp_path)
    monkeypatch.undo()
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:2000])  # cut short, as by a full disk
    with caplog.at_level(logging.WARNING, logger="ssm"):
        results = train(compose_train(*args, "resume=true"), tmp_path)
    warning = next(r.getMessage() for r in caplog.records
                   if r.getMessage().startswith(f"cannot read checkpoint {last}"))
    assert "Resuming from" in warning and "step_0000004.pt (step 4)" in warning
    assert results["steps"] == 6
    assert [s for s, _ in losses(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert "step_0000004.pt" in (tmp_path / "train.log").read_text()  # the warning, kept


def test_no_intact_checkpoint_refuses_naming_every_file(compose_train, tmp_path, monkeypatch):
    inject(nan_at_step=4, patch=monkeypatch.setattr)
    with pytest.raises(NonFiniteLoss):
        train(compose_train(), tmp_path)
    monkeypatch.undo()
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        path.write_bytes(b"not a checkpoint")
    before = files_of(tmp_path)
    with pytest.raises(CheckpointError) as refused:
        train(compose_train("resume=true"), tmp_path)
    for name in ("last.pt", "step_0000002.pt"):
        assert str(tmp_path / "checkpoints" / name) in str(refused.value)
    assert files_of(tmp_path) == before


def test_reconcile_compares_only_what_the_start_asks_for(compose_train):
    saved = compose_train("trainer.max_steps=6", "model.text_encoder.width=24")
    asked = compose_train("trainer.max_steps=9")  # width not repeated: the run's is kept
    choices = {"model/text_encoder": "mamba", "logger": "jsonl"}
    config, changes = reconcile(saved, asked, ["trainer.max_steps=9", "resume=true"], choices,
                                choices)
    assert changes == {"trainer.max_steps": [6, 9]}
    assert config.trainer.max_steps == 9 and config.model.text_encoder.width == 24
    config, changes = reconcile(saved, compose_train("logger=wandb"), ["logger=wandb"], choices,
                                {**choices, "logger": "wandb"})
    assert changes == {"logger": ["jsonl", "wandb"]} and config.logger.mode == "offline"
    asked = OmegaConf.create(OmegaConf.to_container(saved))
    asked.data.nonsense = 1
    with pytest.raises(ResumeRefused, match=r"data\.nonsense \(the run has no such setting, "
                                            r"this start asks 1\)"):
        reconcile(saved, asked, ["+data.nonsense=1"], choices, choices)


def test_readme_lists_what_a_resume_may_change():
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{key}`" in readme for key in CHANGEABLE_ON_RESUME)
