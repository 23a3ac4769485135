"""Fast CPU selective scan: a compiled loop over (batch row, block of channels) tasks.

The C++ (cpu_scan.cpp) runs the whole op, the delta bias, softplus, D skip and z gate
included, forward and backward, and reads and writes every (b, d, l) tensor through its
strides: channel-last views of (b, l, d) memory, as the Mamba block passes them, cost no
copy, and the outputs and gradients come back in the layout of the matching input. It is
compiled the first time a process needs it (``kernels.common.cpu_build``); where no
compiler works, ``EXTENSION.available()`` is False, the reason is kept, and backend="auto" falls
back to the reference with a warning.

Computes in float32 (float64 when any input is float64). Saved for backward: the inputs
as given and one state per CHUNK steps, (tasks, ceil(l / CHUNK), n, lanes); never a
(b, d, l, n) tensor. Gradients of B and C are summed from per-thread partials, so their
last bits may differ between runs with more than one thread.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kernels.common.cpu_build import CppExtension
from kernels.common.launch import empty_output, empty_output_like

CHUNK = 32  # steps between saved states; a task's recomputed chunk then stays in L1/L2
EXTENSION = CppExtension("selective_scan_cpu", Path(__file__).with_name("cpu_scan.cpp"),
                         "CPU selective scan")


def _compute(x, dtype):
    """Detached, in the compute dtype, strides kept where no conversion is needed."""
    return None if x is None else x.detach().to(dtype)


def _contiguous(x, dtype):
    return None if x is None else x.detach().to(dtype).contiguous()


def _grouped(x):
    """(b, n, l) -> (b, 1, n, l) view; (b, g, n, l) as is."""
    return x if x.dim() == 4 else x.unsqueeze(1)


class SelectiveScanCPU(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens,
                delta_softplus, reverse):
        ctx.set_materialize_grads(False)
        tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
        compute = (torch.float64 if any(x is not None and x.dtype == torch.float64 for x in tensors)
                   else torch.float32)
        ext = EXTENSION.load()
        inputs = (_compute(u, compute), _compute(delta, compute),
                  _contiguous(A, compute).t().contiguous(),                     # A^T (n, d)
                  _grouped(_compute(B, compute)), _grouped(_compute(C, compute)),
                  _contiguous(D, compute), _compute(z, compute), _contiguous(delta_bias, compute))
        lengths = seq_lens.to(torch.int64).contiguous() if seq_lens is not None else None
        b, d, l = u.shape
        n, g = A.shape[1], inputs[3].shape[1]
        lanes = 32 // compute.itemsize  # channels per 32-byte vector: one task's width
        tasks = b * g * -(-(d // g) // lanes)
        needs_grad = any(ctx.needs_input_grad[:9])
        out = empty_output_like(inputs[0])
        last = empty_output((b, d, n), compute, u.device)
        states = (empty_output((tasks, -(-l // CHUNK), n, lanes), compute, u.device)
                  if needs_grad else None)
        ext.forward(*inputs, _contiguous(initial_state, compute), lengths, delta_softplus,
                    reverse, CHUNK, out, last, states)
        if needs_grad:
            ctx.save_for_backward(*inputs, lengths, states)
            ctx.meta = (delta_softplus, reverse, B.shape, [x.dtype if x is not None else None
                                                           for x in tensors])
        return out.to(u.dtype), last

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, A_t, B, C, D, z, bias, lengths, states = ctx.saved_tensors
        softplus, reverse, b_shape, dtypes = ctx.meta
        compute = u.dtype
        (b, d, l), (n, g) = u.shape, (A_t.shape[0], B.shape[1])
        g_out = g_out.to(compute) if g_out is not None else torch.zeros_like(u)
        g_u, g_delta = empty_output_like(u), empty_output_like(delta)
        g_z = empty_output_like(z) if z is not None else None
        rows = lambda *shape: empty_output(shape, compute, u.device)  # noqa: E731
        g_A_rows, g_D_rows, g_bias_rows, g_h0 = rows(b, n, d), rows(b, d), rows(b, d), rows(b, d, n)
        g_BC = EXTENSION.load().backward(                                  # (2, b, g, l, n)
            u, delta, A_t, B, C, D, z, bias, lengths, softplus, reverse, CHUNK, states, g_out,
            _contiguous(g_last, compute), g_u, g_delta, g_z, g_A_rows, g_D_rows, g_bias_rows,
            g_h0)
        # (b, g, l, n) memory seen as (b, g, n, l), then B's own shape: views, no copy.
        g_B, g_C = (x.transpose(-1, -2).reshape(b_shape) for x in g_BC)
        grads = (g_u, g_delta, g_A_rows.sum(0).t(), g_B, g_C,
                 g_D_rows.sum(0) if D is not None else None, g_z,
                 g_bias_rows.sum(0) if bias is not None else None, g_h0)
        grads = tuple(g.to(dtype) if (g is not None and dtype is not None) else None
                      for g, dtype in zip(grads, dtypes))
        return (*grads, None, None, None)


def cpu_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                       seq_lens, reverse):
    """Run the CPU scan on validated inputs. Returns out (u's dtype, u's layout) and
    last_state (float32, float64 for float64 inputs)."""
    return SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens,
                                  delta_softplus, reverse)
