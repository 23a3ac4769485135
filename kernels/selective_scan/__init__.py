"""Selective scan: the reference oracle, Triton and C++ CPU fast paths, the public op.

reference.py  the recurrence as a readable loop (``selective_scan_ref``): the oracle
interface.py  ``selective_scan_fn``: validation once, then a backend
triton_*.py   chunked forward and backward Triton kernels
cpu.py        the C++ loop (cpu_scan.cpp), built on first use
testing.py    random inputs, error metric and the correctness grid, for tests and benchmarks
"""
from .cpu import EXTENSION as _CPU
from .interface import BACKENDS, selective_scan_fn
from .reference import selective_scan_ref

cpu_available = _CPU.available  # whether the compiled CPU path loads (builds it once)

__all__ = ["BACKENDS", "cpu_available", "selective_scan_fn", "selective_scan_ref"]
