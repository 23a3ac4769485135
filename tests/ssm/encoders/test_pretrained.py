"""Pretrained Mamba LMs as text towers: every weight mapped by name, states and LM logits
equal to transformers' own Mamba at every real position of a right-padded batch."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ssm.encoders import MambaTextEncoder, load_pretrained_mamba, parameter_count
from ssm.tasks.bench_pretrained import compare_with_transformers, padded_batch, transformers_mamba
from pretrained_models import make_hf_mamba, make_mamba_ssm

TOLERANCE = 1e-5  # relative, float32
VOCAB = 64


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_mamba")
    return folder, make_hf_mamba(folder, vocab=VOCAB)


def _seeded_batch(vocab, lengths):
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    print(f"seed {seed}")
    return padded_batch(vocab, lengths, seed)


def _assert_matches(encoder, reference, vocab, lengths=(19, 11, 4, 1)):
    tokens, mask = _seeded_batch(vocab, list(lengths))
    errors = compare_with_transformers(encoder.eval(), reference, tokens, mask)
    print(errors)
    assert all(value < TOLERANCE for value in errors.values()), errors


def test_transformers_checkpoint_equals_transformers_mamba(hf_model):
    folder, reference = hf_model
    encoder = load_pretrained_mamba(str(folder))
    assert encoder.vocab_size == VOCAB and encoder.width == 16 and len(encoder.mixers) == 2
    assert encoder.lm_head is None  # tied: the logits read through the embedding
    _assert_matches(encoder, reference, VOCAB)


def test_padding_after_a_row_changes_none_of_its_states(hf_model):
    folder, _ = hf_model
    encoder = load_pretrained_mamba(str(folder)).eval()
    tokens, mask = _seeded_batch(VOCAB, [9, 9])
    longer = torch.cat([tokens, torch.randint(0, VOCAB, (2, 6))], 1)
    longer_mask = torch.cat([mask, torch.zeros(2, 6, dtype=torch.bool)], 1)
    with torch.no_grad():
        torch.testing.assert_close(encoder.forward_tokens(longer, longer_mask)[:, :9],
                                   encoder.forward_tokens(tokens, mask), rtol=0, atol=1e-6)


def test_pytorch_bin_with_an_untied_head(tmp_path):
    reference = make_hf_mamba(tmp_path, vocab=VOCAB, tie=False, weights="bin", seed=1)
    assert (tmp_path / "pytorch_model.bin").is_file()
    encoder = load_pretrained_mamba(str(tmp_path))
    assert encoder.lm_head is not None
    assert not torch.equal(encoder.lm_head.weight, encoder.embed.weight)
    _assert_matches(encoder, reference, VOCAB)


def test_sharded_checkpoint(tmp_path, hf_model):
    _, reference = hf_model
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    _assert_matches(load_pretrained_mamba(str(tmp_path)), reference, VOCAB)


def test_mamba_ssm_checkpoint_equals_transformers_with_its_weights(tmp_path):
    """mamba-ssm's own save_pretrained (embedding, singular; vocabulary padded 61 -> 64);
    the oracle is transformers' Mamba holding the same weights."""
    state = make_mamba_ssm(tmp_path, vocab=61)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vocab_size"] == 61 and "backbone.embedding.weight" in state
    encoder = load_pretrained_mamba(str(tmp_path))
    assert encoder.vocab_size == 64
    hf = transformers_mamba()
    reference = hf.MambaForCausalLM(hf.MambaConfig(hidden_size=16, num_hidden_layers=2,
                                                   vocab_size=64, state_size=8))
    reference.load_state_dict({k.replace("backbone.embedding.", "backbone.embeddings."): v
                               for k, v in state.items()})
    _assert_matches(encoder, reference, 64)


def test_mean_pooling(hf_model):
    folder, _ = hf_model
    encoder = load_pretrained_mamba(str(folder), pooling="mean").eval()
    tokens, mask = _seeded_batch(VOCAB, [7, 3])
    with torch.no_grad():
        states = encoder.forward_tokens(tokens, mask)
        torch.testing.assert_close(encoder(tokens, mask)[1], states[1, :3].mean(0))


def test_freeze_and_last_layers(hf_model):
    folder, _ = hf_model
    assert parameter_count(load_pretrained_mamba(str(folder), freeze=True)) == 0
    encoder = load_pretrained_mamba(str(folder), train_last_layers=1)
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in encoder.named_parameters()
                         if n.startswith(("mixers.1.", "norms.1.", "norm_f."))}
    tokens, mask = _seeded_batch(VOCAB, [5, 3])
    encoder(tokens, mask).square().sum().backward()
    assert all((p.grad is not None) == p.requires_grad for p in encoder.parameters())
    full = load_pretrained_mamba(str(folder))
    assert parameter_count(full) == sum(p.numel() for p in full.parameters())


def test_loaded_tower_keeps_the_optimizer_marks_and_rebuilds_without_its_directory(hf_model):
    folder, _ = hf_model
    encoder = load_pretrained_mamba(str(folder)).eval()
    assert encoder.mixers[0].A_log._no_weight_decay and encoder.mixers[1].D._no_weight_decay
    arguments = {k: v for k, v in encoder.architecture_config.items() if k != "_target_"}
    rebuilt = MambaTextEncoder(**arguments).eval()
    rebuilt.load_state_dict(encoder.state_dict())
    tokens, mask = _seeded_batch(VOCAB, [6, 2])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(tokens, mask), encoder(tokens, mask))


# -- bad input -------------------------------------------------------------------------------

def _copy_with(tmp_path, source, config_changes=None, state_changes=None):
    """A copy of ``source`` with config keys and weights replaced (None deletes)."""
    target = tmp_path / "changed"
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    for key, value in (config_changes or {}).items():
        config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    state = load_file(target / "model.safetensors")
    for key, value in (state_changes or {}).items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    save_file(state, target / "model.safetensors")
    return str(target)


@pytest.mark.parametrize("change, error, words", [
    (dict(config_changes={"model_type": "mamba2", "architectures": ["Mamba2ForCausalLM"]}),
     ValueError, ["'mamba2'", "Mamba2ForCausalLM"]),
    (dict(config_changes={"model_type": "gpt2"}), ValueError, ["'gpt2'"]),
    (dict(state_changes={"backbone.layers.0.mixer.extra": torch.zeros(3)}), ValueError,
     ["backbone.layers.0.mixer.extra", "left over"]),
    (dict(state_changes={"backbone.layers.1.mixer.D": None}), ValueError,
     ["missing", "mixers.1.D"]),
    (dict(state_changes={"backbone.pos_embed.weight": torch.zeros(3)}), ValueError,
     ["backbone.pos_embed.weight", "no part"]),
    (dict(config_changes={"state_size": 4}), ValueError,
     ["wrong shape", "backbone.layers.0.mixer.A_log"]),
    (dict(state_changes={"lm_head.weight": torch.randn(VOCAB, 16)}), ValueError,
     ["ties", "lm_head.weight"]),
])
def test_foreign_or_damaged_checkpoints_are_named(tmp_path, hf_model, change, error, words):
    path = _copy_with(tmp_path, hf_model[0], **change)
    with pytest.raises(error) as info:
        load_pretrained_mamba(path)
    assert all(word in str(info.value) for word in words), str(info.value)


def test_missing_directory_config_or_weights(tmp_path, hf_model):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_mamba(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained_mamba(str(tmp_path / "empty"))
    shutil.copy(hf_model[0] / "config.json", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_pretrained_mamba(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text('{"hidden_size": 16}')
    with pytest.raises(ValueError, match="neither a Hugging Face config"):
        load_pretrained_mamba(str(tmp_path / "empty"))


def test_mamba_ssm_models_of_another_kind_are_refused(tmp_path):
    make_mamba_ssm(tmp_path, vocab=61)
    config = json.loads((tmp_path / "config.json").read_text())
    config["ssm_cfg"] = {"layer": "Mamba2"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="ssm_cfg.layer"):
        load_pretrained_mamba(str(tmp_path))


@pytest.mark.parametrize("kwargs, words", [
    (dict(width=32), ["width=32", "width 16"]),
    (dict(depth=3), ["depth=3", "depth 2"]),
    (dict(freeze=True, train_last_layers=1), ["not both"]),
    (dict(train_last_layers=3), ["train_last_layers", "depth=2"]),
    (dict(pooling="first"), ["pooling"]),
])
def test_settings_that_do_not_fit_the_checkpoint(hf_model, kwargs, words):
    with pytest.raises(ValueError) as info:
        load_pretrained_mamba(str(hf_model[0]), **kwargs)
    assert all(word in str(info.value) for word in words), str(info.value)
