"""Training with a locally made pretrained Mamba LM as the text tower and its tokenizer,
chosen by config (model/text_encoder=mamba_pretrained, tokenizer=hf)."""
import shutil

import pytest
import torch

from ssm.encoders import load_pretrained_mamba
from ssm.tasks import evaluate_checkpoint, train
from ssm.tasks.build import build_tokenizer, check_vocabulary
from ssm.tasks.export import export_checkpoint, load_export
from ssm.train.checkpoint import load_checkpoint
from pretrained_models import make_hf_mamba, make_pretrained_tower


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    return make_pretrained_tower(tmp_path_factory.mktemp("tower"), width=16, depth=2)


def pretrained(tower, *overrides):
    """Overrides that swap in the pretrained tower (the shrink's width and depth reset to
    'as stored') and its tokenizer, which tokenizer=hf finds in the same directory."""
    return ["model/text_encoder=mamba_pretrained", f"model.text_encoder.path={tower}",
            "model.text_encoder.width=null", "model.text_encoder.depth=null", "tokenizer=hf",
            *overrides]


def test_a_few_steps_train_only_the_last_layer_and_evaluate(compose_train, tower, tmp_path):
    cfg = compose_train(*pretrained(tower, "model.text_encoder.train_last_layers=1",
                                    "loss=itc_text_lm"))
    results = train(cfg, tmp_path)
    before = load_pretrained_mamba(str(tower)).state_dict()
    after = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    for name, value in before.items():
        moved = not torch.equal(after[f"text_encoder.{name}"], value)
        assert moved == name.startswith(("mixers.1.", "norms.1.", "norm_f.")), name
    trainable = sum(v.numel() for k, v in before.items()
                    if k.startswith(("mixers.1.", "norms.1.", "norm_f.")))
    assert results["params_text"] == trainable
    assert results["text_encoder"] == "MambaTextEncoder" and results["steps"] == 4
    assert results["order_acc_text_only"] == 0.5  # the blind probe reads bytes, whatever the tokenizer
    # The run's config (.hydra/config.yaml, written by the task) rebuilds the same model
    # and tokenizer for a re-evaluation.
    again, _ = evaluate_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert again["t2i_r5"] == results["t2i_r5"] and again["order_acc"] == results["order_acc"]


def test_export_needs_neither_the_tower_directory_nor_hydra(compose_train, tower, tmp_path):
    """The export holds the tower as the MambaTextEncoder it became, and the tokenizer."""
    copy = shutil.copytree(tower, tmp_path / "tower_copy")
    run = tmp_path / "run"
    cfg = compose_train(*pretrained(copy, "trainer.max_steps=1", "eval.enabled=false"))
    train(cfg, run)
    export = export_checkpoint(run / "checkpoints" / "last.pt", tmp_path / "export")
    from ssm.tasks.build import model_from_checkpoint
    original = model_from_checkpoint(run / "checkpoints" / "last.pt")
    shutil.rmtree(copy)
    ready = load_export(export)
    assert (export / "tokenizer" / "tokenizer.json").is_file()
    captions = ["a red circle left of a blue square", "a small green star"]
    tokens, mask = ready.tokenizer.batch_encode(captions, ready.max_length)
    assert torch.equal(tokens, original.tokenizer.batch_encode(captions, ready.max_length)[0])
    with torch.no_grad():
        torch.testing.assert_close(ready.model.encode_text(tokens, mask),
                                   original.model.eval().encode_text(tokens, mask))


def test_the_byte_tokenizer_with_a_pretrained_tower_is_refused(compose_train, tmp_path):
    """A table of 512 embeddings was made for another tokenizer than the 259 byte ids
    (padding rounds 259 up to 384 at most)."""
    make_hf_mamba(tmp_path / "tower", vocab=512)
    overrides = [o for o in pretrained(tmp_path / "tower") if o != "tokenizer=hf"]
    with pytest.raises(ValueError, match=r"vocabulary \(512 embeddings\).*ByteTokenizer \(259"):
        train(compose_train(*overrides), tmp_path / "run")


def test_a_scratch_tower_must_be_sized_to_the_hf_tokenizer(compose_train, tower):
    from ssm.encoders import MambaTextEncoder
    tokenizer = build_tokenizer(compose_train("tokenizer=hf", f"tokenizer.path={tower}"))
    assert tokenizer.vocab_size == 300
    with pytest.raises(ValueError, match="model.text_encoder.vocab_size=300"):
        check_vocabulary(tokenizer, MambaTextEncoder(vocab_size=259, width=8, depth=1))
    check_vocabulary(tokenizer, MambaTextEncoder(vocab_size=300, width=8, depth=1))


def test_caption_tokens_counts_bytes_only(compose_train, tower):
    with pytest.raises(ValueError, match="caption_tokens=32 counts byte tokens"):
        build_tokenizer(compose_train("tokenizer=hf", f"tokenizer.path={tower}",
                                      "data.caption_tokens=32"))


def test_a_width_that_does_not_fit_the_checkpoint(compose_train, tower, tmp_path):
    cfg = compose_train(*pretrained(tower, "model.text_encoder.width=96"))
    with pytest.raises(ValueError, match="width=96 was asked for"):
        train(cfg, tmp_path)
