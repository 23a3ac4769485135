"""Data loading and tokenization."""
from ssm.data.tokenizer import ByteTokenizer

__all__ = ["ByteTokenizer"]
