"""Fast CPU selective scan: a compiled sequential loop per (batch row, channel).

The C++ source (cpu_scan.cpp) is compiled with torch.utils.cpp_extension the first time a
process needs it, then cached on disk (TORCH_EXTENSIONS_DIR, default
~/.cache/torch_extensions), keyed by this CPU's instruction set since it is built with
-march=native. A build takes about a minute and says so on stderr before it starts; where
no compiler works, ``available()`` is False, the reason is kept, and backend="auto" falls
back to the reference with a warning.

Computes in float32 (float64 when any input is float64). Saved for backward: u, dt and its
pre-softplus argument, z and the pre-gate output y (all (b, d, l)), B and C as
(b, g, l, n), and one state per CHUNK steps, (b, d, ceil(l / CHUNK), n); never a
(b, d, l, n) tensor.
"""
from __future__ import annotations

import hashlib
import platform
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

CHUNK = 64
LANE_MULTIPLE = 8  # n is zero-padded to whole 32-byte vectors (8 float32, 4 float64)
_SOURCE = Path(__file__).with_name("cpu_scan.cpp")
_extension = None
_build_error = None


def _cpu_tag() -> str:
    """A short id of this CPU's instruction set, so -march=native builds never mix."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def load_extension():
    """The compiled module, building it on first use; raises RuntimeError if it can't."""
    global _extension, _build_error
    if _extension is not None:
        return _extension
    if _build_error is not None:
        raise RuntimeError(_build_error)
    from torch.utils import cpp_extension

    name = f"selective_scan_cpu_{_cpu_tag()}"
    build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    if not (build_dir / f"{name}.so").exists():
        print(f"kernels: compiling the CPU selective scan into {build_dir} "
              "(once per machine, about a minute)...", file=sys.stderr, flush=True)
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):
        flags.append("-march=native" if platform.machine() in ("x86_64", "AMD64") else "-mcpu=native")
    try:
        _extension = cpp_extension.load(name=name, sources=[str(_SOURCE)], extra_cflags=flags,
                                        extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # no compiler, no ninja, headers missing...
        _build_error = f"the CPU selective-scan extension could not be built: {exc}"
        raise RuntimeError(_build_error) from exc
    return _extension


def available() -> bool:
    """True when the extension is (or can be) loaded; builds it if needed."""
    try:
        load_extension()
    except RuntimeError:
        return False
    return True


def warn_unavailable_once() -> None:
    if not getattr(warn_unavailable_once, "done", False):
        warn_unavailable_once.done = True
        warnings.warn(f"{_build_error}; backend='auto' uses the slow reference on CPU instead",
                      RuntimeWarning, stacklevel=3)


def _prepare(x, compute, pad_last_to=None):
    """Detached, contiguous, in the compute dtype; the last dim zero-padded if asked."""
    if x is None:
        return None
    x = x.detach().to(compute)
    if pad_last_to is not None and pad_last_to > x.shape[-1]:
        x = F.pad(x, (0, pad_last_to - x.shape[-1]))
    return x.contiguous()


def _grouped_ln(x, compute, n_pad):
    """(b, n, l) or (b, g, n, l) -> (b, g, l, n_pad): the state index innermost, zero-padded."""
    x = x if x.dim() == 4 else x.unsqueeze(1)
    return _prepare(rearrange(x, "b g n l -> b g l n"), compute, n_pad)


class SelectiveScanCPU(torch.autograd.Function):
    """bias, softplus and the z gate run as vectorised torch ops around the C++ core, which
    only runs the recurrence (a scalar softplus or sigmoid per step would dominate it)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens,
                delta_softplus, reverse):
        ctx.set_materialize_grads(False)
        tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
        compute = (torch.float64 if any(x is not None and x.dtype == torch.float64 for x in tensors)
                   else torch.float32)
        dt_arg = _prepare(delta, compute)                               # (b, d, l)
        if delta_bias is not None:
            dt_arg = dt_arg + delta_bias.detach().to(compute)[:, None]
        dt = F.softplus(dt_arg) if delta_softplus else dt_arg
        n = A.shape[1]
        n_pad = -(-n // LANE_MULTIPLE) * LANE_MULTIPLE
        core_inputs = (_prepare(u, compute), dt.contiguous(), _prepare(A, compute, n_pad),
                       _grouped_ln(B, compute, n_pad), _grouped_ln(C, compute, n_pad),
                       _prepare(D, compute))
        lengths = seq_lens.to(torch.int64).contiguous() if seq_lens is not None else None
        needs_grad = any(ctx.needs_input_grad[:9])
        y, last, states = load_extension().forward(
            *core_inputs, _prepare(initial_state, compute, n_pad), lengths, reverse, CHUNK,
            needs_grad)
        zc = _prepare(z, compute)
        out = y * F.silu(zc) if z is not None else y  # y is 0 on padding, so out is too
        if needs_grad:
            ctx.save_for_backward(*core_inputs, dt_arg, zc, y if z is not None else None,
                                  lengths, states)
            ctx.meta = (delta_softplus, reverse, compute, B.shape, n_pad,
                        [x.dtype if x is not None else None for x in tensors])
        return out.to(u.dtype), last[..., :n]

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, dt, A, Bt, Ct, D, dt_arg, z, y, lengths, states = ctx.saved_tensors
        softplus, reverse, compute, b_shape, n_pad, dtypes = ctx.meta
        n = b_shape[-2]
        g_y = g_out.to(compute) if g_out is not None else torch.zeros_like(u)
        g_z = None
        if z is not None:
            sig = torch.sigmoid(z)
            g_z = g_y * y * sig * (1 + z * (1 - sig))
            g_y = g_y * z * sig
        g_last = _prepare(g_last, compute, n_pad)
        g_u, g_dt, g_A, g_D, g_h0, g_BC = load_extension().backward(
            u, dt, A, Bt, Ct, D, lengths, reverse, CHUNK, states, g_y.contiguous(), g_last)
        g_delta = g_dt * torch.sigmoid(dt_arg) if softplus else g_dt
        # Per-thread partial sums of gB and gC, each (b, g, l, n_pad), back to B's layout.
        g_B, g_C = (rearrange(x[..., :n], "b g l n -> b g n l").reshape(b_shape)
                    for x in g_BC.sum(0))
        grads = (g_u, g_delta, g_A.sum(0)[:, :n], g_B, g_C,
                 g_D.sum(0) if D is not None else None, g_z, g_delta.sum((0, 2)),
                 g_h0[..., :n])
        grads = tuple(g.to(dtype) if (g is not None and dtype is not None) else None
                      for g, dtype in zip(grads, dtypes))
        return (*grads, None, None, None)


def cpu_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                       seq_lens, reverse):
    """Run the CPU scan on validated inputs. Returns out (u's dtype) and last_state
    (float32, float64 for float64 inputs)."""
    return SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens,
                                  delta_softplus, reverse)
