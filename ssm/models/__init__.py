"""The dual-encoder CLIP model, its heads, and its export (safetensors + config.json)."""
from .clip import CLIP, CLIPOutput
from .export import from_config, load_model, save_model
from .heads import ITMHead

__all__ = ["CLIP", "CLIPOutput", "ITMHead", "from_config", "load_model", "save_model"]
