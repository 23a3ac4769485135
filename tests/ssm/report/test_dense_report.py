"""The dense-captions report: from a sweep dir with known per-item outcomes (built here as
Hydra writes it), and from the real quick preset (slow)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssm.data.dense import NEEDLE_ATTRIBUTES, NEEDLE_POSITIONS
from ssm.report.dense import write_dense_report

ROOT = Path(__file__).resolve().parents[3]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _job(sweep: Path, number: int, encoder: str, seed: int, correct, detail=1, budget=None,
         n_items=40):
    """A finished job: correct(index, position) -> 0/1 gives its needle outcomes."""
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "data": {"detail": detail},
              "trainer": {"max_steps": 10, "time_budget_s": budget},
              "model": {"text_encoder": {"_target_": encoder}}}
    OmegaConf.save(OmegaConf.create(config), job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {
        "model/text_encoder": encoder}}}}), job / ".hydra" / "hydra.yaml")
    records = [{"index": i, "position": p, "bytes": 300 + 20 * i, "objects": 6,
                "needle_byte": 0, "correct": correct(i, p),
                "attributes": {a: correct(i, p) for a in NEEDLE_ATTRIBUTES}}
               for i in range(n_items) for p in NEEDLE_POSITIONS]
    results = {"seed": seed, "steps": 10, "t2i_r5": 0.5, "params_text": 1000,
               "needle_acc": sum(r["correct"] for r in records) / len(records),
               "wall_seconds": 1.0, "probe_counting": 0.7, "blind_counting": 0.5}
    for p in NEEDLE_POSITIONS:
        mine = [r["correct"] for r in records if r["position"] == p]
        results[f"needle_acc_{p}"] = sum(mine) / len(mine)
    probes = [{"index": i, "category": "counting", "correct": 1.0, "blind": float(i % 2)}
              for i in range(n_items)]
    (job / "results.json").write_text(json.dumps(results))
    (job / "eval_items.json").write_text(json.dumps({"needle": records, "probes": probes}))
    return results


@pytest.fixture
def sweep(tmp_path):
    """Three encoders x two seeds: 'reader' is right on every query, 'forgetful' only on
    the last paragraph, 'twin' exactly as the reader."""
    sweep, number = tmp_path / "sweep", 0
    rules = {"reader": lambda i, p: 1, "forgetful": lambda i, p: int(p == "last"),
             "twin": lambda i, p: 1}
    for encoder, rule in rules.items():
        for seed in (0, 1):
            _job(sweep, number, encoder, seed, rule)
            number += 1
    return sweep


def test_report_table_verdicts_and_files(sweep):
    path = write_dense_report([sweep])
    markdown = path.read_text()
    assert "6 jobs: 6 complete, 0 failed, 0 incomplete, 0 missing" in markdown
    section = markdown.split("## equal steps (10), caption detail 1")[1].split("## ")[0]
    assert ("| reader | 2/2 | 10 ± 0 | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 | "
            "1.000 ± 0.000 |") in section
    assert ("| forgetful | 2/2 | 10 ± 0 | 0.000 ± 0.000 | 0.000 ± 0.000 | 1.000 ± 0.000 | "
            "0.333 ± 0.000 |") in section
    rows = {line.split(" | ")[0].lstrip("| "): line for line in section.splitlines()
            if " − " in line}
    assert rows["reader − forgetful"].endswith("reader better |")
    assert "+1.000 [+1.000, +1.000]*" in rows["reader − forgetful"]        # first paragraph
    assert "+0.000 [+0.000, +0.000] |" in rows["reader − forgetful"]        # last: a tie
    assert rows["reader − twin"].endswith("not significant |")
    with open(sweep / "dense_captions.csv") as handle:
        table = {row["encoder"]: row for row in csv.DictReader(handle)}
    assert float(table["forgetful"]["needle_acc_last_mean"]) == 1.0
    assert float(table["forgetful"]["needle_acc_first_mean"]) == 0.0
    assert float(table["reader"]["needle_acc_ci_low"]) == 1.0
    for name in ("needle_position.png", "caption_length.png"):
        data = (sweep / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
        assert f"![{name}]({name})" in markdown


def test_probe_bias_check_and_length_table(sweep):
    markdown = write_dense_report([sweep]).read_text()
    probes = markdown.split("compositional probes (all details)")[1]
    assert "| reader | 0.700 ± 0.000 |" in probes
    assert "| blind baseline (text only) | 0.500 ± 0.000 |" in probes
    assert "| bias check | ok (0.50) |" in probes   # the blind model sits at chance
    lengths = markdown.split("accuracy against caption length")[1].split("## ")[0]
    # Captions of 300-1,080 bytes fall in four bins; the forgetful tower is right on a
    # third of the queries in each.
    assert "| forgetful | 0.333 (n=" in lengths


def test_failed_and_missing_runs_are_listed(sweep):
    (sweep / "1" / "results.json").unlink()
    markdown = write_dense_report([sweep]).read_text()
    assert "6 jobs: 5 complete, 0 failed, 1 incomplete" in markdown
    assert f"| {sweep / '1'} | reader | 1 | incomplete |" in markdown


def test_budgets_and_details_are_separate_cells(tmp_path):
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "a", 0, lambda i, p: 1, detail=1)
    _job(sweep, 1, "a", 0, lambda i, p: 0, detail=3)
    _job(sweep, 2, "a", 0, lambda i, p: 1, budget=30.0)
    markdown = write_dense_report([sweep]).read_text()
    assert "## equal steps (10), caption detail 1" in markdown
    assert "## equal steps (10), caption detail 3" in markdown
    assert "## equal wall-clock (30 s), caption detail 1" in markdown


@pytest.mark.slow  # a subprocess sweep: about a minute
def test_quick_preset_writes_the_report(tmp_path):
    sweep = tmp_path / "quick"
    done = subprocess.run([sys.executable, "experiments/train.py", "-m",
                           "+experiment=dense_captions_quick", f"hydra.sweep.dir={sweep}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Dense-captions report:" in done.stdout
    markdown = (sweep / "dense_captions.md").read_text()
    assert "4 jobs: 4 complete" in markdown
    for encoder in ("mamba", "transformer_clip"):
        assert f"| {encoder} | 1/1 |" in markdown
    assert "## equal wall-clock (2 s), caption detail 1" in markdown
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    budgeted = [r for r in results if r.get("time_budget_s")]
    assert len(budgeted) == 2 and all(r["steps"] == r["max_steps"] >= 1 for r in budgeted)
    assert all(r["needle_queries"] == 24 for r in results)   # 8 items x 3 positions
    for name in ("dense_captions.csv", "needle_position.png", "caption_length.png"):
        assert (sweep / name).stat().st_size > 0


def test_command_line_rebuilds_and_rejects_a_bad_dir(sweep, tmp_path):
    done = subprocess.run([sys.executable, "experiments/dense_report.py", str(sweep), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "dense_captions.md").exists() and "report written" in done.stdout
    bad = subprocess.run([sys.executable, "experiments/dense_report.py", str(tmp_path / "nope")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not a directory" in bad.stderr
