"""Crash recovery, DDP and bad data, with real processes and real files."""
import json
import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

from ssm.data.files import TooManyBadSamples
from ssm.data.scenes import SyntheticScenes
from ssm.tasks import train
from run_config import ROOT, shrunk

# Measurements of the process that ran (a resumed run times only its own steps).
TIMING = {"samples_per_s", "train_seconds", "wall_seconds", "peak_mem_mb", "step_ms_median",
          "step_ms_min", "step_ms_max", "timed_steps", "tokens_per_caption"}


def _run(args, env_extra=None, launcher=(sys.executable,)):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", **(env_extra or {})}
    if any(k.startswith("FAULT_") for k in env):
        launcher = (*launcher, str(ROOT / "tests" / "faults.py"))
    return subprocess.run([*launcher, str(ROOT / "experiments" / "train.py"), *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def _losses(run_dir):
    return [(x["step"], x["loss"]) for x in
            map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in x]


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
    assert [s for s, _ in _losses(crashed)] == [1, 2, 3, 4, 5]

    resumed = _run(args + [f"hydra.run.dir={crashed}", "resume=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _losses(crashed) == _losses(whole)  # exactly: same batches, RNG and arithmetic
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
    for (s1, l1), (s2, l2) in zip(_losses(one), _losses(two), strict=True):
        assert s1 == s2 and abs(l1 - l2) <= 1e-5 * max(1.0, abs(l1)), (s1, l1, l2)
    assert json.loads((two / "results.json").read_text())["samples_seen"] == 32


def _write_csv(folder, n, bad=()):
    """n rendered scenes as PNGs plus a CSV; indices in ``bad`` are corrupt or missing."""
    scenes = SyntheticScenes("train", n, image_size=32)
    rows = ["filepath\ttitle"]
    for i in range(n):
        path = folder / f"{i:04d}.png"
        item = scenes[i]
        if i in bad and i % 2:
            path.write_bytes(b"this is not a png")
        elif i not in bad:
            pixels = (item["image"].permute(1, 2, 0) * 255).round().byte().numpy()
            Image.fromarray(pixels).save(path)
        rows.append(f"{path.name}\t{item['caption']}")
    csv = folder / "pairs.csv"
    csv.write_text("\n".join(rows) + "\n")
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
