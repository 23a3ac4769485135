"""The task behind ``experiments/bench_pretrained.py``: how long a pretrained Mamba LM of a
given size takes to load as a text tower, and how closely the loaded tower reproduces
transformers' own Mamba.

A random ``MambaForCausalLM`` of the configured size (by default mamba-130m's: d_model 768,
24 layers, vocabulary 50280) is built with transformers and saved in the run dir; then
``load_pretrained_mamba`` is timed ``repeats`` times, and the loaded tower's states and LM
logits are compared with transformers' ``MambaForCausalLM`` (its PyTorch path) at every real
position of a right-padded batch. Writes pretrained_load.json.
"""
from __future__ import annotations

import functools
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ssm.encoders import load_pretrained_mamba


@functools.lru_cache(maxsize=1)
def transformers_mamba():
    """transformers' ``modeling_mamba`` on its pure-PyTorch path.

    At import, transformers takes mamba-ssm's CUDA kernels when ``import mamba_ssm``
    succeeds (it does on a CPU-only install once a placeholder ``selective_scan_cuda`` is
    registered), and those fail on CPU tensors. The module is therefore (re)imported with
    mamba_ssm and causal_conv1d made unimportable for that moment."""
    blocked = {name: sys.modules.get(name) for name in ("mamba_ssm", "causal_conv1d")}
    for name in blocked:
        sys.modules[name] = None  # import raises ImportError
    try:
        module = importlib.reload(importlib.import_module(
            "transformers.models.mamba.modeling_mamba"))
    finally:
        for name, previous in blocked.items():
            if previous is None:
                del sys.modules[name]
            else:
                sys.modules[name] = previous
    return module


def padded_batch(vocab_size: int, lengths: list[int], seed: int = 0):
    """Random ids (b, l) right-padded with id 0, and the mask (b, l), l = max(lengths)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (len(lengths), max(lengths)), generator=generator)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return tokens.masked_fill(~mask, 0), mask


def real_position_error(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    """||ours - theirs|| / ||theirs|| over the real positions of (b, l, ...) tensors."""
    a, b = ours[mask].double(), theirs[mask].double()
    return float((a - b).norm() / b.norm())


def compare_with_transformers(encoder, reference, tokens, mask) -> dict:
    """Relative errors, at the real positions of a right-padded batch, of the encoder's
    ``forward_tokens`` against the ``last_hidden_state`` of the transformers
    ``MambaForCausalLM``'s backbone (its ``MambaModel``) and of ``lm_logits`` against the
    model's logits; both worst row and whole batch."""
    reference.eval()
    with torch.no_grad():
        states = reference.backbone(input_ids=tokens, attention_mask=mask.long(),
                                    use_cache=False).last_hidden_state
        logits = reference(input_ids=tokens, attention_mask=mask.long(), use_cache=False).logits
        our_states = encoder.forward_tokens(tokens, mask)
        our_logits = encoder.lm_logits(our_states)
    errors = {}
    for name, ours, theirs in (("states", our_states, states), ("logits", our_logits, logits)):
        errors[f"{name}_rel_error"] = real_position_error(ours, theirs, mask)
        errors[f"{name}_rel_error_worst_row"] = max(
            real_position_error(ours[i:i + 1], theirs[i:i + 1], mask[i:i + 1])
            for i in range(mask.shape[0]))
    return errors


def layerwise_error(encoder, reference, tokens, mask) -> float:
    """The worst relative error of one layer alone: each of the encoder's layers is fed
    transformers' input to that layer and compared with transformers' output of it. In a
    deep stack with random weights, float32 rounding grows from layer to layer; this number
    shows what each layer adds."""
    lengths = mask.sum(1)
    with torch.no_grad():
        outputs = reference.backbone(input_ids=tokens, attention_mask=mask.long(),
                                     output_hidden_states=True, use_cache=False).hidden_states
        # outputs: each block's output, then the final norm's; block i reads output i - 1.
        inputs = [reference.backbone.embeddings(tokens), *outputs[:-2]]
        return max(real_position_error(h + mixer(norm(h), seq_lens=lengths), out, mask)
                   for h, norm, mixer, out in zip(inputs, encoder.norms, encoder.mixers, outputs))


def bench_pretrained(cfg, run_dir) -> dict:
    run_dir = Path(run_dir)
    hf = transformers_mamba()
    torch.manual_seed(cfg.seed)
    config = hf.MambaConfig(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
                            vocab_size=cfg.vocab_size, state_size=cfg.d_state)
    reference = hf.MambaForCausalLM(config).float()
    model_dir = run_dir / "model"
    reference.save_pretrained(model_dir)
    params = sum(p.numel() for p in reference.parameters())

    seconds = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        encoder = load_pretrained_mamba(str(model_dir), backend=cfg.backend)
        seconds.append(time.perf_counter() - start)
    encoder.eval()
    tokens, mask = padded_batch(cfg.vocab_size, list(cfg.lengths), cfg.seed)
    results = {"d_model": cfg.d_model, "n_layer": cfg.n_layer, "vocab_size": cfg.vocab_size,
               "parameters": params,
               "weights_mb": sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20,
               "load_s_median": statistics.median(seconds), "load_s_min": min(seconds),
               "repeats": cfg.repeats, "lengths": list(cfg.lengths), "threads":
               torch.get_num_threads(),
               **compare_with_transformers(encoder, reference, tokens, mask),
               "layer_rel_error_worst": layerwise_error(encoder, reference, tokens, mask)}
    (run_dir / "pretrained_load.json").write_text(json.dumps(results, indent=2) + "\n")
    if not cfg.keep_model:
        for file in model_dir.iterdir():
            file.unlink()
        model_dir.rmdir()
    return results
