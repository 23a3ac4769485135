"""+experiment=long_captions: the preset composes for every job of its grid, and a real tiny
multirun (``python experiments/train.py -m``) writes results and the scaling report."""
import csv
import json
import os
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from run_config import CONF, ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=["+experiment=long_captions", *overrides],
                       return_hydra_config=True)


def test_preset_sweeps_encoders_and_lengths_and_attaches_the_report():
    cfg = _compose()
    assert dict(cfg.hydra.sweeper.params) == {"model/text_encoder": "mamba,bimamba,transformer",
                                              "data.max_length": "64,256,1024,4096"}
    callback = cfg.hydra.callbacks.scaling_report
    assert callback._target_ == "ssm.report.callbacks.ScalingReport"
    assert (callback.bar, callback.from_length, callback.linear_encoder) == (4.5, 256, "mamba")
    assert cfg.eval.enabled is False and cfg.optimize_metric == "step_ms_median"
    assert cfg.logger._target_.endswith("NullLogger")
    assert cfg.trainer.batch_size == 8
    assert cfg.trainer.max_steps - cfg.trainer.timing_warmup == 10


@pytest.mark.parametrize("encoder", ["mamba", "bimamba", "transformer"])
def test_every_job_of_the_grid_composes_with_full_length_captions(encoder):
    for length in (64, 4096):
        cfg = _compose(f"model/text_encoder={encoder}", f"data.max_length={length}")
        assert cfg.data.caption_tokens == length
        if encoder == "transformer":  # its position table follows the caption budget
            assert cfg.model.text_encoder.max_length == length
    data = instantiate(cfg.data)
    assert len(data.train_dataset()[0]["caption"]) == 4096 - 2  # BOS and EOS make 4096


def test_quick_preset_composes():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+experiment=long_captions_quick"],
                      return_hydra_config=True)
    assert cfg.hydra.sweeper.params["data.max_length"] == "16,64"
    assert cfg.hydra.callbacks.scaling_report._target_ == "ssm.report.callbacks.ScalingReport"
    assert cfg.data.caption_tokens == cfg.data.max_length and cfg.eval.enabled is False


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_tiny_multirun_writes_results_and_the_report(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    # The reference scan: no C++ extension to load, whose shared build cache other
    # checkouts on this machine may be rebuilding (about a minute) at any moment.
    args = ["+experiment=long_captions_quick", f"hydra.sweep.dir={sweep}",
            "model/text_encoder=mamba,bimamba", "+model.text_encoder.backend=reference",
            "data.max_length=16,64",
            "model.embed_dim=16", "model.text_encoder.width=16", "model.text_encoder.depth=1",
            "model.image_encoder.width=16", "model.image_encoder.channels=[8,16]",
            "data.train_size=32", "hydra.callbacks.scaling_report.from_length=16"]
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), "-m", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Scaling report:" in done.stdout
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 4
    for job in jobs:
        results = json.loads((job / "results.json").read_text())
        length = int(next(o for o in (job / ".hydra" / "overrides.yaml").read_text().split()
                          if o.startswith("data.max_length=")).split("=")[1])
        assert results["tokens_per_caption"] == length      # every caption fills L exactly
        assert results["timed_steps"] == 1 and results["step_ms_median"] > 0
        assert results["peak_mem_kind"] in ("cpu_rss_growth", "cuda_max_allocated")
        assert "t2i_r5" not in results                       # evaluation skipped
        assert json.loads((job / "job_status.json").read_text())["status"] == "complete"
    markdown = (sweep / "scaling.md").read_text()
    assert "4 of 4 jobs finished" in markdown
    assert "mamba: t(4L) / t(L) <= 4.5 for every L >= 16: **" in markdown
    assert "- t(64) / t(16) = " in markdown and "bimamba: t(64) / t(16) = " in markdown
    rows = list(csv.DictReader((sweep / "scaling.csv").open()))
    assert [(r["encoder"], r["length"], r["status"]) for r in rows] == [
        ("mamba", "16", "complete"), ("mamba", "64", "complete"),
        ("bimamba", "16", "complete"), ("bimamba", "64", "complete")]
    assert (sweep / "scaling.png").read_bytes().startswith(PNG_SIGNATURE)
