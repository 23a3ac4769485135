"""A trained model alone, as ``model.safetensors`` plus ``config.json``, and back without
Hydra (for notebooks and other code).

``config.json`` holds ``{"format": FORMAT, "model": NODE, ...}``: NODE is the model's config
node resolved to plain JSON (``_target_`` names and keyword arguments, nested), and the rest
is whatever the exporter adds (the tokenizer, image size, caption budget). ``from_config``
builds such a node; it imports only targets inside this package (``ssm.``), since a config
file must not be able to run arbitrary code.

    model, info = load_model("exports/my_run")      # eval mode, on the CPU
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "ssm-research/model-v1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
ALLOWED_TARGETS = ("ssm.",)


def save_model(model: nn.Module, directory, node: dict, **info) -> Path:
    """Write ``model``'s weights and ``node`` (the config that rebuilds it) into
    ``directory``; ``info`` (JSON values) goes into config.json beside them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory (a tied head) and wants contiguous ones;
    # the state dict's own names are kept, so load_state_dict takes it back as is.
    state = {name: t.detach().to("cpu").contiguous().clone() for name, t in
             model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": FORMAT})
    config = {"format": FORMAT, "model": node, **info}
    (directory / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_model(directory, device="cpu") -> tuple[nn.Module, dict]:
    """The exported model in eval mode, and config.json's contents."""
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a model export: no {name} (make one "
                                    "with experiments/export.py)")
    info = json.loads((directory / CONFIG).read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{directory / CONFIG} has format {info.get('format')!r}, expected "
                         f"{FORMAT!r}")
    model = from_config(info["model"])
    model.load_state_dict(load_file(str(directory / WEIGHTS), device="cpu"))
    return model.to(device).eval(), info


def from_config(node):
    """Build a config node: dicts with ``_target_`` become ``target(**arguments)`` (their
    arguments built first), other values stay as they are."""
    if isinstance(node, list):
        return [from_config(x) for x in node]
    if not isinstance(node, dict):
        return node
    arguments = {key: from_config(value) for key, value in node.items() if key != "_target_"}
    if "_target_" not in node:
        return arguments
    return _target(node["_target_"])(**arguments)


def _target(name: str):
    if not isinstance(name, str) or not name.startswith(ALLOWED_TARGETS):
        raise ValueError(f"_target_ {name!r} is outside {ALLOWED_TARGETS}: an exported config "
                         "builds this package's classes only")
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"_target_ {name!r} does not name a class or function") from exc
