"""The compiled CPU selective scan (backend="cpu") against both oracles."""
import functools

import pytest
import torch

from kernels import selective_scan_fn, selective_scan_ref
from kernels.selective_scan import cpu
from kernels.selective_scan.testing import ScanCase, compare_to_reference, make_inputs, scan_grid
from scan_checks import assert_close, check_against_oracles, mamba_comparable

cpu_scan = functools.partial(selective_scan_fn, backend="cpu")
# The test grid, plus float64 (which only the cpu and reference backends take).
GRID = scan_grid() + [c.__class__(**{**c.__dict__, "dtype": torch.float64})
                      for c in scan_grid(lengths=(1, 130), groups=(0, 2))[:8]]


@pytest.fixture(scope="module", autouse=True)
def built_extension():
    if not cpu.available():
        pytest.fail(f"CPU extension failed to build: {cpu._build_error}")


@pytest.mark.parametrize("case", GRID, ids=[c.label for c in GRID])
def test_matches_reference_and_mamba(case, generator, request):
    mamba_ref = request.getfixturevalue("mamba_ref") if mamba_comparable(case) else None
    check_against_oracles(cpu_scan, case, "cpu", generator, mamba_ref, "cpu")


@pytest.mark.parametrize("case", [
    ScanCase(b=2, d=24, l=1000, n=16, g=3, seq_lens=True),           # many chunks, many rows
    ScanCase(b=1, d=4, l=200, n=1, g=0, reverse=True),               # n below one vector
    ScanCase(b=1, d=4, l=70, n=33, g=0, seq_lens=True, reverse=True),  # n over whole vectors
    ScanCase(b=1, d=2, l=65, n=256, g=0),                            # mamba's largest
    ScanCase(b=3, d=5, l=64, n=9, g=5, dtype=torch.float64),         # chunk-sized l, float64
], ids=lambda c: c.label)
def test_shapes(case, generator):
    errors = compare_to_reference(cpu_scan, selective_scan_ref, case, "cpu", generator)
    assert_close(errors, case, backend="cpu")


def test_non_contiguous_inputs(generator):
    kw = make_inputs(ScanCase(b=2, d=4, l=19, n=3, g=2), generator=generator)
    strided = {**kw, "u": kw["u"].transpose(1, 2).contiguous().transpose(1, 2),
               "B": kw["B"].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)}
    out, last = cpu_scan(**strided)
    ref_out, ref_last = selective_scan_ref(**kw)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)


def test_auto_backend_on_cpu_is_the_compiled_path(generator):
    kw = make_inputs(ScanCase(l=9), generator=generator)
    torch.testing.assert_close(selective_scan_fn(**kw, backend="auto"), cpu_scan(**kw),
                               rtol=0, atol=0)


def test_rejects_non_cpu_tensors():
    kw = make_inputs(ScanCase(l=4), device="meta")
    with pytest.raises(ValueError, match="backend='cpu' needs CPU tensors"):
        selective_scan_fn(**kw, backend="cpu")


def test_without_a_compiler_auto_warns_and_uses_the_reference(tmp_path):
    """A machine whose C++ compiler fails: a clear warning, then correct (slow) results."""
    import os
    import subprocess
    import sys
    script = (
        "import warnings, torch\n"
        "from kernels import selective_scan_fn, selective_scan_ref\n"
        "from kernels.selective_scan.testing import ScanCase, make_inputs\n"
        "kw = make_inputs(ScanCase(l=5))\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    out = selective_scan_fn(**kw)\n"
        "assert any('could not be built' in str(w.message) for w in caught), caught\n"
        "torch.testing.assert_close(out[0], selective_scan_ref(**kw)[0])\n"
        "try:\n"
        "    selective_scan_fn(**kw, backend='cpu')\n"
        "except RuntimeError as e:\n"
        "    assert 'could not be built' in str(e)\n"
        "else:\n"
        "    raise AssertionError('backend=cpu should raise without a compiler')\n"
    )
    env = {**os.environ, "CXX": "false", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiling the CPU selective scan" in result.stderr
