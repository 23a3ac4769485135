"""The task behind ``experiments/export.py``: a run's checkpoint as a self-contained model
export (``ssm.models.export``: model.safetensors + config.json, and the tokenizer's files),
and the loader that gives a model ready for inference from an export or a checkpoint.

The export needs neither the run directory nor Hydra nor a pretrained tower's directory: a
pretrained tower is written as the ``MambaTextEncoder`` it became.

    from ssm.tasks.export import load_for_inference
    ready = load_for_inference("exports/my_run")            # or a run's checkpoints/last.pt
    tokens, mask = ready.tokenizer.batch_encode(["a red circle"], ready.max_length)
    features = ready.model.encode_text(tokens, mask)         # (1, embed_dim), L2-normalised
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from ssm.models import from_config, load_model, save_model
from ssm.objective import model_options
from ssm.tasks.build import model_from_checkpoint, resolve_device

TOKENIZER_DIR = "tokenizer"


@dataclass
class ReadyModel:
    """A model in eval mode with what it needs to read inputs the way it was trained."""

    model: nn.Module
    tokenizer: object
    max_length: int          # caption budget in tokens (BOS and EOS included)
    image_size: int          # square side the image tower was trained on
    fingerprint: str         # changes whenever the weights file changes (for caches)


def export_checkpoint(checkpoint, output) -> Path:
    """Write the model of ``checkpoint`` (a run's checkpoints/*.pt) into ``output``."""
    run = model_from_checkpoint(checkpoint)
    output = Path(output)
    node = OmegaConf.to_container(run.cfg.model, resolve=True)
    node.update(model_options(run.objective))   # the heads and logit init the loss asked for
    rebuilt = getattr(run.model.text_encoder, "architecture_config", None)
    if rebuilt is not None:                     # a pretrained tower, without its directory
        node["text_encoder"] = rebuilt
    tokenizer = run.tokenizer.export(output / TOKENIZER_DIR)
    if "path" in tokenizer:
        tokenizer["path"] = TOKENIZER_DIR           # relative to the export
    return save_model(run.model, output, node, tokenizer=tokenizer,
                      image_size=int(run.cfg.data.image_size),
                      max_length=int(run.cfg.data.max_length),
                      source={"checkpoint": str(Path(checkpoint).resolve()), "step": run.step})


def load_export(directory, device: str = "cpu") -> ReadyModel:
    """An export made by ``export_checkpoint``, rebuilt without Hydra."""
    directory = Path(directory)
    model, info = load_model(directory, resolve_device(device))
    tokenizer_node = dict(info["tokenizer"])
    if "path" in tokenizer_node and not Path(tokenizer_node["path"]).is_absolute():
        tokenizer_node["path"] = str(directory / tokenizer_node["path"])
    return ReadyModel(model, from_config(tokenizer_node), int(info["max_length"]),
                      int(info["image_size"]), _fingerprint(directory / "model.safetensors"))


def load_for_inference(path, device: str = "auto") -> ReadyModel:
    """An export directory, or a run's checkpoint file, as a ``ReadyModel``."""
    path = Path(path)
    if path.is_dir():
        return load_export(path, device)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: give a run's "
                                "checkpoints/*.pt file or a model export directory")
    run = model_from_checkpoint(path)
    model = run.model.to(resolve_device(device)).eval()
    return ReadyModel(model, run.tokenizer, int(run.cfg.data.max_length),
                      int(run.cfg.data.image_size), _fingerprint(path))


def _fingerprint(weights: Path) -> str:
    """Path, size and modification time of the weights file, hashed: cheap, and different
    after any rewrite."""
    stat = weights.stat()
    key = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]
