"""Pretrained Mamba language models as text towers, read from a local directory.

Two layouts are understood (nothing is ever downloaded):

- Hugging Face ``MambaForCausalLM`` / ``MambaModel``: ``config.json`` with ``model_type``
  "mamba", weights in ``model.safetensors`` or ``pytorch_model.bin`` (or shards listed by
  their ``.index.json``). Names ``backbone.embeddings``, ``backbone.layers.{i}.norm``,
  ``backbone.layers.{i}.mixer.*``, ``backbone.norm_f`` and ``lm_head`` (left out when tied).
- mamba-ssm ``MambaLMHeadModel.save_pretrained``: ``config.json`` with ``d_model``,
  ``n_layer``, ``ssm_cfg``, ... and ``pytorch_model.bin``; the same names but
  ``backbone.embedding`` (singular), and the vocabulary padded to a multiple of 8.

Both load into ``MambaTextEncoder`` (embed, norms.{i}, mixers.{i}.*, norm_f, and lm_head
when untied), which runs the same computation. Every weight is mapped by name; one left
over, missing, or of another shape is an error that names it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .text import POOLING, MambaTextEncoder

CONFIG = "config.json"
# Looked for in this order; an index lists shards of the file it is named after.
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors",
                "pytorch_model.bin.index.json", "pytorch_model.bin")
# mamba-ssm ssm_cfg keys that only shape the random initialisation, not the architecture.
MAMBA_SSM_INIT_ONLY = {"dt_min", "dt_max", "dt_init", "dt_scale", "dt_init_floor",
                       "use_fast_path", "layer"}
MAMBA_SSM_SHAPE_KEYS = {"d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias"}


@dataclass
class PretrainedLayout:
    """What a directory holds: its format, the encoder's architecture and the weights."""

    kind: str                 # "transformers" or "mamba_ssm"
    architecture: dict        # MambaTextEncoder keyword arguments (vocab from the embedding)
    state: dict               # MambaTextEncoder's names -> tensors as stored
    sources: dict             # MambaTextEncoder's names -> the checkpoint's names


def load_pretrained_mamba(path: str, pooling: str = "last", freeze: bool = False,
                          train_last_layers: Optional[int] = None, width: Optional[int] = None,
                          depth: Optional[int] = None, backend: str = "auto") -> MambaTextEncoder:
    """A ``MambaTextEncoder`` holding the pretrained LM in ``path`` (see the module doc).

    ``width`` and ``depth``: None takes them from the checkpoint; an int must match it.
    ``freeze`` stops every tower weight from training; ``train_last_layers=k`` trains only
    the last k layers, the final norm and an untied LM head (the usual fine-tuning
    recipes). ``pooling``: "last" real token or "mean" of the real tokens.
    The returned encoder's ``architecture_config`` rebuilds it without the directory.
    """
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {sorted(POOLING)}, got {pooling!r}")
    layout = read_pretrained(path)
    arch = layout.architecture
    for name, wanted in (("width", width), ("depth", depth)):
        if wanted is not None and wanted != arch[name]:
            raise ValueError(f"{name}={wanted} was asked for, but {path} holds a Mamba of "
                             f"{name} {arch[name]}; leave {name} unset (null) to take it from "
                             "the checkpoint")
    # Built on the meta device and filled from the checkpoint: no time spent drawing random
    # weights that are overwritten at once. Parameters' marks (_no_weight_decay on A_log and
    # D) live in their __dict__ and are carried over to the materialised tensors.
    with torch.device("meta"):
        encoder = MambaTextEncoder(**arch, pooling=pooling, backend=backend)
    marks = {name: dict(p.__dict__) for name, p in encoder.named_parameters()}
    encoder.to_empty(device="cpu")
    for name, p in encoder.named_parameters():
        p.__dict__.update(marks[name])
    _check_names_and_shapes(encoder, layout, path)
    encoder.load_state_dict(layout.state)
    set_trainable(encoder, freeze, train_last_layers)
    encoder.architecture_config = {"_target_": "ssm.encoders.MambaTextEncoder", **arch,
                                   "pooling": pooling, "backend": backend}
    return encoder


def read_pretrained(path) -> PretrainedLayout:
    """The layout of a pretrained directory; errors name what is missing or foreign."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"pretrained model directory {folder} does not exist")
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG}: expected a Hugging Face "
                                "MambaForCausalLM or a mamba-ssm MambaLMHeadModel directory")
    config = json.loads(config_path.read_text())
    if "model_type" in config:
        kind, arch, tied = "transformers", *_transformers_architecture(config, folder)
    elif "d_model" in config and "n_layer" in config:
        kind, arch, tied = "mamba_ssm", *_mamba_ssm_architecture(config, folder)
    else:
        raise ValueError(f"{config_path} is neither a Hugging Face config (model_type) nor a "
                         f"mamba-ssm MambaConfig (d_model, n_layer); its keys: {sorted(config)}")
    state, sources = rename_weights(_read_weights(folder), folder)
    vocab, width = state["embed.weight"].shape
    if width != arch["width"]:
        raise ValueError(f"{folder}: the embedding is {width} wide but the config says "
                         f"{arch['width']}")
    head = state.get("lm_head.weight")
    if tied and head is not None:
        if not torch.equal(head, state["embed.weight"]):
            raise ValueError(f"{folder}: the config ties the LM head to the embedding, but "
                             "lm_head.weight differs from it")
        del state["lm_head.weight"]
    return PretrainedLayout(kind, {**arch, "vocab_size": vocab, "untied_lm_head": not tied},
                            state, sources)


def _transformers_architecture(config: dict, folder: Path) -> tuple[dict, bool]:
    if config["model_type"] != "mamba":
        raise ValueError(f"{folder} holds a {config['model_type']!r} model "
                         f"({', '.join(config.get('architectures') or [])}); only Mamba "
                         "(model_type 'mamba', MambaForCausalLM) loads as this text tower")
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{folder}: hidden_act {config['hidden_act']!r} is not supported "
                         "(Mamba uses silu)")
    width, expand = config["hidden_size"], config.get("expand", 2)
    inner = config.get("intermediate_size")
    if inner is not None and inner != expand * width:
        raise ValueError(f"{folder}: intermediate_size {inner} != expand * hidden_size "
                         f"= {expand * width}")
    rank = config.get("time_step_rank", "auto")
    arch = dict(width=width, depth=config["num_hidden_layers"],
                d_state=config.get("state_size", 16), d_conv=config.get("conv_kernel", 4),
                expand=expand, dt_rank=math.ceil(width / 16) if rank == "auto" else int(rank),
                conv_bias=config.get("use_conv_bias", True), bias=config.get("use_bias", False),
                norm_eps=config.get("layer_norm_epsilon", 1e-5))
    return arch, config.get("tie_word_embeddings", True)


def _mamba_ssm_architecture(config: dict, folder: Path) -> tuple[dict, bool]:
    ssm_cfg = dict(config.get("ssm_cfg") or {})
    foreign = {"d_intermediate": config.get("d_intermediate", 0) != 0,
               "attn_layer_idx": bool(config.get("attn_layer_idx")),
               "ssm_cfg.layer": ssm_cfg.get("layer", "Mamba1") != "Mamba1",
               "rms_norm": not config.get("rms_norm", True)}
    if any(foreign.values()):
        bad = [key for key, is_bad in foreign.items() if is_bad]
        raise ValueError(f"{folder} holds a mamba-ssm model this text tower cannot run "
                         f"(set: {bad}): only Mamba-1 blocks with RMSNorm, no MLP and no "
                         "attention layers load")
    unknown = set(ssm_cfg) - MAMBA_SSM_SHAPE_KEYS - MAMBA_SSM_INIT_ONLY
    if unknown:
        raise ValueError(f"{folder}: unknown ssm_cfg keys {sorted(unknown)}")
    width = config["d_model"]
    rank = ssm_cfg.get("dt_rank", "auto")
    arch = dict(width=width, depth=config["n_layer"], d_state=ssm_cfg.get("d_state", 16),
                d_conv=ssm_cfg.get("d_conv", 4), expand=ssm_cfg.get("expand", 2),
                dt_rank=math.ceil(width / 16) if rank == "auto" else int(rank),
                conv_bias=ssm_cfg.get("conv_bias", True), bias=ssm_cfg.get("bias", False),
                norm_eps=1e-5)  # mamba-ssm's MixerModel default; its config does not store it
    return arch, config.get("tie_embeddings", True)


def _read_weights(folder: Path) -> dict:
    found = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{folder} has a config but no weights: expected one of "
                                f"{', '.join(WEIGHT_FILES)}")
    if found.name.endswith(".index.json"):
        shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
        files = [folder / shard for shard in shards]
    else:
        files = [found]
    weights = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{found} lists the shard {file.name}, which is missing")
        weights.update(_read_file(file))
    return weights


def _read_file(file: Path) -> dict:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(file, device="cpu")
    # mmap: the tensors are read from disk as they are copied into the encoder.
    return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


_LAYER_NAMES = [(re.compile(r"layers\.(\d+)\.norm\.weight"), r"norms.\1.weight"),
                (re.compile(r"layers\.(\d+)\.mixer\.(.+)"), r"mixers.\1.\2"),
                (re.compile(r"embeddings?\.weight"), "embed.weight"),
                (re.compile(r"norm_f\.weight"), "norm_f.weight"),
                (re.compile(r"lm_head\.weight"), "lm_head.weight")]


def encoder_name(name: str) -> Optional[str]:
    """MambaTextEncoder's name for a checkpoint weight of either layout, or None."""
    name = name.removeprefix("backbone.")
    for pattern, replacement in _LAYER_NAMES:
        if pattern.fullmatch(name):
            return pattern.sub(replacement, name)
    return None


def rename_weights(weights: dict, folder) -> tuple[dict, dict]:
    """The checkpoint's weights under MambaTextEncoder's names, and where each came from."""
    state, sources, unknown = {}, {}, []
    for name, tensor in weights.items():
        ours = encoder_name(name)
        if ours is None:
            unknown.append(name)
        elif ours in state:
            raise ValueError(f"{folder}: two checkpoint weights map to {ours!r} ({name!r} "
                             "and another): is this one model?")
        else:
            state[ours], sources[ours] = tensor, name
    if unknown:
        raise ValueError(f"{folder}: weights that belong to no part of a Mamba LM: "
                         f"{sorted(unknown)[:10]}{' ...' if len(unknown) > 10 else ''}")
    if "embed.weight" not in state:
        raise ValueError(f"{folder}: no embedding weight (backbone.embeddings.weight or "
                         "backbone.embedding.weight)")
    return state, sources


def _check_names_and_shapes(encoder: MambaTextEncoder, layout: PretrainedLayout, path) -> None:
    expected = {name: tuple(t.shape) for name, t in encoder.state_dict().items()}
    state = layout.state
    missing = sorted(set(expected) - set(state))
    extra = sorted(f"{layout.sources[name]} (as {name})" for name in set(state) - set(expected))
    wrong = sorted(f"{layout.sources[name]}: {tuple(state[name].shape)}, expected "
                   f"{expected[name]}" for name in set(expected) & set(state)
                   if tuple(state[name].shape) != expected[name])
    if missing or extra or wrong:
        raise ValueError(f"{path} does not fit a Mamba LM of its own config: missing "
                         f"{missing} (MambaTextEncoder's names), left over {extra}, wrong "
                         f"shape {wrong}")


def set_trainable(encoder: MambaTextEncoder, freeze: bool = False,
                  train_last_layers: Optional[int] = None) -> None:
    """Freeze the tower, or train only its last k layers (with the final norm and an
    untied LM head); neither: everything trains."""
    depth = len(encoder.mixers)
    if freeze and train_last_layers is not None:
        raise ValueError("give freeze=true or train_last_layers=k, not both")
    if train_last_layers is not None and (isinstance(train_last_layers, bool)
                                          or not isinstance(train_last_layers, int)
                                          or not 1 <= train_last_layers <= depth):
        raise ValueError(f"train_last_layers must be an int in [1, depth={depth}] (or null; "
                         f"freeze=true trains none), got {train_last_layers!r}")
    if not freeze and train_last_layers is None:
        encoder.requires_grad_(True)
        return
    encoder.requires_grad_(False)
    if train_last_layers:
        for k in range(depth - train_last_layers, depth):
            encoder.mixers[k].requires_grad_(True)
            encoder.norms[k].requires_grad_(True)
        encoder.norm_f.requires_grad_(True)
        if encoder.lm_head is not None:
            encoder.lm_head.requires_grad_(True)
