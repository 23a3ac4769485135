"""mamba-ssm as an independent oracle and benchmark peer (the optional ``peer`` extra).

mamba-ssm 2.3.2 imports its CUDA extension ``selective_scan_cuda`` unconditionally. On a
CPU-only install that extension is absent, so an empty placeholder module is registered
first; its pure-PyTorch ``selective_scan_ref`` then imports and works.
"""
from __future__ import annotations

import sys
import types
from typing import Callable, Optional


def _import_interface():
    try:
        import selective_scan_cuda  # noqa: F401  (the real extension, on a CUDA build)
        has_cuda_kernel = True
    except ImportError:
        sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
        has_cuda_kernel = False
    try:
        from mamba_ssm.ops import selective_scan_interface
    except ImportError:
        return None, False
    return selective_scan_interface, has_cuda_kernel


def mamba_selective_scan_ref() -> Optional[Callable]:
    """mamba-ssm's ``selective_scan_ref`` (computes in float32), or None if not installed."""
    interface, _ = _import_interface()
    return interface.selective_scan_ref if interface is not None else None


def mamba_selective_scan_cuda() -> Optional[Callable]:
    """mamba-ssm's CUDA ``selective_scan_fn``, or None without its compiled extension."""
    interface, has_cuda_kernel = _import_interface()
    return interface.selective_scan_fn if (interface is not None and has_cuda_kernel) else None


def mamba_selective_state_update_ref() -> Optional[Callable]:
    """mamba-ssm's one-step ``selective_state_update_ref``, or None if not installed."""
    _import_interface()
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update_ref
    except ImportError:
        return None
    return selective_state_update_ref
