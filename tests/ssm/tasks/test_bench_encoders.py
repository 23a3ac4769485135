"""The text-encoder benchmark, composed from the real config, shrunk."""
import csv

import pytest
from hydra import compose, initialize_config_dir

from run_config import CONF
from ssm.tasks.bench_encoders import bench_encoders

TINY = ["lengths=[8,16]", "threads=[1]", "batch_size=2", "min_run_time=0.01",
        "encoders.mamba.width=16", "encoders.bimamba.width=16", "encoders.transformer.width=16"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="bench_encoders", overrides=[*TINY, *overrides])


def test_every_encoder_and_length_is_timed_against_the_reference(tmp_path):
    rows = bench_encoders(_compose(), tmp_path)
    assert [(r["encoder"], r["length"]) for r in rows] == [
        (e, L) for L in (8, 16) for e in ("mamba", "bimamba", "transformer")]
    for length in (8, 16):
        ref = next(r for r in rows if r["encoder"] == "transformer" and r["length"] == length)
        assert ref["x_ref"] == 1.0
        for r in rows:
            if r["length"] == length:
                assert r["x_ref"] == pytest.approx(r["median_ms"] / ref["median_ms"])
                assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] and r["threads"] == 1
    # The Transformer's position table follows the length, as in the long-caption sweep.
    params = {(r["encoder"], r["length"]): r["params"] for r in rows}
    assert params[("transformer", 16)] - params[("transformer", 8)] == 8 * 16
    assert params[("mamba", 16)] == params[("mamba", 8)]
    written = list(csv.DictReader(open(tmp_path / "encoder_bench.csv")))
    assert len(written) == 6 and written[0]["encoder"] == "mamba"
    table = (tmp_path / "encoder_bench.md").read_text()
    assert "1 thread, batch 2" in table and "| transformer | " in table and "(1.00x)" in table


@pytest.mark.parametrize("override,words", [
    ("reference=lstm", "reference='lstm'"),
    ("lengths=[]", "lengths must be a non-empty list"),
    ("threads=[-1]", "threads >= 0"),
    ("batch_size=0", "batch_size"),
])
def test_bad_settings_are_named(tmp_path, override, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        bench_encoders(_compose(override), tmp_path)


def test_competitors_spin_beside_the_timing(tmp_path, monkeypatch):
    """competitors=1: a real process spins a core while the encoders are timed, and is
    gone afterwards; the tables say so."""
    import subprocess

    import ssm.tasks.bench_encoders as task

    started = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(task.subprocess, "Popen", popen)
    seen_running = []
    real_time = task.time_encoder

    def time_encoder(*args, **kwargs):
        seen_running.append(all(p.poll() is None for p in started))
        return real_time(*args, **kwargs)

    monkeypatch.setattr(task, "time_encoder", time_encoder)
    rows = bench_encoders(_compose("competitors=1", "lengths=[8]"), tmp_path)
    assert len(started) == 1 and all(seen_running) and len(seen_running) == 3
    assert started[0].poll() is not None                     # killed at the end
    assert {r["competitors"] for r in rows} == {1}
    assert "1 competing process" in (tmp_path / "encoder_bench.md").read_text()


def test_profile_mode_breaks_one_mamba_layer_down(tmp_path):
    from ssm.tasks.bench_encoders import run
    from ssm.tasks.profile_layer import BUCKETS, UNTRACED

    table = run(_compose("mode=profile", "profile.lengths=[8,16]", "profile.steps=1"), tmp_path)
    assert (tmp_path / "profile.md").read_text() == table
    assert "L = 8" in table and "L = 16" in table
    for bucket in [b for b, _ in BUCKETS] + [UNTRACED]:
        assert f"| {bucket} |" in table
    # The layer's matmuls and its compiled scan were seen by the profiler.
    matmul = next(line for line in table.splitlines() if line.startswith("| matmul |"))
    scan = next(line for line in table.splitlines() if line.startswith("| selective scan"))
    assert "| 0.00 ms" not in matmul and "| 0.00 ms" not in scan
    ops = (tmp_path / "profile_L16.txt").read_text()
    assert "aten::mm" in ops or "aten::addmm" in ops


@pytest.mark.parametrize("overrides,words", [
    (["mode=fast"], "mode must be"),
    (["mode=profile", "profile.encoder=transformer"], "no Mamba layer"),
    (["mode=steps", "profile.encoder=lstm"], "profile.encoder='lstm'"),
    (["mode=profile", "profile.steps=0"], "profile.steps must be >= 1"),
    (["mode=steps", "profile.scope=model"], "profile.scope must be"),
    (["competitors=-1"], "competitors must be"),
])
def test_bad_modes_are_named(tmp_path, overrides, words):
    from ssm.tasks.bench_encoders import run

    with pytest.raises(ValueError, match=words):
        run(_compose(*overrides, "profile.lengths=[8]"), tmp_path)


def test_steps_mode_runs_the_layer_untimed(tmp_path, monkeypatch):
    """mode=steps: warm-up plus profile.steps forward + backward steps, nothing written."""
    import ssm.tasks.profile_layer as task

    calls = []
    real_step = task.layer_step

    def counting(*args):
        step = real_step(*args)
        return lambda: (calls.append(1), step())
    monkeypatch.setattr(task, "layer_step", counting)
    said = task.run_steps(_compose("mode=steps", "profile.lengths=[8,16]", "profile.steps=3"))
    assert len(calls) == 6 and "ran 3 forward + backward steps of one Mamba layer" in said
    assert not any(tmp_path.iterdir())


def test_profile_mode_takes_a_whole_encoder(tmp_path):
    """scope=encoder: the time mode's workload, any encoder; attention shows up."""
    from ssm.tasks.bench_encoders import run

    table = run(_compose("mode=profile", "profile.scope=encoder", "profile.encoder=transformer",
                         "profile.lengths=[8]", "profile.steps=1"), tmp_path)
    assert table.startswith("### The transformer encoder, forward + backward, batch 2")
    assert "attention" in (tmp_path / "profile_L8.txt").read_text()
