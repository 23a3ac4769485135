"""Text and image encoders; each maps a batch to one feature vector per item."""
from .image import ConvNetImageEncoder, ViTImageEncoder
from .text import (BiMambaTextEncoder, MambaTextEncoder, TextEncoder, TransformerTextEncoder,
                   parameter_count, parameter_report)

__all__ = ["BiMambaTextEncoder", "ConvNetImageEncoder", "MambaTextEncoder", "TextEncoder",
           "TransformerTextEncoder", "ViTImageEncoder", "parameter_count", "parameter_report"]
