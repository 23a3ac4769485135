"""Public kernel ops. Imports torch, triton and einops only; never ssm/.

One folder per op (reference, fast paths and the public function together); helpers
shared by every op live in ``kernels.common``; ``kernels.bench`` measures them.
"""
from .causal_conv1d import causal_conv1d_fn, causal_conv1d_update
from .selective_scan import selective_scan_fn, selective_scan_ref
from .state_update import selective_state_update

__all__ = ["causal_conv1d_fn", "causal_conv1d_update", "selective_scan_fn",
           "selective_scan_ref", "selective_state_update"]
