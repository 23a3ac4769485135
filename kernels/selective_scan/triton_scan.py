"""autograd.Function tying the Triton forward and backward kernels together."""
from __future__ import annotations

import torch

from .triton_bwd import selective_scan_backward
from .triton_common import MAX_STATE, launch_config
from .triton_fwd import selective_scan_forward
from .triton_tuning import use_autotune
from .validation import ScanDims


class SelectiveScanTriton(torch.autograd.Function):
    """Saves the inputs plus each chunk's float32 end state, (b, d, n_chunks, n)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens,
                delta_softplus, reverse, config, backward_config):
        ctx.set_materialize_grads(False)
        needs_grad = any(ctx.needs_input_grad[:9])
        out, last_state, chunk_states, ran = selective_scan_forward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, seq_lens,
            reverse, config, save_chunk_states=needs_grad)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                  seq_lens, chunk_states)
        # The backward runs the forward's chunk length; it autotunes the rest when the
        # forward did.
        ctx.delta_softplus, ctx.reverse = delta_softplus, reverse
        ctx.autotune = config is None
        ctx.config = ran if ctx.autotune else backward_config
        return out, last_state

    @staticmethod
    def backward(ctx, g_out, g_last):
        u, delta, A, B, C, D, z, delta_bias, initial_state, seq_lens, chunk_states = \
            ctx.saved_tensors
        if g_out is None:
            g_out = torch.zeros_like(u)
        grads = selective_scan_backward(u, delta, A, B, C, D, z, delta_bias,
                                        ctx.delta_softplus, initial_state, seq_lens,
                                        ctx.reverse, chunk_states, g_out, g_last, ctx.config,
                                        autotune=ctx.autotune)
        g_h0 = grads[-1].to(initial_state.dtype) if initial_state is not None else None
        return (*grads[:-1], g_h0, None, None, None, None, None)


def triton_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                          initial_state, seq_lens, reverse, dims: ScanDims, config=None,
                          backward_config=None):
    """Run the Triton scan on validated inputs.

    ``config`` (a LaunchConfig) fixes the block sizes of both kernels, or of the forward
    when ``backward_config`` is given too (whose block_l must be the forward's). Without
    one the compiled kernels autotune on CUDA, and the interpreter (or
    KERNELS_TRITON_AUTOTUNE=0) takes ``launch_config``'s, the backward's with the forward's
    chunk length.
    """
    if dims.n > MAX_STATE:
        raise ValueError(f"A has state size n = {dims.n}; backend='triton' supports n <= {MAX_STATE}")
    if backward_config is None:
        backward_config = config
    elif config is None or backward_config.block_l != config.block_l:
        raise ValueError("backward_config needs a forward config with the same block_l")
    if config is None and not (use_autotune() and u.is_cuda):
        config = launch_config(dims.d, dims.n, dims.l, dims.channels_per_group)
        backward_config = launch_config(dims.d, dims.n, dims.l, dims.channels_per_group,
                                        backward=True, block_l=config.block_l)
    return SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                     seq_lens, delta_softplus, reverse, config, backward_config)
