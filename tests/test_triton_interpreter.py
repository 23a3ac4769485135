"""The vectorised interpreter scan (tests/triton_interpreter.py) equals Triton's own."""
import os

import pytest
import torch
import triton
import triton.language as tl

from kernels.selective_scan.triton_common import combine_affine

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="only meaningful under Triton's interpreter")


@triton.jit
def _scan_kernel(a_ptr, b_ptr, out_ptr, R: tl.constexpr, L: tl.constexpr, REVERSE: tl.constexpr):
    offs = tl.arange(0, R)[:, None] * L + tl.arange(0, L)[None, :]
    a = tl.load(a_ptr + offs)
    b = tl.load(b_ptr + offs)
    _, h = tl.associative_scan((a, b), axis=1, combine_fn=combine_affine, reverse=REVERSE)
    tl.store(out_ptr + offs, h)


@pytest.mark.parametrize("reverse", [False, True])
def test_fast_scan_matches_interpreter_and_loop(reverse):
    from triton_interpreter import install_fast_scan, uninstall_fast_scan

    a, b = torch.rand(4, 16) + 0.5, torch.randn(4, 16)
    results = {}
    try:
        for name, install in (("original", uninstall_fast_scan), ("fast", install_fast_scan)):
            install()
            out = torch.full_like(a, float("nan"))
            _scan_kernel[(1,)](a, b, out, 4, 16, reverse)
            results[name] = out
    finally:
        install_fast_scan()
    # h_t = a_t h_{t-1} + b_t, from the other end when reversed.
    expected = torch.empty_like(a)
    h = torch.zeros(4)
    for t in (reversed(range(16)) if reverse else range(16)):
        h = a[:, t] * h + b[:, t]
        expected[:, t] = h
    torch.testing.assert_close(results["original"], expected)
    torch.testing.assert_close(results["fast"], expected)
