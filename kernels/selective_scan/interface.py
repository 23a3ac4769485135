"""Public selective-scan op: validation once, then dispatch to a backend."""
from __future__ import annotations

import torch

from kernels.common.launch import INTERPRETED, triton_available

from .reference import reference_scan
from .validation import check_scan_inputs

BACKENDS = ("auto", "triton", "cpu", "reference")


def selective_scan_fn(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    return_last_state=False, *, initial_state=None, seq_lens=None, reverse=False,
    backend="auto",
):
    """Selective scan (Mamba's S6), drop-in for mamba-ssm's ``selective_scan_fn``.

    Recurrence, per batch row and channel (optional steps in brackets):
        dt_t = [softplus](delta_t [+ delta_bias]);  h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t
        y_t = <C_t, h_t> [+ D u_t];  out_t = y_t [* silu(z_t)]

    Args:
        u, delta: (b, d, l), float16/bfloat16/float32 (also float64 on cpu and reference).
        A: (d, n), real. B, C: (b, n, l) or (b, g, n, l) with d % g == 0.
        D, delta_bias: (d,). z: (b, d, l).
        initial_state: (b, d, n), the state before the first processed step.
        seq_lens: (b,) long, each row's real length; padded positions keep the state and
            output 0, and last_state is taken at each row's true end.
        reverse: run from each row's true end back to position 0.
        backend: "triton" (CUDA, or CPU under TRITON_INTERPRET=1), "cpu" (compiled loop,
            CPU tensors), "reference" (the readable loop), or "auto" (triton on CUDA for
            16/32-bit inputs, reference for float64 on CUDA, cpu on CPU; the reference
            with a warning where the cpu extension can't be built).

    Returns:
        out (b, d, l) in u's dtype; with ``return_last_state`` also last_state (b, d, n),
        float32 (float64 when an input is float64). Gradients flow to every tensor input,
        through last_state too.
    """
    dims = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                             return_last_state, initial_state, seq_lens, reverse)
    chosen = _resolve_backend(backend, u, delta, A, B, C, D, z, delta_bias, initial_state)
    if chosen == "reference":
        out, last_state = reference_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                         initial_state, seq_lens, reverse)
    elif chosen == "cpu":
        from .cpu import cpu_selective_scan
        out, last_state = cpu_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                             initial_state, seq_lens, reverse)
    else:
        from .triton_scan import triton_selective_scan
        out, last_state = triton_selective_scan(u, delta, A, B, C, D, z, delta_bias,
                                                delta_softplus, initial_state, seq_lens,
                                                reverse, dims)
    return (out, last_state) if return_last_state else out


def _resolve_backend(backend, *tensors) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    u = tensors[0]
    has_float64 = any(x is not None and x.dtype == torch.float64 for x in tensors)
    if backend == "auto":
        if u.is_cuda:
            return "triton" if (not has_float64 and triton_available()) else "reference"
        from .cpu import EXTENSION
        return EXTENSION.auto_backend(u.device)
    if backend == "cpu" and u.device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors; u is on {u.device}")
    if backend == "triton":
        if not triton_available():
            raise ModuleNotFoundError("backend='triton' needs the triton package (Linux only)")
        if not (u.is_cuda or INTERPRETED):
            raise ValueError("backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set "
                             f"before kernels is imported; u is on {u.device}")
        if has_float64:
            raise TypeError("backend='triton' takes float16, bfloat16 or float32 inputs; "
                            "use backend='reference' for float64")
    return backend

