"""Session-wide test settings, applied before anything imports triton.

Without CUDA, Triton kernels run through Triton's CPU interpreter (TRITON_INTERPRET=1), with
its per-element scan swapped for a vectorised one (see triton_interpreter.py). Kernel output
buffers are filled with NaN, so an element a kernel forgets to write fails the comparison.
"""
import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("KERNELS_POISON_OUTPUTS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

if os.environ.get("TRITON_INTERPRET") == "1":
    from triton_interpreter import install_fast_scan

    install_fast_scan()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def device():
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def compose_train():
    """``compose_train(*overrides)``: the real training config, shrunk (run_config.py)."""
    from run_config import compose_train as compose

    return compose


def pytest_terminal_summary(terminalreporter):
    """Worst relative error per oracle and dtype over the selective-scan checks that ran."""
    worst = getattr(__import__("sys").modules.get("scan_checks"), "WORST_ERRORS", None)
    if not worst:
        return
    terminalreporter.section("selective scan: worst relative error")
    for (backend, oracle, dtype), (value, name, label) in sorted(worst.items()):
        terminalreporter.write_line(
            f"{backend:>9} vs {oracle:<9} {dtype:>9}: {value:.2e} ({name}, {label})")
