"""The caption-length scaling report (ssm.report.scaling), from hand-made sweep dirs: the
numbers are chosen, so the table, the ratios and the verdict can be checked exactly."""
import csv
import json
from pathlib import Path

import pytest
import yaml

from experiments.scaling_report import main as scaling_report_main
from ssm.report.callbacks import ScalingReport
from ssm.report.scaling import build_table, collect_jobs, linear_verdict, loglog_slope, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LENGTHS = (64, 256, 1024, 4096)


def make_job(sweep: Path, num: int, encoder: str, length: int, step_ms=None, peak_mb=None,
             tokens=None, failed_with=None):
    """A job dir as Hydra and the trainer leave it; no results.json when step_ms is None."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"model/text_encoder={encoder}", f"data.max_length={length}",
                 "+experiment=long_captions"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"model/text_encoder": encoder}}}}))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"max_length": length, "caption_tokens": "${data.max_length}"},
         "trainer": {"batch_size": 8, "max_steps": 7}}))
    (job / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    if failed_with is not None:
        (job / "job_status.json").write_text(json.dumps({"status": "failed",
                                                         "error": failed_with}))
    if step_ms is not None:
        (job / "results.json").write_text(json.dumps({
            "text_encoder": encoder, "step_ms_median": step_ms, "step_ms_min": step_ms * 0.9,
            "step_ms_max": step_ms * 1.2, "timed_steps": 5, "peak_mem_mb": peak_mb or length / 4,
            "peak_mem_kind": "cpu_rss_growth", "tokens_per_caption": tokens or length,
            "device": "cpu (2 threads)"}))
    return job


def make_sweep(root: Path, times: dict, grid=("mamba", "transformer")) -> Path:
    """times: {(encoder, length): step ms, or None for a job that left no results}."""
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                    "params": {"model/text_encoder": ",".join(grid),
                               "data.max_length": ",".join(map(str, LENGTHS))}},
        "overrides": {"task": ["+experiment=long_captions"]}}}))
    for num, ((encoder, length), ms) in enumerate(times.items()):
        make_job(sweep, num, encoder, length, ms)
    return sweep


LINEAR = {("mamba", 64): 50.0, ("mamba", 256): 100.0, ("mamba", 1024): 400.0,
          ("mamba", 4096): 1700.0, ("transformer", 64): 40.0, ("transformer", 256): 90.0,
          ("transformer", 1024): 600.0, ("transformer", 4096): 6000.0}


def test_report_table_ratios_and_pass(tmp_path):
    sweep = make_sweep(tmp_path, LINEAR)
    report = write_report(sweep)
    for name in ("md", "csv"):
        assert report["paths"][name].stat().st_size > 0
    assert report["paths"]["png"].read_bytes().startswith(PNG_SIGNATURE)
    verdict = report["verdict"]
    assert verdict.status == "PASS"
    assert verdict.pairs == [(256, 1024, pytest.approx(4.0)), (1024, 4096, pytest.approx(4.25))]
    text = report["markdown"]
    assert "mamba: t(4L) / t(L) <= 4.5 for every L >= 256: **PASS**" in text
    assert "| mamba | 4096 | 1,700.0 |" in text and "| 4.25 |" in text
    assert "transformer: t(256) / t(64) = 2.25; t(1024) / t(256) = 6.67; " \
           "t(4096) / t(1024) = 10.00" in text
    assert "None: every job finished." in text
    rows = list(csv.DictReader(report["paths"]["csv"].open()))
    assert [(r["encoder"], int(r["length"])) for r in rows] == list(LINEAR)
    assert float(rows[3]["ratio"]) == pytest.approx(4.25) and rows[3]["status"] == "complete"
    cells = report["cells"]
    assert loglog_slope(cells, "mamba", 256) == pytest.approx(1.02, abs=0.01)
    assert loglog_slope(cells, "transformer", 256) == pytest.approx(1.51, abs=0.01)


def test_a_superlinear_mamba_fails_with_its_numbers(tmp_path):
    sweep = make_sweep(tmp_path, {**LINEAR, ("mamba", 4096): 2000.0})
    report = write_report(sweep)
    assert report["verdict"].status == "FAIL"
    assert "- t(4096) / t(1024) = 5.00 (above 4.5)" in report["markdown"]


def test_failed_and_missing_jobs_are_listed_not_dropped(tmp_path):
    times = {k: v for k, v in LINEAR.items() if k != ("mamba", 4096)}
    times[("mamba", 1024)] = None                       # killed: no results.json
    sweep = make_sweep(tmp_path, times)
    # A second transformer job at 4096 that raised: the cell keeps the finished one.
    make_job(sweep, 99, "transformer", 4096, failed_with="RuntimeError: out of memory")
    report = write_report(sweep)
    text = report["markdown"]
    assert report["verdict"].status == "INCOMPLETE"
    section = text.split("## Jobs without results")[1]
    assert "| 2 | mamba | 1024 | incomplete | no results.json" in section
    assert "last logged step 1 of 7" in section
    assert "| 99 | transformer | 4096 | failed | RuntimeError: out of memory" in section
    assert "| - | mamba | 4096 | missing |" in section  # the grid asked for it; never started
    statuses = {(r["encoder"], r["length"]): r["status"]
                for r in csv.DictReader(report["paths"]["csv"].open())}
    assert statuses[("mamba", "1024")] == "incomplete"
    assert statuses[("mamba", "4096")] == "missing"
    assert statuses[("transformer", "4096")] == "complete"
    assert "6 of 9 jobs finished" in text


def test_results_without_step_time_count_as_failed(tmp_path):
    sweep = make_sweep(tmp_path, {("mamba", 256): 100.0})
    results = sweep / "0" / "results.json"
    results.write_text(json.dumps({"text_encoder": "mamba", "t2i_r5": 0.5}))
    jobs = collect_jobs(sweep)
    assert jobs[0].status == "failed" and "step_ms_median" in jobs[0].reason


def test_short_captions_are_flagged(tmp_path):
    sweep = make_sweep(tmp_path, {})
    make_job(sweep, 0, "mamba", 256, 100.0, tokens=60.0)
    assert "captions were not L tokens long in mamba L=256 (60)" in write_report(sweep)["markdown"]


def test_verdict_needs_a_pair_and_checks_its_arguments():
    assert linear_verdict([], "mamba").status == "NOT JUDGED"
    with pytest.raises(ValueError, match="bar"):
        linear_verdict([], "mamba", bar=0)
    with pytest.raises(ValueError, match="from_length"):
        linear_verdict([], "mamba", from_length=0)
    with pytest.raises(ValueError, match="from_length"):
        ScalingReport(from_length=-4)
    assert build_table([]) == []


def test_bad_sweep_dir_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="sweep_dir"):
        write_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="sweep_dir"):
        write_report(tmp_path)  # a directory, but no job dirs in it


def test_command_line_rebuilds_the_report(tmp_path, capsys):
    sweep = make_sweep(tmp_path, LINEAR)
    assert scaling_report_main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    assert "**PASS**" in capsys.readouterr().out
    assert (tmp_path / "out" / "scaling.png").exists()
    with pytest.raises(SystemExit) as exit_:
        scaling_report_main([str(tmp_path / "missing")])
    assert exit_.value.code == 2 and "sweep_dir" in capsys.readouterr().err


def test_unsteady_cells_are_flagged(tmp_path):
    sweep = make_sweep(tmp_path, LINEAR)
    assert "Unsteady timings" not in write_report(sweep)["markdown"]  # spread 1.2 / 0.9
    path = sweep / "2" / "results.json"  # mamba at 1024
    results = json.loads(path.read_text())
    path.write_text(json.dumps({**results, "step_ms_max": results["step_ms_min"] * 3}))
    assert "Unsteady timings (slowest timed step over the fastest > 1.5): mamba L=1024 (3.0x)" \
        in write_report(sweep)["markdown"]
