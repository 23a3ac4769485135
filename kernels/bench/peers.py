"""mamba-ssm as an independent oracle and benchmark peer (the optional ``peer`` extra).

mamba-ssm 2.3.2 imports its CUDA extension ``selective_scan_cuda`` unconditionally. On a
CPU-only install that extension is absent, so an empty placeholder module is registered
first; its pure-PyTorch ``selective_scan_ref`` then imports and works.

The package's own __init__ imports its models, and through them transformers. Where that
fails (a GPU machine given only the mamba-ssm sources), the ops are imported with the
package __init__ files skipped: they need only torch, einops and triton.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Callable, Optional

from kernels.bench.sm90_profile import import_without_package_inits


def _import_mamba(name: str):
    """The module ``mamba_ssm.<...>``, or None where mamba-ssm is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None or not spec.submodule_search_locations:
            return None
        try:
            return import_without_package_inits(
                name, Path(list(spec.submodule_search_locations)[0]))
        except ImportError:
            return None


def _import_interface():
    try:
        import selective_scan_cuda  # noqa: F401  (the real extension, on a CUDA build)
        has_cuda_kernel = True
    except ImportError:
        sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
        has_cuda_kernel = False
    interface = _import_mamba("mamba_ssm.ops.selective_scan_interface")
    return interface, has_cuda_kernel and interface is not None


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
    module = _import_mamba("mamba_ssm.ops.triton.selective_state_update")
    return module.selective_state_update_ref if module is not None else None


def mamba_selective_state_update() -> Optional[Callable]:
    """mamba-ssm's Triton decode kernel ``selective_state_update``, or None."""
    _import_interface()
    module = _import_mamba("mamba_ssm.ops.triton.selective_state_update")
    return module.selective_state_update if module is not None else None
