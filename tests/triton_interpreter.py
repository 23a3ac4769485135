"""Two speed-ups of Triton's CPU interpreter for the kernel tests.

1. A vectorised ``tl.associative_scan``. The interpreter evaluates a scan with a user
   combine function one element at a time in Python (~150 us per element), which makes
   kernel tests on CPU crawl. This replaces that step with a Hillis-Steele scan:
   log2(length) calls of the same combine function on whole arrays. The result is the same
   inclusive scan for any associative combine (the compiled GPU scan is also a tree, not a
   left fold). ``reverse=True`` keeps the interpreter's own flip-scan-flip handling.
2. Device-function calls without re-patching. Every call of a @triton.jit helper from a
   kernel (``column``, ``load_dt``, ...) re-patches all of triton.language for the
   interpreter (about 0.5 ms), although the kernel's launch already did; inside a launch
   the repeats are skipped. The launch still patches once and restores afterwards.

Set KERNELS_FAST_INTERPRETER_SCAN=0 to use the original interpreter.
"""
from __future__ import annotations

import os

import numpy as np


def _hillis_steele_scan(self, inputs):
    axis = self.axis
    dtypes = [x.dtype for x in inputs]
    acc = [np.array(x.handle.data) for x in inputs]
    length = acc[0].shape[axis]
    offset = 1
    positions = np.arange(length)
    while offset < length:
        # Block shapes must stay powers of two, so combine full-size arrays: position i
        # takes acc[i - offset] as its earlier partner; positions below offset keep acc.
        shifted = np.maximum(positions - offset, 0)
        early = [self.to_tensor(np.take(a, shifted, axis=axis), dt) for a, dt in zip(acc, dtypes)]
        late = [self.to_tensor(a, dt) for a, dt in zip(acc, dtypes)]
        combined = self.combine_fn.fn(*early, *late)
        combined = combined if isinstance(combined, tuple) else (combined,)
        keep = np.expand_dims(positions >= offset, tuple(i for i in range(acc[0].ndim) if i != axis))
        acc = [np.where(keep, c.handle.data, a) for a, c in zip(acc, combined)]
        offset *= 2
    return [self.to_tensor(a, dt) for a, dt in zip(acc, dtypes)]


def _install_patch_once() -> None:
    """Inside a kernel launch, patch triton.language once (at the launch), not again at
    every device-function call."""
    from triton.runtime import interpreter

    needed = ("_patch_lang", "_LangPatchScope", "GridExecutor")
    if hasattr(interpreter, "_original_patch_lang") or not all(
            hasattr(interpreter, name) for name in needed):
        return
    import triton.language as tl

    original_patch, original_launch = interpreter._patch_lang, interpreter.GridExecutor.__call__
    # Within a launch: the language modules (tl, tl.core) already patched.
    state = {"launches": 0, "patched": set()}

    def patch_lang(fn):
        langs = {id(v) for v in fn.__globals__.values() if v is tl or v is tl.core}
        if state["launches"] and langs <= state["patched"]:
            return interpreter._LangPatchScope()  # this launch patched them already
        scope = original_patch(fn)
        if state["launches"]:
            state["patched"] |= langs
        return scope

    def launch(self, *args, **kwargs):
        outer = state["patched"]
        state["launches"] += 1
        state["patched"] = set()
        try:
            return original_launch(self, *args, **kwargs)
        finally:
            state["launches"] -= 1
            state["patched"] = outer

    interpreter._original_patch_lang = original_patch
    interpreter._patch_lang = patch_lang
    interpreter.GridExecutor.__call__ = launch


def install_fast_scan() -> bool:
    """Swap in the vectorised scan (and patch-once device calls); returns False (and
    changes nothing) where it can't."""
    if os.environ.get("KERNELS_FAST_INTERPRETER_SCAN", "1") == "0":
        return False
    try:
        from triton.runtime.interpreter import ScanOps
    except ImportError:
        return False
    if not hasattr(ScanOps, "generic_scan"):
        return False
    if not hasattr(ScanOps, "_original_generic_scan"):
        ScanOps._original_generic_scan = ScanOps.generic_scan
    ScanOps.generic_scan = _hillis_steele_scan
    _install_patch_once()
    return True


def uninstall_fast_scan() -> None:
    from triton.runtime.interpreter import ScanOps
    if hasattr(ScanOps, "_original_generic_scan"):
        ScanOps.generic_scan = ScanOps._original_generic_scan
