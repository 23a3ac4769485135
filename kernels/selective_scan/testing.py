"""Helpers to check a selective-scan implementation: random inputs, error metric, grid.

Used by the test suite and by the GPU correctness check in the kernel benchmark, so both
judge the kernels the same way.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch

# Relative error ||x - ref|| / ||ref|| allowed against a float64 reference, per input dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2,
             torch.float64: 1e-12}
OPTIONS = ("D", "z", "delta_bias", "delta_softplus", "initial_state", "return_last_state",
           "seq_lens", "reverse")


@dataclass(frozen=True)
class ScanCase:
    """One selective-scan call: sizes, input dtype and which options are on."""

    b: int = 2
    d: int = 4
    l: int = 16
    n: int = 3
    g: int = 0  # 0: B and C are (b, n, l); g >= 1: (b, g, n, l)
    dtype: torch.dtype = torch.float32
    D: bool = True
    z: bool = True
    delta_bias: bool = True
    delta_softplus: bool = True
    initial_state: bool = True
    return_last_state: bool = True
    seq_lens: bool = False
    reverse: bool = False

    def with_options(self, on) -> "ScanCase":
        return replace(self, **{name: name in on for name in OPTIONS})

    @property
    def label(self) -> str:
        on = [o for o in OPTIONS if getattr(self, o)]
        dt = str(self.dtype).replace("torch.", "")
        return f"b{self.b}d{self.d}l{self.l}n{self.n}g{self.g}-{dt}-{'+'.join(on) or 'plain'}"


def make_inputs(case: ScanCase, device="cpu", generator=None) -> dict:
    """Fresh random keyword arguments for ``selective_scan_fn``; never zeros.

    delta is positive and A negative, as in a trained Mamba. A, D, delta_bias and
    initial_state are float32 (parameters; float64 in a float64 case); the rest take
    ``case.dtype``.
    """
    b, d, l, n = case.b, case.d, case.l, case.n
    param = torch.float64 if case.dtype == torch.float64 else torch.float32

    def rand(*shape, dtype=case.dtype, scale=1.0, shift=0.0, normal=True):
        draw = torch.randn if normal else torch.rand
        x = draw(*shape, generator=generator, dtype=torch.float64) * scale + shift
        return x.to(device=device, dtype=dtype)

    bc_shape = (b, n, l) if case.g == 0 else (b, case.g, n, l)
    kwargs = {
        "u": rand(b, d, l),
        # Positive steps; softplus of these stays positive too.
        "delta": rand(b, d, l, scale=0.5, shift=0.05, normal=False),
        "A": -rand(d, n, dtype=param, scale=2.0, shift=0.3, normal=False),
        "B": rand(*bc_shape),
        "C": rand(*bc_shape),
        "D": rand(d, dtype=param) if case.D else None,
        "z": rand(b, d, l) if case.z else None,
        # Without softplus dt = delta + delta_bias must stay positive, so the bias does too;
        # with softplus a signed bias exercises both sides of softplus's knee.
        "delta_bias": (rand(d, dtype=param, scale=0.3, normal=case.delta_softplus)
                       if case.delta_bias else None),
        "delta_softplus": case.delta_softplus,
        "return_last_state": case.return_last_state,
        "initial_state": rand(b, d, n, dtype=param) if case.initial_state else None,
        "reverse": case.reverse,
        "seq_lens": None,
    }
    if case.seq_lens:
        lengths = torch.randint(1, l + 1, (b,), generator=generator)
        lengths[0] = l  # one full row, so the last chunk is always exercised
        kwargs["seq_lens"] = lengths.to(device)
    return kwargs


def tensor_inputs(kwargs: dict) -> dict:
    """The floating-point tensors of a call, the ones that get gradients."""
    return {k: v for k, v in kwargs.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()}


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64; NaN anywhere gives inf."""
    x, ref = x.detach().double(), ref.detach().double()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def run_with_grads(fn, kwargs: dict, grad_out=None, grad_last=None, upcast=False):
    """Call ``fn(**kwargs)`` and backpropagate fixed random cotangents.

    Returns (outputs, grads, grad_out, grad_last): outputs is (out, last_state or None),
    grads maps each floating tensor input to its gradient. With ``upcast`` the inputs are
    first copied to float64 (the reference oracle's run).
    """
    leaves = {}
    call = dict(kwargs)
    for name, x in tensor_inputs(kwargs).items():
        leaf = x.detach().clone().to(torch.float64 if upcast else x.dtype).requires_grad_()
        leaves[name] = leaf
        call[name] = leaf
    result = fn(**call)
    out, last = result if isinstance(result, tuple) else (result, None)
    if grad_out is None:
        grad_out = torch.randn(out.shape, dtype=torch.float64, device=out.device)
    loss = (out.double() * grad_out).sum()
    if last is not None:
        if grad_last is None:
            grad_last = torch.randn(last.shape, dtype=torch.float64, device=out.device)
        loss = loss + (last.double() * grad_last).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return (out, last), dict(zip(leaves, grads)), grad_out, grad_last


def compare_to_reference(fn, ref_fn, case: ScanCase, device="cpu", generator=None,
                         ref_upcast=True) -> dict:
    """Worst relative errors of ``fn`` against ``ref_fn`` on one fresh random case.

    Returns {"out": e, "last_state": e, "grad_u": e, ...}.
    """
    kwargs = make_inputs(case, device=device, generator=generator)
    (out, last), grads, g_out, g_last = run_with_grads(fn, kwargs)
    (ref_out, ref_last), ref_grads, _, _ = run_with_grads(ref_fn, kwargs, g_out, g_last,
                                                          upcast=ref_upcast)
    errors = {"out": relative_error(out, ref_out)}
    if last is not None:
        errors["last_state"] = relative_error(last, ref_last)
    for name, g in grads.items():
        errors[f"grad_{name}"] = relative_error(g, ref_grads[name])
    return errors


def pairwise_option_sets():
    """Option subsets covering every pair of options in every on/off combination.

    Greedy covering array: far fewer calls than all 2**8 subsets, and every option still
    appears both on and off next to every other option's on and off.
    """
    pairs_needed = {(i, j, vi, vj) for i, j in itertools.combinations(range(len(OPTIONS)), 2)
                    for vi in (0, 1) for vj in (0, 1)}
    rows = [tuple([1] * len(OPTIONS)), tuple([0] * len(OPTIONS))]
    candidates = list(itertools.product((0, 1), repeat=len(OPTIONS)))

    def covered(row):
        return {(i, j, row[i], row[j]) for i, j in itertools.combinations(range(len(OPTIONS)), 2)}

    for row in rows:
        pairs_needed -= covered(row)
    while pairs_needed:
        best = max(candidates, key=lambda r: len(covered(r) & pairs_needed))
        rows.append(best)
        pairs_needed -= covered(best)
    return [{OPTIONS[i] for i, v in enumerate(row) if v} for row in rows]


def scan_grid(lengths=(1, 7, 64, 130, 373), groups=(0, 2), b=2, d=4, n=3):
    """The correctness grid: every length and group layout; float32 with pairwise-covering
    option sets, float16 and bfloat16 with all options on and all off."""
    option_sets = pairwise_option_sets()
    cases = []
    for l in lengths:
        for g in groups:
            # Short rows give gB and gC only a few entries, each a sum over d channels; a
            # norm over so few can cancel to near zero and swamp float32 rounding (rel.
            # errors up to 4e-6 at b=2, l=1 in 1500 draws; under 8e-7 at b=4).
            rows = max(b, 4) if l < 16 else b
            base = ScanCase(b=rows, d=d, l=l, n=n, g=g)
            cases += [base.with_options(on) for on in option_sets]
            for dtype in (torch.float16, torch.bfloat16):
                cases += [replace(base, dtype=dtype).with_options(on)
                          for on in (option_sets[0], set())]
    return cases
