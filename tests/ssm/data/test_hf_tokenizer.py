"""The Hugging Face tokenizer choice: BOS/EOS, padding and truncation as the byte
tokenizer's, on a BPE tokenizer trained here (nothing downloaded)."""
import pytest
import torch

from ssm.data import ByteTokenizer, HFTokenizer
from pretrained_models import make_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer(folder)
    return HFTokenizer(str(folder))


def test_rows_are_bos_ids_eos_then_padding(tokenizer):
    texts = ["a small red circle", "a blue square left of a green star", ""]
    tokens, mask = tokenizer.batch_encode(texts, max_length=64)
    ids = [tokenizer.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert tokens.shape == (3, max(map(len, ids)) + 2) and tokens.dtype == torch.long
    for row, body in enumerate(ids):
        n = len(body) + 2
        assert tokens[row, :n].tolist() == [tokenizer.bos_id, *body, tokenizer.eos_id]
        assert mask[row, :n].all() and not mask[row, n:].any()
        assert (tokens[row, n:] == tokenizer.pad_id).all()
    assert tokenizer.batch_decode(tokens, mask) == texts
    assert tokenizer.encode(texts[0]) == tokens[0, : int(mask[0].sum())].tolist()


def test_same_conventions_as_the_byte_tokenizer(tokenizer):
    """Both make (b, min(max_length, longest row)) right-padded rows that keep BOS and EOS."""
    texts = ["a red circle", "a very long caption " * 20]
    for tok in (tokenizer, ByteTokenizer()):
        tokens, mask = tok.batch_encode(texts, max_length=12)
        assert tokens.shape == (2, 12) and mask[1].all()
        assert tokens[1, 0] == tok.bos_id and tokens[1, -1] == tok.eos_id
        assert tok.batch_decode(tokens, mask)[1] in texts[1]


def test_truncation_never_splits_a_character(tokenizer):
    """Characters outside the training text's alphabet are several byte tokens each; a cut
    inside one drops all of its pieces."""
    text = "red €€€ circle"
    body = tokenizer.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(body) > len(text.split())  # "€" is split into byte tokens
    for max_length in range(3, len(body) + 2):
        tokens, mask = tokenizer.batch_encode([text], max_length)
        kept = tokenizer.decode(tokens[0, mask[0]])
        assert "\ufffd" not in kept and text.startswith(kept), (max_length, kept)
        assert tokens[0, int(mask[0].sum()) - 1] == tokenizer.eos_id


def test_specials_optional(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok_plain")
    make_tokenizer(folder)
    plain = HFTokenizer(str(folder), add_bos=False, add_eos=False)
    tokens, mask = plain.batch_encode(["a red circle"], max_length=64)
    assert tokens[0, mask[0]].tolist() == plain.tokenizer("a red circle")["input_ids"]


def test_vocab_and_special_ids(tokenizer):
    assert tokenizer.vocab_size == len(tokenizer.tokenizer) == 300
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (0, 0, 1)


def test_export_writes_a_tokenizer_that_loads(tokenizer, tmp_path):
    config = tokenizer.export(tmp_path / "copy")
    again = HFTokenizer(config["path"], config["add_bos"], config["add_eos"])
    texts = ["a green star below a red square"]
    assert torch.equal(again.batch_encode(texts, 32)[0], tokenizer.batch_encode(texts, 32)[0])


def test_bad_directories_and_arguments(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="tokenizer.path is required"):
        HFTokenizer(None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFTokenizer(str(tmp_path / "nowhere"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="does not load as a Hugging Face tokenizer"):
        HFTokenizer(str(tmp_path / "junk"))
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        tokenizer.batch_encode(["a"], max_length=1)
    with pytest.raises(ValueError, match="vocab_size"):
        tokenizer.decode([0, 300])
