"""The compare-encoders report, from real quick sweeps run as a user runs them."""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from ssm.report.comparison import write_comparison_report
from ssm.report.runs import collect_runs, expected_jobs

ROOT = Path(__file__).resolve().parents[3]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_sweep(sweep_dir: Path, *overrides, faults=None) -> subprocess.CompletedProcess:
    """The quick sweep as a user runs it; ``faults`` (FAULT_* variables) run it through
    tests/faults.py."""
    launcher = [sys.executable] + (["tests/faults.py"] if faults else [])
    command = [*launcher, "experiments/train.py", "-m", "+experiment=compare_encoders_quick",
               f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(faults or {})})


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("compare") / "sweep"
    done = run_sweep(sweep_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir, done.stdout


def _results(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_quick_sweep_writes_the_report(quick_sweep):
    sweep_dir, stdout = quick_sweep
    assert "Comparison report:" in stdout
    for name in ("comparison.md", "comparison.csv", "comparison_runs.csv"):
        assert (sweep_dir / name).stat().st_size > 0
    for name in ("learning_curves.png", "retrieval.png", "probes.png"):
        data = (sweep_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
    markdown = (sweep_dir / "comparison.md").read_text()
    assert "6 jobs: 6 complete, 0 failed, 0 incomplete, 0 missing" in markdown
    assert "apart from `model.text_encoder`, `seed`" in markdown
    for encoder in ("mamba", "bimamba", "transformer"):
        assert f"| {encoder} |" in markdown
    # The probe suite beside its blind baseline, with the bias check, and the paired
    # bootstrap verdicts between encoders.
    probes = markdown.split("## Compositional probes")[1].split("## Significance")[0]
    assert "| blind baseline (text only) |" in probes and "| bias check (blind vs chance) |" in probes
    assert "attribute replacement" in probes
    significance = markdown.split("## Significance")[1]
    assert "| mamba − bimamba |" in significance and "| bimamba − transformer |" in significance
    # The validation curve: logged every 2 steps on 16 held-out pairs.
    lines = [json.loads(x) for x in (sweep_dir / "0" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "eval/val_loss" in x] == [2, 4]


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_report_numbers_are_the_runs_mean_and_std(quick_sweep):
    sweep_dir, _ = quick_sweep
    results = _results(sweep_dir)
    assert len(results) == 6
    rows = {line.split(",")[0]: line.split(",") for line in
            (sweep_dir / "comparison.csv").read_text().splitlines()}
    header = rows.pop("encoder")
    for encoder in ("mamba", "bimamba", "transformer"):
        mine = [r for r in results if r["text_encoder"] == encoder]
        assert sorted(r["seed"] for r in mine) == [0, 1]
        row = dict(zip(header, rows[encoder]))
        for key in ("t2i_r5", "order_acc", "samples_per_s", "peak_mem_mb"):
            values = [r[key] for r in mine]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(values))
        assert int(row["params_text"]) == mine[0]["params_text"]


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_rebuild_lists_incomplete_and_missing_runs(quick_sweep, tmp_path):
    sweep_dir = tmp_path / "copy"
    shutil.copytree(quick_sweep[0], sweep_dir)
    (sweep_dir / "1" / "results.json").unlink()          # killed before it finished
    shutil.rmtree(sweep_dir / "5")                       # never started
    done = subprocess.run([sys.executable, "experiments/compare_encoders.py", str(sweep_dir),
                           "--out", str(tmp_path / "report")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "6 jobs: 4 complete, 0 failed, 1 incomplete, 1 missing" in markdown
    assert re.search(r"\| mamba \| [\d,]+ \| 1/2 \|", markdown)
    assert re.search(r"\| transformer \| [\d,]+ \| 1/2 \|", markdown)
    unfinished = markdown.split("## Runs not complete")[1].split("## Per-run")[0]
    assert f"{sweep_dir / '1'} | mamba | 1 | incomplete" in unfinished
    assert "(no job dir) | transformer | 1 | missing" in unfinished


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_several_sweeps_pool_their_runs(quick_sweep, tmp_path):
    second = tmp_path / "second"
    shutil.copytree(quick_sweep[0], second)
    path = write_comparison_report([quick_sweep[0], second], tmp_path / "pooled")
    markdown = path.read_text()
    assert "12 jobs: 12 complete" in markdown
    for encoder in ("mamba", "bimamba", "transformer"):
        assert re.search(rf"\| {encoder} \| [\d,]+ \| 4/4 \|", markdown), encoder


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_failed_job_is_reported_with_its_error(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = run_sweep(sweep_dir, "model/text_encoder=transformer", "seed=0,1",
                     faults={"FAULT_NAN_AT_STEP": "2", "FAULT_JOBS": "0"})
    assert done.returncode != 0                          # Hydra re-raises the failed job
    records = collect_runs([sweep_dir])
    assert sorted(r.status for r in records) == ["complete", "failed"]
    markdown = (sweep_dir / "comparison.md").read_text()
    assert "2 jobs: 1 complete, 1 failed" in markdown
    assert "NonFiniteLoss" in markdown.split("## Runs not complete")[1]


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_expected_grid_follows_command_line_sweeps(quick_sweep, tmp_path):
    assert len(expected_jobs(quick_sweep[0])) == 6
    with pytest.raises(ValueError, match="sweep_dir"):
        collect_runs([tmp_path / "absent"])
    with pytest.raises(ValueError, match="no Hydra job dirs"):
        collect_runs([tmp_path])
    with pytest.raises(ValueError, match="sweep_dirs is empty"):
        write_comparison_report([])


def test_command_line_rejects_a_bad_dir(tmp_path):
    done = subprocess.run([sys.executable, "experiments/compare_encoders.py", str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is not a directory" in done.stderr


@pytest.mark.slow  # a subprocess sweep or training run: seconds each
def test_group_by_any_config_key(quick_sweep, tmp_path):
    key = "model.text_encoder._target_"
    path = write_comparison_report([quick_sweep[0]], tmp_path / "by_class", group_by=key)
    markdown = path.read_text()
    assert markdown.startswith(f"# Comparison by `{key}`")
    for cls in ("MambaTextEncoder", "BiMambaTextEncoder", "TransformerTextEncoder"):
        assert re.search(rf"\| ssm\.encoders\.{cls} \| [\d,]+ \| 2/2 \|", markdown), cls
    # Other encoder settings (depth, heads) differ too, and the report says so.
    assert "Config: complete runs also differ in" in markdown and "`model.text_encoder.depth`" in markdown
    header = (tmp_path / "by_class" / "comparison_runs.csv").read_text().splitlines()[0]
    assert header.startswith(f"job,{key},seed,status")


# --- report parts on sweep dirs built here, with known per-run numbers -----------------------

def _fake_job(sweep, number, encoder, seed, samples_per_s, ranks, probe=None):
    from omegaconf import OmegaConf
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": seed, "model": {"text_encoder": {"_target_": encoder}}}),
                   job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {
        "model/text_encoder": encoder}}}}), job / ".hydra" / "hydra.yaml")
    results = {"seed": seed, "samples_per_s": samples_per_s, "val_pairs": len(ranks),
               "t2i_r5": sum(r <= 5 for r in ranks) / len(ranks), "params_text": 100}
    items = {"t2i_rank": ranks}
    if probe is not None:
        items["probes"] = [{"index": i, "category": "counting", "correct": probe(i),
                            "blind": 1.0} for i in range(60)]
        results["probe_counting"] = sum(probe(i) for i in range(60)) / 60
        results["blind_counting"] = 1.0
    (job / "results.json").write_text(json.dumps(results))
    (job / "eval_items.json").write_text(json.dumps(items))


def test_busy_machine_throughput_and_significance_and_bias(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, "fast", 0, 100.0, [1] * 50, probe=lambda i: 1.0)
    _fake_job(sweep, 1, "fast", 1, 400.0, [1] * 50, probe=lambda i: 1.0)   # spread 300 >= 250
    _fake_job(sweep, 2, "slow", 0, 100.0, [50] * 50, probe=lambda i: 0.0)
    _fake_job(sweep, 3, "slow", 1, 110.0, [50] * 50, probe=lambda i: 0.0)
    markdown = write_comparison_report([sweep]).read_text()
    assert "**Warning:** fast's samples/s spread over 100-400" in markdown
    assert "slow's samples/s" not in markdown
    row = next(line for line in markdown.split("## Significance")[1].splitlines()
               if line.startswith("| fast − slow |"))
    assert "+1.000 | [+1.000, +1.000] | 100 | fast better |" in row
    probes = markdown.split("## Compositional probes")[1]
    # The blind model is always right on counting here: flagged as biased.
    assert "| bias check (blind vs chance) | **biased** (1.00 [1.00, 1.00]) |" in probes
    assert "| fast | 1.000 ± 0.000 |" in probes


def test_plots_draw_chance_per_metric_and_the_validation_panel(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, "a", 0, 10.0, list(range(1, 21)))
    _fake_job(sweep, 1, "a", 1, 10.0, list(range(1, 21)))
    write_comparison_report([sweep])
    data = (sweep / "retrieval.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    from ssm.report import plots
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ssm.report.comparison import summarize
    from ssm.report.runs import collect_runs
    fig, ax = plt.subplots()
    plots.metric_bars(summarize(collect_runs([sweep])), ax, [("t2i_r1", "R@1"), ("t2i_r5", "R@5")],
                      "recall", {"t2i_r1": 1 / 20, "t2i_r5": 5 / 20})
    levels = sorted({round(y, 6) for line in ax.collections if hasattr(line, "get_segments")
                     for seg in line.get_segments() for _, y in seg})
    assert 0.05 in levels and 0.25 in levels and ax.get_ylabel() == "recall"
    plt.close(fig)
