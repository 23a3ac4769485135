"""autograd.Function tying the Triton forward and backward kernels together."""
from __future__ import annotations

import torch

from .triton_bwd import selective_scan_backward
from .triton_common import MAX_STATE, launch_config
from .triton_fwd import selective_scan_forward
from .validation import ScanDims


class SelectiveScanTriton(torch.autograd.Function):
    """Saves the inputs plus one float32 state per chunk, (b, d, n_chunks, n)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens,
                delta_softplus, reverse, config):
        ctx.set_materialize_grads(False)
        needs_grad = any(ctx.needs_input_grad[:9])
        out, last_state, chunk_states = selective_scan_forward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_lens,
            reverse, config, save_chunk_states=needs_grad)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                  seq_lens, chunk_states)
        ctx.delta_softplus, ctx.reverse, ctx.config = delta_softplus, reverse, config
        return out, last_state

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens, chunk_states = \
            ctx.saved_tensors
        if g_out is None:
            g_out = torch.zeros_like(u)
        grads = selective_scan_backward(u, delta, A, B, C, D, z, delta_bias,
                                        ctx.delta_softplus, seq_lens, ctx.reverse,
                                        chunk_states, g_out, g_last, ctx.config)
        g_h0 = grads[-1].to(initial_state.dtype) if initial_state is not None else None
        return (*grads[:-1], g_h0, None, None, None, None)


def triton_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                          initial_state, seq_lens, reverse, dims: ScanDims, config=None):
    """Run the Triton scan on validated inputs; ``config`` overrides the block sizes."""
    if dims.n > MAX_STATE:
        raise ValueError(f"A has state size n = {dims.n}; backend='triton' supports n <= {MAX_STATE}")
    if config is None:
        config = launch_config(dims.d, dims.n, dims.l, dims.channels_per_group)
    return SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                     seq_lens, delta_softplus, reverse, config)
