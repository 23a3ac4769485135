"""Objects from config nodes, with the errors a user can act on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ssm.data import ByteTokenizer
from ssm.objective import model_options
from ssm.train.checkpoint import load_checkpoint

# An embedding table may be padded past its tokenizer's ids (mamba-ssm pads to a multiple
# of 8, others to 64 or 128); a table larger than that was made for another tokenizer.
VOCAB_PADDING = 128


def build(node, **kwargs):
    """``hydra.utils.instantiate``, but a bad setting surfaces as the ValueError, TypeError
    or FileNotFoundError the target raised, not wrapped in InstantiationException."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, (ValueError, TypeError, FileNotFoundError)):
            raise exc.__cause__ from None
        raise


def build_model(cfg: DictConfig, objective):
    """CLIP from cfg.model, with the heads and logit initialisation the objective needs."""
    model = build(cfg.model, **model_options(objective))
    objective.check_model(model)
    return model


def build_tokenizer(cfg: DictConfig):
    """The tokenizer of ``cfg.tokenizer`` (runs made before it was configurable: bytes)."""
    node = cfg.get("tokenizer")
    tokenizer = ByteTokenizer() if node is None else build(node)
    caption_tokens = cfg.get("data", {}).get("caption_tokens")
    if caption_tokens is not None and not isinstance(tokenizer, ByteTokenizer):
        raise ValueError(f"data.caption_tokens={caption_tokens} counts byte tokens; it needs "
                         f"tokenizer=bytes, not {type(tokenizer).__name__}")
    return tokenizer


def check_vocabulary(tokenizer, text_encoder) -> None:
    """The text tower's embedding must hold every id the tokenizer makes, and be made for
    that tokenizer: no more than padding (VOCAB_PADDING) larger."""
    ids, table = tokenizer.vocab_size, text_encoder.vocab_size
    padded = -(-ids // VOCAB_PADDING) * VOCAB_PADDING
    if not ids <= table <= padded:
        raise ValueError(
            f"the text encoder's vocabulary ({table} embeddings) does not match the tokenizer "
            f"{type(tokenizer).__name__} ({ids} ids): set model.text_encoder.vocab_size={ids} "
            "for a tower trained from scratch, or tokenizer=hf with the pretrained tower's "
            "own tokenizer")


@dataclass
class RunModel:
    """A training run's model with its weights from one checkpoint, and how it reads text."""

    model: torch.nn.Module
    cfg: DictConfig          # the run's .hydra/config.yaml
    run_dir: Path
    tokenizer: object
    objective: object
    step: int


def model_from_checkpoint(checkpoint) -> RunModel:
    """Rebuild a run's model from its .hydra/config.yaml and load ``checkpoint`` (a
    checkpoints/*.pt file of a run made by experiments/train.py) into it, on the CPU."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.resolve().parent.parent
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not inside a training run: no {config_path}")
    cfg = OmegaConf.load(config_path)
    tokenizer = build_tokenizer(cfg)
    objective = build(cfg.loss)
    model = build_model(cfg, objective)
    check_vocabulary(tokenizer, model.text_encoder)
    state = load_checkpoint(checkpoint)
    model.load_state_dict(state["model"])
    return RunModel(model, cfg, run_dir, tokenizer, objective, int(state["step"]))


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when there is one, else the CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
