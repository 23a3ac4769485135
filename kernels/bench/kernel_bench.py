"""Selective-scan benchmark: correctness check, then timings per backend, shape and mode.

GPU timings are medians of ``triton.testing.do_bench``; CPU timings are medians of
``torch.utils.benchmark``. Every row carries achieved GB/s and its ratio to the roofline.
"""
from __future__ import annotations

import csv
import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from kernels import selective_scan_fn, selective_scan_ref
from kernels.bench import roofline
from kernels.bench.peers import (mamba_selective_scan_cuda, mamba_selective_scan_ref,
                                 mamba_selective_state_update)
from kernels.common.machine import device_name
from kernels.common.timing import time_ms
from kernels.selective_scan import cpu_available
from kernels.selective_scan.testing import (TOLERANCE, ScanCase, compare_to_reference,
                                            make_inputs, scan_grid, tensor_inputs)
from kernels.selective_scan.validation import check_scan_inputs

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("fwd", "fwd+bwd")
BACKENDS = ("triton", "cpu", "reference", "mamba_ref", "mamba_cuda")
# A fixed-config Triton run: "triton@<forward label>/<backward label>", labels as
# LaunchConfig.label writes them (the backward's chunk length is the forward's).
VARIANT_PREFIX = "triton@"


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


SHAPE_KEYS = tuple(f.name for f in fields(BenchShape))
# Sweep order: dtype outermost, l innermost, so a sweep's rows run along l.
SWEEP_ORDER = ("dtype", "z", "b", "d", "n", "l")


def _check_shape(shape: dict, where: str) -> dict:
    unknown = sorted(set(shape) - set(SHAPE_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {', '.join(SHAPE_KEYS)}")
    missing = [k for k in ("b", "d", "l") if k not in shape]
    if missing:
        raise ValueError(f"{where} needs b, d and l; missing {missing}")
    for k in ("b", "d", "l", "n"):
        v = shape.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}.{k} must be a positive integer, got {v!r}")
    dtype = shape.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"{where}.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not isinstance(shape.get("z", True), bool):
        raise ValueError(f"{where}.z must be true or false, got {shape['z']!r}")
    return {**BenchShape(b=1, d=1, l=1).__dict__, **shape}


def _is_list(v) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str)  # list, tuple, ListConfig


def expand_shapes(shapes=(), sweeps=()) -> list[dict]:
    """The listed ``shapes`` followed by every point of every sweep, duplicates dropped.

    A sweep is a shape whose keys may hold lists: each list is swept, the cartesian product
    of all of them, e.g. ``{b: 8, d: 1536, l: [512, 1024, 2048], dtype: [float32, bfloat16]}``
    gives six shapes, dtype outermost and l innermost. Raises ValueError naming the
    offending key (``shapes[i].dtype``, ``sweeps[j].l``, ...).
    """
    shapes, sweeps = list(shapes or ()), list(sweeps or ())
    if not shapes and not sweeps:
        raise ValueError("shapes and sweeps are both empty: give at least one shape")
    out = [_check_shape(dict(s), f"shapes[{i}]") for i, s in enumerate(shapes)]
    for j, sweep in enumerate(sweeps):
        sweep = dict(sweep)
        for k, v in sweep.items():
            if _is_list(v) and not v:
                raise ValueError(f"sweeps[{j}].{k} is an empty list")
        keys = sorted(sweep, key=lambda k: SWEEP_ORDER.index(k) if k in SWEEP_ORDER else -1)
        values = [list(sweep[k]) if _is_list(sweep[k]) else [sweep[k]] for k in keys]
        out += [_check_shape(dict(zip(keys, point)), f"sweeps[{j}]")
                for point in itertools.product(*values)]
    unique = []
    for s in out:
        if s not in unique:
            unique.append(s)
    return unique


def check_settings(backends, modes) -> None:
    """ValueError naming the key for an empty or unknown backend or mode."""
    for key, given, allowed in (("backends", backends, BACKENDS), ("modes", modes, MODES)):
        if not list(given):
            raise ValueError(f"{key} is empty; choose from {list(allowed)}")
        unknown = [x for x in given if x not in allowed
                   and not (key == "backends" and x.startswith(VARIANT_PREFIX))]
        if unknown:
            raise ValueError(f"unknown {key} {unknown}; choose from {list(allowed)}"
                             f" or {VARIANT_PREFIX}<forward config>/<backward config>")
    for name in backends:
        if name.startswith(VARIANT_PREFIX):
            parse_variant(name)


# The Triton modules are imported inside the functions below: the benchmark also runs
# where triton is not installed (macOS), without variants.


def variant_name(forward, backward) -> str:
    """The backend name of a (forward, backward) pair of LaunchConfigs."""
    return f"{VARIANT_PREFIX}{forward.label}/{backward.label}"


def parse_variant(name: str):
    """(forward, backward) LaunchConfigs of a ``triton@...`` backend name; ValueError if
    malformed."""
    from kernels.selective_scan.triton_common import LaunchConfig
    pattern = r"D(\d+)-N(\d+)-L(\d+)-w(\d+)-s(\d+)"
    match = re.fullmatch(f"{re.escape(VARIANT_PREFIX)}{pattern}/{pattern}", name)
    if not match:
        raise ValueError(f"backend {name!r}: expected {VARIANT_PREFIX}D<d>-N<n>-L<l>-w<warps>"
                         "-s<stages>/D<d>-N<n>-L<l>-w<warps>-s<stages>")
    v = [int(x) for x in match.groups()]
    forward = LaunchConfig(*v[:5])
    return forward, replace(LaunchConfig(*v[5:]), block_l=forward.block_l)


def candidate_variants() -> list[str]:
    """Every autotune candidate as a fixed-config backend: each forward candidate with the
    default backward, then each backward candidate behind the default forward."""
    from kernels.selective_scan.triton_common import (COMPILED_BACKWARD, COMPILED_FORWARD,
                                                      backward_at)
    from kernels.selective_scan.triton_tuning import BACKWARD_CANDIDATES, FORWARD_CANDIDATES
    fwd_default, bwd_default = COMPILED_FORWARD, COMPILED_BACKWARD
    names = [variant_name(c, backward_at(bwd_default, c.block_l)) for c in FORWARD_CANDIDATES]
    names += [variant_name(fwd_default, backward_at(c, fwd_default.block_l))
              for c in BACKWARD_CANDIDATES]
    return list(dict.fromkeys(names))


def _variant_fn(name: str) -> Callable:
    """mamba-ssm's signature over the Triton scan with fixed forward and backward configs
    (block_d shrunk where it does not fit the call's d)."""
    from kernels.selective_scan.triton_common import fit_block_d
    from kernels.selective_scan.triton_scan import triton_selective_scan
    forward, backward = parse_variant(name)

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
             return_last_state=False, **extensions):
        dims = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                 return_last_state, **extensions)
        fit = lambda c: replace(c, block_d=fit_block_d(c.block_d, dims.d,  # noqa: E731
                                                       dims.channels_per_group))
        out, last = triton_selective_scan(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus,
            extensions.get("initial_state"), extensions.get("seq_lens"),
            extensions.get("reverse", False), dims, fit(forward), fit(backward))
        return (out, last) if return_last_state else out
    return scan


def available_backends(device: torch.device, names=BACKENDS) -> dict[str, Optional[Callable]]:
    """name -> scan function with mamba-ssm's signature, or None where it can't run here.

    Only ``names`` are looked up: the cpu extension's first build and mamba-ssm's import
    (seconds each) are paid only when asked for.
    """
    on_cuda = device.type == "cuda"
    variants = {name: (lambda name=name: _variant_fn(name) if on_cuda else None)
                for name in names if name.startswith(VARIANT_PREFIX)}
    lookup = {**variants,
        "triton": lambda: (functools.partial(selective_scan_fn, backend="triton")
                           if on_cuda else None),
        "cpu": lambda: (functools.partial(selective_scan_fn, backend="cpu")
                        if device.type == "cpu" and cpu_available() else None),
        "reference": lambda: functools.partial(selective_scan_fn, backend="reference"),
        "mamba_ref": mamba_selective_scan_ref,
        "mamba_cuda": lambda: mamba_selective_scan_cuda() if on_cuda else None,
    }
    return {name: lookup[name]() for name in names}


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
    """One timed row: median and 20th/80th percentile ms, GB/s and the roofline ratio."""
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


def check_correctness(device: torch.device, lengths, groups, extra_shapes=(),
                      strict: bool = True, variants=(), variant_shape=None) -> list[dict]:
    """Triton against the float64 reference on the test grid plus ``extra_shapes``, then
    each of ``variants`` (``triton@...`` backends) once on ``variant_shape``.

    Returns one row per case with its worst relative error and ``ok``; with ``strict``
    raises AssertionError listing every case over its dtype's tolerance.
    """
    triton_scan = functools.partial(selective_scan_fn, backend="triton")
    cases = [(triton_scan, case, "") for case in scan_grid(lengths=tuple(lengths),
                                                           groups=tuple(groups))]
    cases += [(triton_scan, BenchShape(**s).case(), "") for s in extra_shapes]
    if variants:
        case = BenchShape(**(variant_shape or {"b": 2, "d": 16, "l": 600})).case()
        cases += [(_variant_fn(name), case, f" {name}") for name in variants]
    rows, failures = [], []
    for scan, case, variant in cases:
        errors = compare_to_reference(scan, selective_scan_ref, case, device=device)
        worst_key = max(errors, key=errors.get)
        row = {"case": case.label + variant, "worst": worst_key, "rel_err": errors[worst_key],
               "tolerance": TOLERANCE[case.dtype]}
        row["ok"] = bool(errors[worst_key] <= row["tolerance"])
        rows.append(row)
        if not row["ok"]:
            failures.append(row)
    if failures and strict:
        raise AssertionError(f"{len(failures)} of {len(rows)} cases over tolerance: {failures}")
    return rows


def run_benchmark(shapes, backends, modes, device: torch.device, reference_max_elements: int,
                  cpu_min_run_time: float = 0.5, on_row: Optional[Callable] = None) -> list[dict]:
    """Time every available backend on every shape and mode; unavailable ones are listed
    as skipped rows with the reason, never silently dropped. ``shapes`` are dicts of
    :class:`BenchShape` fields (see :func:`expand_shapes` for sweeps). Every row carries
    the device's name, and is passed to ``on_row`` the moment it is measured. A backend
    that fails (e.g. a variant that does not compile) gives a skipped row with the error."""
    check_settings(backends, modes)
    shapes = expand_shapes(shapes)
    fns = available_backends(device, backends)
    machine = device_name(device)
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
                    row = {"backend": name, "mode": mode, **shape.__dict__, "skipped": why}
                else:
                    try:
                        row = bench_one(name, fn, shape, mode, device, bandwidth, exps_per_s,
                                        cpu_min_run_time)
                    except Exception as error:  # noqa: BLE001  (recorded in the row)
                        if not name.startswith(VARIANT_PREFIX):
                            raise
                        row = {"backend": name, "mode": mode, **shape.__dict__,
                               "skipped": f"failed: {type(error).__name__}: {error}"[:300]}
                row = {**row, "device": machine}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


DECODE_BACKENDS = ("triton", "mamba_triton")


def run_decode_benchmark(shapes, device: torch.device, on_row: Optional[Callable] = None,
                         backends=DECODE_BACKENDS) -> list[dict]:
    """One decode step, ``selective_state_update``: ours (Triton) against mamba-ssm's Triton
    kernel, with D, z, dt_bias and softplus; state float32 (b, d, n), the rest in the
    shape's dtype. ``shapes``: dicts with b, d, n, dtype. Rows have mode "decode", l = 1."""
    from kernels import selective_state_update
    fns = {"triton": (functools.partial(selective_state_update, backend="triton")
                      if device.type == "cuda" else None),
           "mamba_triton": mamba_selective_state_update() if device.type == "cuda" else None}
    machine = device_name(device)
    bandwidth = roofline.measure_copy_bandwidth(device)
    rows = []
    for shape in shapes:
        b, d, n, dtype = shape["b"], shape["d"], shape["n"], DTYPES[shape["dtype"]]
        g = torch.Generator().manual_seed(0)
        rand = lambda *size, dt=dtype: torch.randn(*size, generator=g).to(device, dt)  # noqa: E731
        state = rand(b, d, n, dt=torch.float32)
        inputs = {"x": rand(b, d), "dt": rand(b, d), "A": -torch.rand(d, n, generator=g).to(device),
                  "B": rand(b, n), "C": rand(b, n), "D": rand(d, dt=torch.float32),
                  "z": rand(b, d), "dt_bias": rand(d, dt=torch.float32)}
        n_bytes = 2 * state.numel() * 4 + sum(x.numel() * x.element_size() for x in inputs.values())
        n_bytes += b * d * inputs["x"].element_size()                          # the output
        for name in backends:
            row = {"backend": name, "mode": "decode", "b": b, "d": d, "l": 1, "n": n,
                   "dtype": shape["dtype"], "z": True, "device": machine}
            fn = fns.get(name)
            if fn is None:
                row["skipped"] = "not available here"
            else:
                step = functools.partial(fn, state, **inputs, dt_softplus=True)
                median, p20, p80 = time_ms(step, device)
                floor_ms = n_bytes / bandwidth * 1e3
                row.update({"median_ms": median, "p20_ms": p20, "p80_ms": p80,
                            "gb_per_s": n_bytes / (median / 1e3) / 1e9, "floor_ms": floor_ms,
                            "x_floor": median / floor_ms})
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


COLUMNS = ("backend", "mode", "b", "d", "l", "n", "dtype", "z", "median_ms", "p20_ms",
           "p80_ms", "gb_per_s", "floor_ms", "x_floor", "skipped", "device")
_INTS = ("b", "d", "l", "n")
_FLOATS = ("median_ms", "p20_ms", "p80_ms", "gb_per_s", "floor_ms", "x_floor")


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class CsvAppender:
    """Writes a header now and each row the moment it comes (flushed), so a run that is
    killed keeps every row measured before."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_csv([], self.path)

    def __call__(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore").writerow(row)


def read_csv(path) -> list[dict]:
    """Rows as :func:`run_benchmark` returns them, from a CSV that :func:`write_csv` wrote
    (numbers parsed; empty cells dropped, so skipped rows keep only ``skipped``)."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {k: v for k, v in raw.items() if k is not None and v not in ("", None)}
            for k in _INTS:
                if k in row:
                    row[k] = int(row[k])
            for k in _FLOATS:
                if k in row:
                    row[k] = float(row[k])
            if "z" in row:
                row["z"] = row["z"] == "True"
            rows.append(row)
    return rows


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
