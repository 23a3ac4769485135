"""The kernel benchmark composes from the real config and runs end to end on CPU."""
import csv

import pytest
import torch
from hydra import compose, initialize_config_dir

from experiments.bench_kernels import bench, resolve_device
from kernels.bench import roofline
from kernels.bench.kernel_bench import (BenchShape, CsvAppender, candidate_variants,
                                        check_settings, expand_shapes, parse_variant, read_csv,
                                        run_benchmark, run_decode_benchmark, variant_name,
                                        write_csv)
from kernels.bench.plots import mode_filename, plot_csv
from kernels.common.machine import device_name
from run_config import CONF, ROOT as ROOT_DIR

TINY = ["shapes=[{b: 1, d: 4, l: 16, n: 4, dtype: float32, z: true}]", "cpu_min_run_time=0.01"]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _compose(*overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="bench", overrides=list(overrides))


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"  # axes, lines and text drawn


@pytest.mark.slow  # times the default shapes with every backend: half a minute
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
    # the machine's name: in the table's title and in every CSV row
    machine = device_name(torch.device("cpu"))
    assert "threads" in machine
    assert f"### Selective scan on {machine}" in (tmp_path / "kernel_bench.md").read_text()
    assert {r["device"] for r in written} == {machine}
    # one PNG per mode, filename-safe
    assert mode_filename("fwd+bwd") == "kernel_bench_fwd_bwd.png"
    for name in ("kernel_bench_fwd.png", "kernel_bench_fwd_bwd.png"):
        _assert_png(tmp_path / name)


def _row(backend, mode, l, dtype="float32", ms=1.0, skipped=None):
    row = {"backend": backend, "mode": mode, "b": 2, "d": 8, "l": l, "n": 4, "dtype": dtype,
           "z": True, "device": "Test GPU"}
    if skipped:
        return {**row, "skipped": skipped}
    return {**row, "median_ms": ms, "p20_ms": ms * 0.9, "p80_ms": ms * 1.2, "gb_per_s": 1.0,
            "floor_ms": ms / 10, "x_floor": 10.0}


def test_plots_redraw_from_csv(tmp_path):
    rows = [_row(b, "fwd+bwd", l, dt, ms=l / 100 * k)
            for dt in ("float32", "bfloat16") for l in (64, 128, 256)
            for k, b in ((1, "triton"), (30, "reference"))]
    rows += [_row("triton", "fwd", 64, skipped="not available here")]  # a mode with no timings
    write_csv(rows, tmp_path / "kernel_bench.csv")
    back = read_csv(tmp_path / "kernel_bench.csv")
    assert back[0] == rows[0] and back[-1] == rows[-1]  # types round-trip
    paths = plot_csv(tmp_path / "kernel_bench.csv", tmp_path / "plots")
    assert [p.name for p in paths] == ["kernel_bench_fwd_bwd.png", "kernel_bench_fwd.png"]
    for p in paths:
        _assert_png(p)
    # and through the entry point: plot_only=CSV redraws into the run dir, times nothing
    out = tmp_path / "run"
    assert bench(_compose(f"plot_only={tmp_path / 'kernel_bench.csv'}"), out) == []
    _assert_png(out / "kernel_bench_fwd_bwd.png")
    assert not (out / "kernel_bench.csv").exists()


def test_sweeps_expand_and_run(tmp_path):
    shapes = expand_shapes([{"b": 1, "d": 4, "l": 32}],
                           [{"b": 1, "d": 4, "l": [16, 32], "n": 4, "dtype": ["float32", "bfloat16"]},
                            {"b": [1, 2], "d": 4, "l": 32}])
    dims = [(s["b"], s["l"], s["n"], s["dtype"]) for s in shapes]
    # listed shapes first; dtype outermost, l innermost; defaults n=16, float32, z; no repeats
    assert dims == [(1, 32, 16, "float32"), (1, 16, 4, "float32"), (1, 32, 4, "float32"),
                    (1, 16, 4, "bfloat16"), (1, 32, 4, "bfloat16"), (2, 32, 16, "float32")]
    assert all(s["z"] is True for s in shapes)
    # Hydra's command-line syntax, run end to end with no listed shapes
    cfg = _compose("shapes=[]", "sweeps=[{b: 1, d: 4, l: [8, 16], n: 4, dtype: [float32, bfloat16]}]",
                   "backends=[reference]", "modes=[fwd]", "device=cpu", "cpu_min_run_time=0.01")
    rows = bench(cfg, tmp_path)
    assert [(r["l"], r["dtype"]) for r in rows] == [(8, "float32"), (16, "float32"),
                                                    (8, "bfloat16"), (16, "bfloat16")]
    _assert_png(tmp_path / "kernel_bench_fwd.png")


def test_gpu_quick_preset_composes():
    cfg = _compose("+preset=gpu_quick")
    assert cfg.device == "cuda" and cfg.check.enabled
    assert {"b": 8, "d": 1536, "l": 2048, "n": 16, "dtype": "bfloat16", "z": True} in cfg.shapes
    assert "triton" in cfg.backends and "mamba_cuda" in cfg.backends
    assert cfg.variants and cfg.check.variants and cfg.decode_shapes
    shapes = expand_shapes(cfg.shapes, cfg.sweeps)
    swept = sorted(s["l"] for s in shapes if (s["b"], s["d"], s["dtype"]) == (8, 1536, "bfloat16"))
    assert swept == [256, 512, 1024, 2048, 4096, 8192]
    # The Python-loop reference's backward grows as l * elements: keep it to short rows.
    with_ref = [s for s in shapes if s["b"] * s["d"] * s["l"] * s["n"] <= cfg.reference_max_elements]
    assert with_ref and max(s["l"] for s in with_ref) <= 512


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
    # config values are checked before anything runs, and the message names the key
    bad = {"modes=[fwd,bwd]": r"unknown modes \['bwd'\]", "modes=[]": "modes is empty",
           "backends=[]": "backends is empty", "backends=[cudnn]": "unknown backends",
           "shapes=[{b: 1, d: 4, l: 8, dtype: int8}]": r"shapes\[0\]\.dtype must be one of",
           "shapes=[{b: 1, d: 4, l: 0}]": r"shapes\[0\]\.l must be a positive integer",
           "shapes=[{b: 1, d: 4, m: 8}]": r"shapes\[0\] has unknown keys \['m'\]",
           "shapes=[]": "shapes and sweeps are both empty",
           "sweeps=[{b: 1, d: 4, l: []}]": r"sweeps\[0\]\.l is an empty list",
           "sweeps=[{b: 1, d: 4, l: [8], dtype: [float32, fp8]}]": r"sweeps\[0\]\.dtype"}
    for override, message in bad.items():
        with pytest.raises(ValueError, match=message):
            bench(_compose("device=cpu", override), tmp_path)
    assert not list(tmp_path.iterdir())


def test_memory_floor_counts_every_byte():
    import torch
    inputs = {"u": torch.zeros(2, 3, 5), "A": torch.zeros(3, 4, dtype=torch.float16)}
    out = torch.zeros(2, 3, 5, dtype=torch.bfloat16)
    fwd = 30 * 4 + 12 * 2 + 30 * 2
    assert roofline.scan_bytes(inputs, out, "fwd") == fwd
    # backward: inputs and g_out read again, one gradient per input written
    assert roofline.scan_bytes(inputs, out, "fwd+bwd") == fwd + (144 + 60) + 144
    assert roofline.scan_exps(2, 3, 5, 4, "fwd+bwd") == 2 * 120


def test_variant_backends_round_trip():
    names = candidate_variants()
    assert len(names) == len(set(names)) >= 2
    for name in names:
        forward, backward = parse_variant(name)
        assert variant_name(forward, backward) == name and backward.block_l == forward.block_l
    check_settings(["triton", *names], ["fwd"])
    with pytest.raises(ValueError, match="expected triton@"):
        check_settings(["triton@D4-N1"], ["fwd"])


def test_rows_reach_the_csv_as_they_are_measured(tmp_path):
    path = tmp_path / "kernel_bench.csv"
    append = CsvAppender(path)
    seen = []

    def on_row(row):
        append(row)
        seen.append(row)
        with open(path) as f:  # already on disk, before the next row is timed
            assert len(list(csv.DictReader(f))) == len(seen)

    shapes = [{"b": 1, "d": 4, "l": 8, "n": 4}, {"b": 1, "d": 4, "l": 16, "n": 4}]
    rows = run_benchmark(shapes, ["reference", candidate_variants()[0]], ["fwd"],
                         resolve_device("cpu"), 10_000, cpu_min_run_time=0.01, on_row=on_row)
    assert len(rows) == len(seen) == 4
    assert rows[1]["skipped"] == "not available here"  # a variant needs CUDA
    back = read_csv(path)
    assert [r["l"] for r in back] == [8, 8, 16, 16] and back[0]["median_ms"] > 0


def test_decode_rows_say_why_they_are_missing_without_cuda():
    rows = run_decode_benchmark([{"b": 1, "d": 4, "n": 4, "dtype": "float32"}],
                                resolve_device("cpu"))
    assert [r["backend"] for r in rows] == ["triton", "mamba_triton"]
    assert all(r["skipped"] == "not available here" and r["mode"] == "decode" for r in rows)


@pytest.mark.slow  # a fresh interpreter imports torch and mamba-ssm
def test_mamba_ops_import_without_transformers():
    """The GPU machine has mamba-ssm's sources but not transformers, which its package
    __init__ imports: the peers still reach its ops."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from kernels.bench import peers\n"
            "assert peers.mamba_selective_scan_ref() is not None\n"
            "assert peers.mamba_selective_state_update() is not None\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(ROOT_DIR))
    if "No module named 'mamba_ssm'" in done.stderr:
        pytest.skip("mamba-ssm not installed")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
