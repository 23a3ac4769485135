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
