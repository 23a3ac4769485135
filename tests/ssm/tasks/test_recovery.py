"""Crash recovery, DDP and bad data, with real processes and real files."""
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

from ssm.data.files import TooManyBadSamples
from ssm.data.scenes import SyntheticScenes
from ssm.tasks import evaluate_checkpoint, train
from run_config import ROOT, shrunk
from run_files import files_of, losses

# Measurements of the process that ran (a resumed run times only its own steps).
TIMING = {"samples_per_s", "train_seconds", "wall_seconds", "peak_mem_mb", "step_ms_median",
          "step_ms_min", "step_ms_max", "timed_steps", "tokens_per_caption"}


def _run(args, env_extra=None, launcher=(sys.executable,)):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", **(env_extra or {})}
    if any(k.startswith("FAULT_") for k in env):
        launcher = (*launcher, str(ROOT / "tests" / "faults.py"))
    return subprocess.run([*launcher, str(ROOT / "experiments" / "train.py"), *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def _results(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    return {k: v for k, v in results.items() if k not in TIMING}


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = shrunk("trainer.max_steps=8", "trainer.checkpoint_every=3")
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    done = _run(args + [f"hydra.run.dir={whole}"])
    assert done.returncode == 0, done.stderr[-3000:]

    killed = _run(args + [f"hydra.run.dir={crashed}"], env_extra={"FAULT_KILL_AT_STEP": "5"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (crashed / "results.json").exists()
    assert [s for s, _ in losses(crashed)] == [1, 2, 3, 4, 5]

    resumed = _run(args + [f"hydra.run.dir={crashed}", "resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(crashed) == losses(whole)  # exactly: same batches, RNG and arithmetic
    assert _results(crashed) == _results(whole)


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_two_process_ddp_matches_one_process(tmp_path):
    args = shrunk("trainer.max_steps=4", "trainer.batch_size=8")
    one, two = tmp_path / "one", tmp_path / "two"
    single = _run(args + [f"hydra.run.dir={one}"])
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2")
    ddp = _run(args + [f"hydra.run.dir={two}"], launcher=torchrun,
               env_extra={"OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for (s1, l1), (s2, l2) in zip(losses(one), losses(two), strict=True):
        assert s1 == s2 and abs(l1 - l2) <= 1e-5 * max(1.0, abs(l1)), (s1, l1, l2)
    assert json.loads((two / "results.json").read_text())["samples_seen"] == 32


def _write_csv(folder, n, bad=(), columns=("filepath", "title"), sep="\t", raw_captions=None):
    """n rendered scenes as PNGs plus a CSV; indices in ``bad`` are corrupt or missing;
    ``raw_captions`` {index: bytes} replaces those rows' captions byte for byte."""
    scenes = SyntheticScenes("train", n, image_size=32)
    rows = [sep.join(columns).encode()]
    for i in range(n):
        path = folder / f"{i:04d}.png"
        item = scenes[i]
        if i in bad and i % 2:
            path.write_bytes(b"this is not a png")
        elif i not in bad:
            pixels = (item["image"].permute(1, 2, 0) * 255).round().byte().numpy()
            Image.fromarray(pixels).save(path)
        caption = (raw_captions or {}).get(i, item["caption"].encode())
        rows.append(path.name.encode() + sep.encode() + caption)
    csv = folder / "pairs.csv"
    csv.write_bytes(b"\n".join(rows) + b"\n")
    return csv


def test_csv_run_skips_and_counts_corrupt_and_missing_images(compose_train, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    csv = _write_csv(data, 48, bad={3, 8})
    cfg = compose_train("data=csv", f"data.train_csv={csv}", f"data.val_csv={csv}",
                        "trainer.max_bad_fraction=0.2")
    results = train(cfg, tmp_path / "run")
    assert results["bad_samples"] > 0 and results["val_pairs"] == 46
    assert "order_acc" not in results  # CSV data carries no word-order negatives


def test_too_many_bad_images_stop_the_run(compose_train, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    csv = _write_csv(data, 40, bad=set(range(0, 40, 2)))
    cfg = compose_train("data=csv", f"data.train_csv={csv}", f"data.val_csv={csv}",
                        "trainer.max_bad_fraction=0.1")
    with pytest.raises(TooManyBadSamples):
        train(cfg, tmp_path / "run")


def test_missing_csv_is_named(compose_train, tmp_path):
    cfg = compose_train("data=csv", f"data.train_csv={tmp_path}/nope.csv",
                        f"data.val_csv={tmp_path}/nope.csv")
    with pytest.raises((FileNotFoundError, ValueError), match="nope.csv"):
        train(cfg, tmp_path / "run")


def test_webdataset_shards_train_end_to_end(compose_train, tmp_path):
    import tarfile
    data = tmp_path / "data"
    data.mkdir()
    csv = _write_csv(data, 40)
    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for i, line in enumerate(csv.read_text().splitlines()[1:]):
            name, caption = line.split("\t")
            tar.add(data / name, arcname=f"{i:06d}.png")
            text = tmp_path / f"{i:06d}.txt"
            text.write_text(caption)
            tar.add(text, arcname=f"{i:06d}.txt")
    cfg = compose_train("data=webdataset", f"data.train_urls={shard}", f"data.val_csv={csv}",
                        "data.shuffle_buffer=8")
    results = train(cfg, tmp_path / "run")
    assert results["steps"] == 4 and results["val_pairs"] == 40 and results["bad_samples"] == 0


# --- issue 16: the run dir keeps its record; faults surface early and named -----------------

@pytest.mark.slow  # subprocess runs: seconds each
def test_a_refused_start_leaves_the_run_dir_untouched(tmp_path):
    """Hydra writes .hydra/ before the task runs; the train config turns that off and the
    task writes it only for an accepted start."""
    run = tmp_path / "run"
    done = _run(shrunk() + [f"hydra.run.dir={run}"])
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run / "train.log").read_text()  # a single run's log, as a multirun job's
    assert "step 4/4" in log and "finished at step 4" in log and "new run in" in log
    before = files_of(run)
    fresh = _run(shrunk("model/text_encoder=transformer") + [f"hydra.run.dir={run}"])
    assert fresh.returncode != 0 and "already holds a run" in fresh.stderr, fresh.stderr[-3000:]
    resumed = _run([f"hydra.run.dir={run}", "resume=true", "model/text_encoder=transformer"])
    assert resumed.returncode != 0, resumed.stderr[-3000:]
    assert "model/text_encoder (the run has mamba, this start asks transformer)" in resumed.stderr
    assert files_of(run) == before
    again, _ = evaluate_checkpoint(run / "checkpoints" / "last.pt")
    assert again["t2i_r5"] == json.loads((run / "results.json").read_text())["t2i_r5"]


@pytest.mark.slow  # subprocess runs: seconds each
def test_a_kill_before_the_first_checkpoint_then_a_new_start(tmp_path):
    run = tmp_path / "run"
    args = shrunk("trainer.checkpoint_every=100") + [f"hydra.run.dir={run}"]
    killed = _run(args, env_extra={"FAULT_KILL_AT_STEP": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    before = files_of(run)
    again = _run(args)  # the same command once more, without resume=true
    assert again.returncode != 0 and "already holds a run" in again.stderr, again.stderr[-3000:]
    assert files_of(run) == before
    resumed = _run(args + ["resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4]  # every step once


@pytest.mark.slow  # subprocess runs: seconds each
@pytest.mark.parametrize("renamed", [0, 1], ids=["before-any-rename", "between-renames"])
def test_a_kill_inside_a_checkpoint_save_loses_nothing(tmp_path, renamed):
    """Killed with the state in a temporary file only, or with one of the save's two files
    in place: the next start clears the temporary files, no numbered checkpoint is
    missing, and the run ends as an uninterrupted one."""
    args = shrunk("trainer.max_steps=6", "trainer.checkpoint_every=2")
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    done = _run(args + [f"hydra.run.dir={whole}"])
    assert done.returncode == 0, done.stderr[-3000:]
    killed = _run(args + [f"hydra.run.dir={crashed}"],
                  env_extra={"FAULT_KILL_IN_SAVE": "4", "FAULT_KILL_AFTER_RENAMES": str(renamed)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    leftovers = [p.name for p in (crashed / "checkpoints").iterdir() if ".tmp-" in p.name]
    assert leftovers, "the kill should have caught a save in flight"
    resumed = _run(args + [f"hydra.run.dir={crashed}", "resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    names = sorted(p.name for p in (crashed / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000002.pt", "step_0000004.pt", "step_0000006.pt"]
    assert losses(crashed) == losses(whole)


def test_a_missing_val_csv_stops_the_run_before_step_1(compose_train, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    csv = _write_csv(data, 24)
    cfg = compose_train("data=csv", f"data.train_csv={csv}", f"data.val_csv={data}/vall.csv")
    with pytest.raises(FileNotFoundError, match="vall.csv"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))


def test_an_unwritable_checkpoint_dir_stops_the_run_before_step_1(compose_train, tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    with pytest.raises(OSError, match="cannot write checkpoints into .*checkpoints"):
        train(compose_train(), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_caption_that_is_not_utf8_is_skipped_counted_and_named(compose_train, tmp_path,
                                                                  caplog):
    data = tmp_path / "data"
    data.mkdir()
    csv = _write_csv(data, 24, raw_captions={3: b"a red \xff\xfe cube"})  # row 3: line 5
    cfg = compose_train("data=csv", f"data.train_csv={csv}", f"data.val_csv={csv}",
                        "trainer.max_steps=3")  # one pass over the 24 rows
    with caplog.at_level(logging.WARNING, logger="ssm"):
        results = train(cfg, tmp_path / "run")
    assert results["bad_samples"] == 1 and results["val_pairs"] == 23
    assert any(f"{csv} line 5: caption is not valid UTF-8" in r.getMessage()
               for r in caplog.records)


def test_skipped_samples_reach_the_console_as_they_happen_and_the_log(compose_train, tmp_path,
                                                                      caplog):
    data = tmp_path / "data"
    data.mkdir()
    csv = _write_csv(data, 24, bad={3, 8})
    cfg = compose_train("data=csv", f"data.train_csv={csv}", f"data.val_csv={csv}",
                        "trainer.max_steps=3", "trainer.max_bad_fraction=0.2")
    with caplog.at_level(logging.WARNING, logger="ssm"):
        results = train(cfg, tmp_path / "run")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(data / "0003.png") in m for m in warnings)  # the file, named
    assert any(m.startswith("bad samples skipped so far: 1 of") for m in warnings)
    assert "bad samples: 2 of 24 skipped" in warnings[-1]  # and the total at the end
    assert results["bad_samples"] == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "bad samples skipped so far" in log and "step 3/3" in log and "finished" in log


def test_csv_columns_and_separator_come_from_the_config(compose_train, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    csv = _write_csv(data, 24, columns=("image", "caption"), sep=",")
    cfg = compose_train("data=csv", f"data.train_csv={csv}", f"data.val_csv={csv}",
                        "data.img_key=image", "data.caption_key=caption", 'data.sep=","')
    assert train(cfg, tmp_path / "run")["val_pairs"] == 24
    # A tab as typed on a command line: backslash, t.
    assert compose_train("data=csv", "data.sep=\\t").data.sep == "\\t"
