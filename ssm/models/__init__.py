"""The dual-encoder CLIP model and its heads."""
from .clip import CLIP, CLIPOutput
from .heads import ITMHead

__all__ = ["CLIP", "CLIPOutput", "ITMHead"]
