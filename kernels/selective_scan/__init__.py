"""Selective scan: reference oracle, Triton kernels and the dispatching public op."""
from .interface import BACKENDS, selective_scan_fn
from .reference import selective_scan_ref

__all__ = ["BACKENDS", "selective_scan_fn", "selective_scan_ref"]
