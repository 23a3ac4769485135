"""The kernel benchmark composes from the real config and runs end to end on CPU."""
import csv

import pytest
from hydra import compose, initialize_config_dir

from experiments.bench_kernels import bench, resolve_device
from ssm.bench import roofline
from ssm.bench.kernel_bench import BenchShape, run_benchmark

CONF = str((__import__("pathlib").Path(__file__).parents[2] / "conf").resolve())
TINY = ["shapes=[{b: 1, d: 4, l: 16, n: 4, dtype: float32, z: true}]", "cpu_min_run_time=0.01"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="bench", overrides=list(overrides))


def test_default_bench_runs_on_cpu(tmp_path):
    cfg = _compose(*TINY, "device=cpu")
    rows = bench(cfg, tmp_path)
    by_backend = {(r["backend"], r["mode"]): r for r in rows}
    assert set(m for _, m in by_backend) == {"fwd", "fwd+bwd"}
    assert by_backend[("triton", "fwd")]["skipped"] == "not available here"
    ref = by_backend[("reference", "fwd+bwd")]
    assert ref["median_ms"] > 0 and ref["gb_per_s"] > 0 and ref["x_floor"] >= 1.0
    assert by_backend[("cpu", "fwd")]["median_ms"] > 0
    with open(tmp_path / "kernel_bench.csv") as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) and written[0]["backend"] == "triton"
    assert "| reference | fwd+bwd | (1, 4, 16, 4) |" in (tmp_path / "kernel_bench.md").read_text()


def test_gpu_quick_preset_composes():
    cfg = _compose("+preset=gpu_quick")
    assert cfg.device == "cuda" and cfg.check.enabled
    assert {"b": 8, "d": 1536, "l": 2048, "n": 16, "dtype": "bfloat16", "z": True} in cfg.shapes
    assert "triton" in cfg.backends and "mamba_cuda" in cfg.backends


def test_cpu_targets_preset_composes():
    cfg = _compose("+preset=cpu_targets")
    assert cfg.device == "cpu" and list(cfg.backends) == ["cpu", "reference", "mamba_ref"]
    assert {"b": 2, "d": 512, "l": 1024, "n": 16, "dtype": "float32", "z": True} in cfg.shapes


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown backends"):
        run_benchmark([{"b": 1, "d": 2, "l": 4}], ["cudnn"], ["fwd"], resolve_device("cpu"), 10)
    with pytest.raises(ValueError, match="modes"):
        run_benchmark([{"b": 1, "d": 2, "l": 4}], ["reference"], ["bwd"], resolve_device("cpu"), 10)
    with pytest.raises(ValueError, match="dtype"):
        BenchShape(b=1, d=2, l=4, dtype="int8").case()
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="check.enabled needs device=cuda"):
        bench(_compose(*TINY, "device=cpu", "check.enabled=true"), tmp_path)


def test_memory_floor_counts_every_byte():
    import torch
    inputs = {"u": torch.zeros(2, 3, 5), "A": torch.zeros(3, 4, dtype=torch.float16)}
    out = torch.zeros(2, 3, 5, dtype=torch.bfloat16)
    fwd = 30 * 4 + 12 * 2 + 30 * 2
    assert roofline.scan_bytes(inputs, out, "fwd") == fwd
    # backward: inputs and g_out read again, one gradient per input written
    assert roofline.scan_bytes(inputs, out, "fwd+bwd") == fwd + (144 + 60) + 144
    assert roofline.scan_exps(2, 3, 5, 4, "fwd+bwd") == 2 * 120
