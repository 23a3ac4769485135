"""Selective-scan benchmark: correctness check, then timings per backend, shape and mode.

GPU timings are medians of ``triton.testing.do_bench``; CPU timings are medians of
``torch.utils.benchmark``. Every row carries achieved GB/s and its ratio to the roofline.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from kernels import selective_scan_fn, selective_scan_ref
from kernels.selective_scan import cpu as cpu_extension
from kernels.testing import (TOLERANCE, ScanCase, compare_to_reference, make_inputs, scan_grid,
                             tensor_inputs)
from ssm.bench import roofline
from ssm.peers import mamba_selective_scan_cuda, mamba_selective_scan_ref

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("fwd", "fwd+bwd")


@dataclass(frozen=True)
class BenchShape:
    b: int
    d: int
    l: int
    n: int = 16
    dtype: str = "float32"
    z: bool = True

    def case(self) -> ScanCase:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        # The Mamba block's call: D skip, delta_bias with softplus, optional z gate.
        return ScanCase(b=self.b, d=self.d, l=self.l, n=self.n, g=0, dtype=DTYPES[self.dtype],
                        D=True, z=self.z, delta_bias=True, delta_softplus=True,
                        initial_state=False, return_last_state=False)


def available_backends(device: torch.device) -> dict[str, Optional[Callable]]:
    """name -> scan function with mamba-ssm's signature, or None where it can't run here."""
    on_cuda = device.type == "cuda"
    on_cpu = device.type == "cpu" and cpu_extension.available()
    return {
        "triton": functools.partial(selective_scan_fn, backend="triton") if on_cuda else None,
        "cpu": functools.partial(selective_scan_fn, backend="cpu") if on_cpu else None,
        "reference": functools.partial(selective_scan_fn, backend="reference"),
        "mamba_ref": mamba_selective_scan_ref(),
        "mamba_cuda": mamba_selective_scan_cuda() if on_cuda else None,
    }


def time_ms(fn: Callable, device: torch.device, cpu_min_run_time: float = 0.5):
    """(median, 20th, 80th percentile) milliseconds of ``fn()``."""
    if device.type == "cuda":
        import triton.testing
        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8]))
    from torch.utils import benchmark
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(
        min_run_time=cpu_min_run_time)
    times = sorted(m.times)
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1e3  # noqa: E731
    return m.median * 1e3, pick(0.2), pick(0.8)


def _runner(fn: Callable, kwargs: dict, mode: str) -> Callable:
    if mode == "fwd":
        def forward():
            with torch.no_grad():
                return fn(**kwargs)
        return forward
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensor_inputs(kwargs).items()}
    call = {**kwargs, **leaves}
    grad = torch.randn_like(fn(**call))

    def forward_backward():
        for x in leaves.values():
            x.grad = None
        fn(**call).backward(grad)
    return forward_backward


def bench_one(name: str, fn: Callable, shape: BenchShape, mode: str, device: torch.device,
              bandwidth: float, exps_per_s, cpu_min_run_time: float) -> dict:
    kwargs = make_inputs(shape.case(), device=device)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    for key in ("initial_state", "seq_lens", "reverse"):  # mamba-ssm lacks these
        kwargs.pop(key, None)
    median, p20, p80 = time_ms(_runner(fn, kwargs, mode), device, cpu_min_run_time)
    with torch.no_grad():
        out = fn(**kwargs)
    n_bytes = roofline.scan_bytes(tensor_inputs(kwargs), out, mode)
    n_exps = roofline.scan_exps(shape.b, shape.d, shape.l, shape.n, mode)
    floor = roofline.floor_seconds(n_bytes, n_exps, bandwidth, exps_per_s)
    return {"backend": name, "mode": mode, "b": shape.b, "d": shape.d, "l": shape.l,
            "n": shape.n, "dtype": shape.dtype, "z": shape.z, "median_ms": median,
            "p20_ms": p20, "p80_ms": p80, "gb_per_s": n_bytes / (median / 1e3) / 1e9,
            "floor_ms": floor * 1e3, "x_floor": median / (floor * 1e3)}


def check_correctness(device: torch.device, lengths, groups, extra_shapes=()) -> list[dict]:
    """Triton against the float64 reference on the test grid plus ``extra_shapes``.

    Returns one row per case with its worst relative error; raises AssertionError listing
    every case over its dtype's tolerance.
    """
    triton_scan = functools.partial(selective_scan_fn, backend="triton")
    cases = scan_grid(lengths=tuple(lengths), groups=tuple(groups))
    cases += [BenchShape(**s).case() for s in extra_shapes]
    rows, failures = [], []
    for case in cases:
        errors = compare_to_reference(triton_scan, selective_scan_ref, case, device=device)
        worst_key = max(errors, key=errors.get)
        row = {"case": case.label, "worst": worst_key, "rel_err": errors[worst_key],
               "tolerance": TOLERANCE[case.dtype]}
        rows.append(row)
        if not errors[worst_key] <= row["tolerance"]:
            failures.append(row)
    if failures:
        raise AssertionError(f"{len(failures)} of {len(rows)} cases over tolerance: {failures}")
    return rows


def run_benchmark(shapes, backends, modes, device: torch.device, reference_max_elements: int,
                  cpu_min_run_time: float = 0.5) -> list[dict]:
    """Time every available backend on every shape and mode; unavailable ones are listed
    as skipped rows with the reason, never silently dropped."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"modes must be drawn from {MODES}, got {mode!r}")
    fns = available_backends(device)
    unknown = set(backends) - set(fns)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}; choose from {sorted(fns)}")
    bandwidth = roofline.measure_copy_bandwidth(device)
    exps_per_s = roofline.exp_throughput(device)
    rows = []
    for shape in (BenchShape(**s) for s in shapes):
        elements = shape.b * shape.d * shape.l * shape.n
        for mode in modes:
            for name in backends:
                fn = fns[name]
                slow_loop = name in ("reference", "mamba_ref") and elements > reference_max_elements
                if fn is None or slow_loop:
                    why = "not available here" if fn is None else "over reference_max_elements"
                    rows.append({"backend": name, "mode": mode, **shape.__dict__, "skipped": why})
                    continue
                rows.append(bench_one(name, fn, shape, mode, device, bandwidth, exps_per_s,
                                      cpu_min_run_time))
    return rows


COLUMNS = ("backend", "mode", "b", "d", "l", "n", "dtype", "z", "median_ms", "p20_ms",
           "p80_ms", "gb_per_s", "floor_ms", "x_floor", "skipped")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict], title: str, peer: str = "mamba_ref") -> str:
    """A Markdown table of the rows. x floor: median time over the roofline floor;
    vs peer: how many times faster than ``peer`` on the same shape and mode."""
    peer_ms = {(r["mode"], r["b"], r["d"], r["l"], r["n"], r["dtype"]): r["median_ms"]
               for r in rows if r["backend"] == peer and "skipped" not in r}
    lines = [f"### {title}", "",
             f"| backend | mode | (b, d, l, n) | dtype | median ms | GB/s | x floor | vs {peer} |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        dims = f"({r['b']}, {r['d']}, {r['l']}, {r['n']})"
        head = f"| {r['backend']} | {r['mode']} | {dims} | {r['dtype']} |"
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} | | | |")
            continue
        ref = peer_ms.get((r["mode"], r["b"], r["d"], r["l"], r["n"], r["dtype"]))
        speedup = f"{ref / r['median_ms']:.3g}x" if ref else ""
        lines.append(f"{head} {r['median_ms']:.3f} | {r['gb_per_s']:.3g} | {r['x_floor']:.3g} |"
                     f" {speedup} |")
    return "\n".join(lines)
