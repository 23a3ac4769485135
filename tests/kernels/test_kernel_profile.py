"""The static sm_90a profile: SASS reading, signatures as the launcher specialises them,
the entry point's files, and the issue-11 targets on the scan kernels (compiled for real,
in a subprocess, with the triton installed here)."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from experiments.kernel_profile import profile
from kernels.bench import sm90_profile
from kernels.bench.kernel_profile import TARGETS, WORKER, build_request, run_worker, target_report
from kernels.selective_scan import triton_bwd, triton_fwd
from kernels.selective_scan.testing import ScanCase, make_inputs
from kernels.selective_scan.triton_common import LaunchConfig
from kernels.selective_scan.triton_scan import triton_selective_scan
from kernels.selective_scan.validation import check_scan_inputs
from run_config import CONF

SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   FFMA R2, R3, R4, R5 ;
        /*0030*/                   MUFU.EX2 R6, R2 ;
        /*0040*/                   SHFL.UP PT, R7, R6, 0x1, RZ ;
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0060*/               @P0 BRA 0x20 ;
        /*0070*/                   RED.E.ADD.F32.FTZ.RN.STRONG.GPU [R8.64], R6 ;
        /*0080*/              @!P1 BRA 0x10 ;
        /*0090*/                   EXIT ;
        /*00a0*/                   BRA 0xa0;
"""


def test_innermost_loop_is_read_from_backward_branches():
    code = [(int(m.group(1), 16), m.group(2)) for m in sm90_profile._INSTRUCTION.finditer(SASS)]
    body = sm90_profile.innermost_loop(code)
    # Loops 0x10..0x80 and 0x20..0x60 (the branch-to-itself at 0xa0 is the trap after
    # EXIT, not a loop); the inner one holds no other.
    assert [sm90_profile.opcode(t) for t in body] == ["FFMA", "MUFU", "SHFL", "BAR", "BRA"]
    counts = sm90_profile.count_loop(body)
    assert (counts["loop_instructions"], counts["shuffles"], counts["barriers"],
            counts["mufu"]) == (5, 1, 1, 1)
    assert sm90_profile.opcode("@!P1 RED.E.ADD.F32 [R8.64], R6") == "RED"
    # A kernel without loops (the trap aside): the whole kernel is its hot loop.
    no_loop = code[:6] + code[-2:]
    assert len(sm90_profile.innermost_loop(no_loop)) == len(no_loop)


def test_arguments_are_specialised_like_the_launcher():
    assert sm90_profile._specialise({"ptr": "bf16"}) == ("*bf16", True, None)
    assert sm90_profile._specialise(1) == ("constexpr", False, 1)
    assert sm90_profile._specialise(2048) == ("i32", True, None)
    assert sm90_profile._specialise(33) == ("i32", False, None)
    assert sm90_profile._specialise(2**31) == ("i64", True, None)


class _Recorder:
    """Stands in for a @triton.jit kernel: records the launch's arguments by name."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            named = dict(zip(self.kernel.arg_names, args))
            self.calls.append({**named, **kwargs})
        return launch


def test_profile_jobs_match_what_the_launchers_pass(monkeypatch):
    """scan_jobs describes the same arguments, by name and specialisation, that the
    launchers pass for the same shape and config (a launcher change must reach the profile)."""
    b, d, l, n = 2, 8, 96, 4
    case = ScanCase(b=b, d=d, l=l, n=n, g=0, dtype=torch.bfloat16, initial_state=False,
                    return_last_state=False)
    kwargs = make_inputs(case)
    config = LaunchConfig(block_d=4, block_n=1, block_l=32, num_warps=4)
    jobs = {j.kernel: j for j in sm90_profile.scan_jobs(b, d, l, n, "bfloat16", config, config)}
    fwd_rec = _Recorder(triton_fwd._selective_scan_fwd_kernel)
    bwd_rec = _Recorder(triton_bwd._selective_scan_bwd_kernel)
    monkeypatch.setattr(triton_fwd, "_selective_scan_fwd_kernel", fwd_rec)
    monkeypatch.setattr(triton_bwd, "_selective_scan_bwd_kernel", bwd_rec)
    leaves = {k: v.requires_grad_() for k, v in kwargs.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()}
    dims = check_scan_inputs(**kwargs)
    out, _ = triton_selective_scan(kwargs["u"], kwargs["delta"], kwargs["A"], kwargs["B"],
                                   kwargs["C"], kwargs["D"], kwargs["z"], kwargs["delta_bias"],
                                   True, None, None, False, dims, config)
    out.backward(torch.ones_like(out))  # outputs were never written: only the launch matters
    assert leaves
    for recorder, name in ((fwd_rec, "selective_scan_fwd"), (bwd_rec, "selective_scan_bwd")):
        (call,) = recorder.calls
        job = jobs[name]
        for arg, value in call.items():
            if arg in job.constexprs:
                assert job.constexprs[arg] == value, (name, arg)
            elif arg in job.args:
                expected = job.args[arg]
                if isinstance(value, torch.Tensor):
                    dtype = str(value.dtype).replace("torch.", "")
                    assert expected == sm90_profile.pointer(dtype), (name, arg)
                else:
                    assert sm90_profile._specialise(expected) == sm90_profile._specialise(value), (name, arg)
            elif arg not in ("num_warps", "num_stages", "enable_fp_fusion"):
                raise AssertionError(f"{name}: launcher passes {arg}, the profile does not")
        assert job.num_warps == call["num_warps"] and job.num_stages == call["num_stages"]


@pytest.mark.slow  # compiles both scan kernels for sm_90a: about a minute here
def test_scan_kernels_meet_the_static_targets():
    s = {"b": 8, "d": 1536, "l": 2048, "n": 16, "dtype": "bfloat16"}
    rows = run_worker({"scan": s, "kernels": ["selective_scan_fwd", "selective_scan_bwd"]})
    assert [r["kernel"] for r in rows] == ["selective_scan_fwd", "selective_scan_bwd"]
    assert not any("error" in r for r in rows), rows
    for row in rows:
        assert row["registers"] > 0 and row["loop_instructions"] > 0
        for column, bound in TARGETS[row["kernel"]].items():
            assert row[column] <= bound, (row["kernel"], column, row[column])
    # One exp per (d, l, n) element in the forward's loop, one more in the backward's
    # (the recompute) at most twice: the loop found is the state loop.
    assert rows[0]["mufu_per_element"] == pytest.approx(1.0, abs=0.3)
    assert all("NOT met" not in line for line in target_report(rows))


@pytest.mark.slow  # compiles 12 kernels for sm_90a: about a minute here
def test_options_and_small_blocks_compile():
    """What the compiled test grid will ask of a GPU compiles here first: other dtypes,
    every optional input, reverse, and the forced tiny blocks (chunks of 2 to 16 steps,
    several states per iteration), at a length that is not a multiple of 16."""
    options = [{"HAS_H0": True, "HAS_SEQ_LENS": True, "REVERSE": True, "HAS_G_LAST": True},
               {"HAS_D": False, "HAS_Z": False, "HAS_DELTA_BIAS": False,
                "DELTA_SOFTPLUS": False, "SAVE_CHUNK_STATES": False}]
    tiny = {"block_d": 2, "block_n": 4, "block_l": 2, "num_warps": 4}
    request = {"scan": {"b": 2, "d": 64, "l": 300, "n": 5, "dtype": "float16"},
               "scan_configs": [[None, None], [tiny, tiny]], "scan_options": options,
               "kernels": ["selective_scan_fwd", "selective_scan_bwd"]}
    rows = run_worker(request)
    assert len(rows) == 8 and not [r for r in rows if "error" in r]
    assert {r["config"] for r in rows} == {"D4-N1-L128-w2-s1", "D2-N1-L128-w1-s1",
                                           "D2-N4-L2-w4-s1"}


@pytest.mark.slow  # a subprocess compiles the two smallest kernels
def test_entry_point_writes_csv_and_markdown(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="kernel_profile",
                      overrides=["kernels=[causal_conv1d_update,selective_state_update]"])
    rows = profile(cfg, tmp_path)
    assert [r["kernel"] for r in rows] == ["selective_state_update", "causal_conv1d_update"]
    with open(tmp_path / "kernel_profile.csv") as f:
        written = list(csv.DictReader(f))
    assert [r["kernel"] for r in written] == ["selective_state_update", "causal_conv1d_update"]
    for row in written:
        assert int(row["registers"]) > 0 and float(row["sass_per_element"]) > 0
        assert row["spill_bytes"] == "0" and row["hot_loop"] == "whole kernel"
    md = (tmp_path / "kernel_profile.md").read_text()
    assert "| selective_state_update | D64-N16-w4 |" in md and "Targets" in md


@pytest.mark.slow
def test_worker_compiles_without_torch(tmp_path):
    """The GPU machines' Triton lives in a venv without torch: the worker must not need it."""
    block_torch = ("import sys, runpy; sys.modules['torch'] = None; "
                   f"sys.argv = [{str(WORKER)!r}]; runpy.run_path({str(WORKER)!r}, run_name='__main__')")
    request = build_request({"b": 1, "d": 64, "l": 64, "n": 4, "dtype": "float32"},
                            {"b": 1, "d": 64, "n": 4, "dtype": "float32"},
                            {"b": 1, "d": 64, "l": 64, "width": 4, "dtype": "float32"},
                            kernels=["causal_conv1d_update"])
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", block_torch], input=json.dumps(request),
                          capture_output=True, text=True, env=env, cwd=str(sm90_profile.ROOT))
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout)
    assert "error" not in row, row
    assert row["kernel"] == "causal_conv1d_update" and row["registers"] > 0
