"""Text and image encoders; each maps a batch to one feature vector per item."""
from .image import ConvNetImageEncoder, ViTImageEncoder
from .parameters import (MATCH_TOLERANCE, parameter_count, parameter_report, parameter_spread,
                         parameters_matched)
from .pretrained import load_pretrained_mamba, read_pretrained, set_trainable
from .text import BiMambaTextEncoder, MambaTextEncoder, TextEncoder, TransformerTextEncoder

__all__ = ["BiMambaTextEncoder", "ConvNetImageEncoder", "MambaTextEncoder", "TextEncoder",
           "TransformerTextEncoder", "ViTImageEncoder", "MATCH_TOLERANCE", "parameter_count",
           "parameter_report", "parameter_spread", "parameters_matched",
           "load_pretrained_mamba", "read_pretrained", "set_trainable"]
