"""Building blocks: the Mamba mixer, a Transformer block, norms."""
from .mamba import Mamba
from .norms import RMSNorm
from .transformer import TransformerBlock

__all__ = ["Mamba", "RMSNorm", "TransformerBlock"]
