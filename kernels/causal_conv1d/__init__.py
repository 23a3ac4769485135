"""Depthwise causal 1-D convolution (the Mamba block's short conv) and its decode step.

reference.py    the sum over taps written out: the oracle
interface.py    ``causal_conv1d_fn`` and ``causal_conv1d_update``: checks, then a backend
triton_conv.py  Triton forward, backward and decode-step kernels
cpu.py          the compiled CPU loop (cpu_conv.cpp): conv, bias and SiLU fused, built on
                first use
"""
from .cpu import EXTENSION as _CPU
from .interface import BACKENDS, causal_conv1d_fn, causal_conv1d_update
from .reference import causal_conv1d_ref, causal_conv1d_update_ref

cpu_available = _CPU.available  # whether the compiled CPU path loads (builds it once)

__all__ = ["BACKENDS", "causal_conv1d_fn", "causal_conv1d_ref", "causal_conv1d_update",
           "causal_conv1d_update_ref", "cpu_available"]
