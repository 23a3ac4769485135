"""Data loading and tokenization."""
from ssm.data.tokenizer import ByteTokenizer, Tokenizer
from ssm.data.hf_tokenizer import HFTokenizer
from ssm.data.transforms import BadImage, load_image, resize_center_crop
from ssm.data.files import (BadSampleTracker, CsvImageText, TooManyBadSamples, WebDatasetImageText,
                            collate_image_text)

__all__ = ["ByteTokenizer", "HFTokenizer", "Tokenizer",
           "BadImage", "load_image", "resize_center_crop",
           "BadSampleTracker", "CsvImageText", "TooManyBadSamples", "WebDatasetImageText",
           "collate_image_text"]
from ssm.data.scenes import (  # noqa: E402
    COLOURS, SHAPES, SIZES, ZERO_SHOT_TEMPLATES, SceneObject, SyntheticScenes, ZeroShotScenes,
    caption, held_out_combinations, render, word_order_negatives, zero_shot_set)

__all__ += ["COLOURS", "SHAPES", "SIZES", "ZERO_SHOT_TEMPLATES", "SceneObject", "SyntheticScenes",
            "ZeroShotScenes", "caption", "held_out_combinations", "render",
            "word_order_negatives", "zero_shot_set"]
