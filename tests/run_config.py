"""The real training config, composed and shrunk to run in seconds (a test helper).

Tests import these names (``from run_config import shrunk``); the ``compose_train``
fixture in tests/conftest.py wraps :func:`compose_train`.
"""
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

SHRINK = ["trainer.max_steps=4", "trainer.batch_size=8", "trainer.log_every=1",
          "trainer.checkpoint_every=2", "trainer.progress=false", "data.image_size=32",
          "model.embed_dim=16", "model.text_encoder.width=16", "model.text_encoder.depth=1",
          "model.image_encoder.width=16", "model.decoder.width=16", "logger=jsonl",
          "eval.batch_size=16"]
SCENES_SHRINK = ["data.train_size=64", "data.val_size=16", "data.zero_shot_size=12"]
IMAGE_SHRINK = {"convnet": ["model.image_encoder.channels=[8,16]"],
                "vit": ["model.image_encoder.depth=1", "model.image_encoder.heads=2"]}


def shrunk(*overrides, image="convnet"):
    """The shrink overrides, then ``overrides``; a data=... override replaces the scenes."""
    data = [] if any(o.startswith("data=") for o in overrides) else SCENES_SHRINK
    return SHRINK + data + IMAGE_SHRINK[image] + [f"model/image_encoder={image}", *overrides]


def compose_train(*overrides, image="convnet"):
    """conf/train.yaml with the shrink overrides and then ``overrides``."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=shrunk(*overrides, image=image))
