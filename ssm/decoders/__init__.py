"""Caption decoders: towers that generate text from an image tower's output, and the
generation loop (greedy, sampling, beam search) that drives them one step at a time."""
from .base import CaptionDecoder, ImageTokens, sinusoid_positions
from .generation import (STRATEGIES, BeamSearch, Generation, Greedy, Guided, Sampling,
                         as_strategy, check_guidance, generate)
from .history_noise import check_word_noise, substitute_words
from .mamba import MambaCaptionDecoder
from .transformer import TransformerCaptionDecoder

__all__ = ["CaptionDecoder", "ImageTokens", "sinusoid_positions", "STRATEGIES", "BeamSearch",
           "Generation", "Greedy", "Guided", "Sampling", "check_guidance", "as_strategy",
           "generate", "check_word_noise", "substitute_words", "MambaCaptionDecoder",
           "TransformerCaptionDecoder"]
