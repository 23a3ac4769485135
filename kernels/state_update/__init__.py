"""One recurrent step of the selective scan, for token-by-token decoding.

reference.py     the step as written (``selective_state_update_ref``): the oracle
interface.py     ``selective_state_update``: checks, then a backend
triton_step.py   the Triton kernel (inference only)
"""
from .interface import BACKENDS, selective_state_update
from .reference import selective_state_update_ref

__all__ = ["BACKENDS", "selective_state_update", "selective_state_update_ref"]
