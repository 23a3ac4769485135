"""The ops' compiled CPU paths as built things: the fallback without a compiler, and one
OpenMP runtime (torch's) shared by torch and the extensions."""
import os
import subprocess
import sys
import warnings

import pytest
import torch

from kernels.causal_conv1d import cpu as conv_cpu
from kernels.common.cpu_build import CppExtension, shared_openmp_runtime
from kernels.selective_scan import cpu as scan_cpu


def test_extensions_share_torchs_openmp_runtime():
    """A second runtime would bring a second thread team, spinning beside torch's."""
    assert scan_cpu.EXTENSION.available() and conv_cpu.EXTENSION.available()
    assert shared_openmp_runtime()


def test_without_a_compiler_auto_warns_and_uses_the_reference(tmp_path):
    """A machine whose C++ compiler fails: a clear warning, then correct (slow) results;
    backend='cpu' raises the build error."""
    script = (
        "import warnings, torch\n"
        "from kernels import causal_conv1d_fn, selective_scan_fn, selective_scan_ref\n"
        "from kernels.causal_conv1d import causal_conv1d_ref\n"
        "from kernels.selective_scan.testing import ScanCase, make_inputs\n"
        "kw = make_inputs(ScanCase(l=5))\n"
        "x, w = torch.randn(2, 3, 6), torch.randn(3, 4)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    out = selective_scan_fn(**kw)\n"
        "    conv = causal_conv1d_fn(x, w, None, 'silu')\n"
        "messages = [str(w.message) for w in caught]\n"
        "for what in ('CPU selective scan', 'CPU causal conv'):\n"
        "    assert any(what in m and 'could not be built' in m for m in messages), messages\n"
        "torch.testing.assert_close(out[0], selective_scan_ref(**kw)[0])\n"
        "torch.testing.assert_close(conv, causal_conv1d_ref(x, w, None, 'silu'))\n"
        "for call in (lambda: selective_scan_fn(**kw, backend='cpu'),\n"
        "             lambda: causal_conv1d_fn(x, w, backend='cpu')):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as e:\n"
        "        assert 'could not be built' in str(e)\n"
        "    else:\n"
        "        raise AssertionError('backend=cpu should raise without a compiler')\n"
    )
    env = {**os.environ, "CXX": "false", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiling the CPU selective scan" in result.stderr
    assert "compiling the CPU causal conv" in result.stderr


def test_several_threads_give_the_one_thread_gradients():
    """Tasks spread over threads; gB and gC come from per-thread partial sums."""
    from kernels.selective_scan.testing import ScanCase, make_inputs, relative_error, run_with_grads
    from kernels import causal_conv1d_fn, selective_scan_fn

    def scan_and_conv(u, delta, A, B, C, D, z, delta_bias, initial_state, **kw):
        u = causal_conv1d_fn(u, A[:, :4], D, "silu", backend="cpu")
        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias,
                                 initial_state=initial_state, backend="cpu", **kw)

    # Big enough that both ops spread over 3 threads (kernels.common.cpu_simd.h: workers_for).
    kw = make_inputs(ScanCase(b=4, d=128, l=1000, n=8, g=2, seq_lens=True))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            results.append(run_with_grads(scan_and_conv, kw, *results[0][2:] if results else ()))
    finally:
        torch.set_num_threads(threads)
    (out_1, last_1), grads_1, _, _ = results[0]
    (out_3, last_3), grads_3, _, _ = results[1]
    assert relative_error(out_3, out_1) < 1e-6 and relative_error(last_3, last_1) < 1e-6
    for name, g in grads_3.items():
        assert relative_error(g, grads_1[name]) < 1e-6, name


def test_auto_falls_back_to_the_reference_with_one_warning(tmp_path):
    """An extension that cannot build: backend='auto' on CPU takes the reference and says
    why, once; a CPU extension is never picked for another device."""
    broken = CppExtension("never_built", tmp_path / "missing.cpp", "test op")
    broken.error = "the test op extension could not be built: no compiler"
    with pytest.warns(RuntimeWarning, match="no compiler"):
        assert broken.auto_backend(torch.device("cpu")) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert broken.auto_backend(torch.device("cpu")) == "reference"
    assert scan_cpu.EXTENSION.auto_backend(torch.device("cpu")) == "cpu"
