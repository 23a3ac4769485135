"""Tiny pretrained-model directories made locally with random weights (a test helper):
transformers' MambaForCausalLM, mamba-ssm's MambaLMHeadModel, and a byte-level BPE
tokenizer trained on a few captions. Nothing is downloaded."""
from pathlib import Path

import torch

from kernels.bench.peers import mamba_selective_scan_ref
from ssm.data import SyntheticScenes
from ssm.tasks.bench_pretrained import transformers_mamba

BOS_EOS, PAD = "<|endoftext|>", "<|padding|>"   # GPT-NeoX's, as Mamba LMs use


def round_up(n: int, multiple: int = 8) -> int:
    return -(-n // multiple) * multiple


def make_hf_mamba(folder, width=16, depth=2, vocab=64, d_state=8, tie=True,
                  weights="safetensors", seed=0):
    """Save a random transformers MambaForCausalLM in ``folder`` (its save_pretrained, or
    with ``weights="bin"`` a pytorch_model.bin as older transformers wrote); returns it."""
    hf = transformers_mamba()
    torch.manual_seed(seed)
    config = hf.MambaConfig(hidden_size=width, num_hidden_layers=depth, vocab_size=vocab,
                            state_size=d_state, tie_word_embeddings=tie, pad_token_id=1,
                            bos_token_id=0, eos_token_id=0)
    model = hf.MambaForCausalLM(config).eval()
    with torch.no_grad():  # random, not the init's constants, so a wrong mapping shows
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", ".D")):
                p.add_(0.5 * torch.randn_like(p))
    if weights == "bin":
        model.config.save_pretrained(folder)
        torch.save({k: v.clone() for k, v in model.state_dict().items()},
                   Path(folder) / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)
    return model


def make_mamba_ssm(folder, width=16, depth=2, vocab=61, d_state=8, seed=0) -> dict:
    """Save a random mamba-ssm MambaLMHeadModel (its vocabulary padded to a multiple of 8)
    in ``folder`` with its own save_pretrained; returns its state dict."""
    mamba_selective_scan_ref()  # registers the placeholder CUDA extension mamba-ssm imports
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    torch.manual_seed(seed)
    config = MambaConfig(d_model=width, n_layer=depth, vocab_size=vocab,
                         ssm_cfg={"d_state": d_state}, rms_norm=True, fused_add_norm=False,
                         residual_in_fp32=True)
    model = MambaLMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", ".D")):
                p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    return model.state_dict()


def make_tokenizer(folder, vocab_size=300):
    """A byte-level BPE tokenizer trained on scene captions, saved as a Hugging Face
    tokenizer (tokenizer.json); BOS = EOS = id 0 and PAD = id 1, as GPT-NeoX's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    scenes = SyntheticScenes("train", 300, seed=0, image_size=16)
    texts = [scenes[i]["caption"] for i in range(len(scenes))]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS_EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS_EOS,
                                   eos_token=BOS_EOS, pad_token=PAD)
    fast.save_pretrained(str(folder))
    return fast


def make_pretrained_tower(folder, width=16, depth=2, seed=0) -> Path:
    """A tokenizer and a transformers Mamba LM sized to it, in one folder (as a downloaded
    Hugging Face model directory holds both)."""
    folder = Path(folder)
    tokenizer = make_tokenizer(folder)
    make_hf_mamba(folder, width=width, depth=depth, vocab=round_up(len(tokenizer)), seed=seed)
    return folder
