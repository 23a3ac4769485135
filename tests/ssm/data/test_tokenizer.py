"""ByteTokenizer: exact round trips, padding layout, truncation on character boundaries, bad input."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm.data import ByteTokenizer

TOK = ByteTokenizer()
# Lone surrogates (category Cs) have no UTF-8 encoding, so they are not valid text to round-trip.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


def test_vocabulary_layout():
    assert (TOK.bos_id, TOK.eos_id, TOK.pad_id, TOK.vocab_size) == (256, 257, 258, 259)
    assert len({TOK.bos_id, TOK.eos_id, TOK.pad_id} | set(range(256))) == TOK.vocab_size


def test_encode_is_bos_bytes_eos():
    assert TOK.encode("") == [256, 257]
    assert TOK.encode("Ab") == [256, 65, 98, 257]
    assert TOK.encode("é") == [256, 0xC3, 0xA9, 257]


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_round_trip(text):
    ids = TOK.encode(text)
    assert ids[0] == TOK.bos_id and ids[-1] == TOK.eos_id
    assert TOK.decode(ids) == text
    assert TOK.decode(torch.tensor(ids)) == text
    assert TOK.decode(ids, errors="strict") == text


@settings(max_examples=100, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=5), st.integers(min_value=2, max_value=40))
def test_batch_rows_are_valid_prefixes(texts, max_length):
    tokens, mask = TOK.batch_encode(texts, max_length)
    longest = max(len(TOK.encode(t)) for t in texts)
    assert tokens.shape == mask.shape == (len(texts), min(max_length, longest))
    for text, row, row_mask in zip(texts, tokens, mask):
        n = int(row_mask.sum())
        # Real tokens first, then padding only.
        assert row_mask[:n].all() and not row_mask[n:].any()
        assert (row[n:] == TOK.pad_id).all()
        assert row[0] == TOK.bos_id and row[n - 1] == TOK.eos_id
        assert not ((row[1:n - 1] >= 256).any())
        decoded = TOK.decode(row[:n], errors="strict")
        assert text.startswith(decoded)
        if len(TOK.encode(text)) <= max_length:
            assert decoded == text
        else:
            # Only whole characters were dropped, and no more than one character's worth of bytes
            # beyond what the length limit forced.
            assert len(decoded.encode("utf-8")) > max_length - 2 - 4
    assert TOK.batch_decode(tokens, mask) == [TOK.decode(r[m]) for r, m in zip(tokens, mask)]


def test_padding_and_mask_layout():
    tokens, mask = TOK.batch_encode(["ab", "", "abcd"], max_length=100)
    assert tokens.dtype == torch.long and mask.dtype == torch.bool
    P = TOK.pad_id
    assert tokens.tolist() == [
        [256, 97, 98, 257, P, P],
        [256, 257, P, P, P, P],
        [256, 97, 98, 99, 100, 257],
    ]
    assert mask.tolist() == [
        [True] * 4 + [False] * 2,
        [True] * 2 + [False] * 4,
        [True] * 6,
    ]
    assert TOK.batch_decode(tokens) == ["ab", "", "abcd"]
    assert TOK.batch_decode(tokens, mask) == ["ab", "", "abcd"]
    assert TOK.batch_decode(tokens.tolist()) == ["ab", "", "abcd"]


def test_truncation_keeps_eos():
    tokens, mask = TOK.batch_encode(["abcdefgh", "xy"], max_length=5)
    assert tokens.tolist() == [[256, 97, 98, 99, 257], [256, 120, 121, 257, TOK.pad_id]]
    assert mask.sum(1).tolist() == [5, 4]
    tokens, _ = TOK.batch_encode(["abc"], max_length=2)
    assert tokens.tolist() == [[256, 257]]
    # Width is min(max_length, longest encoded text) even when trimming a character shortens
    # every row.
    tokens, mask = TOK.batch_encode(["中中"], max_length=6)
    assert tokens.tolist() == [[256, 0xE4, 0xB8, 0xAD, 257, TOK.pad_id]]
    assert mask.tolist() == [[True] * 5 + [False]]


@pytest.mark.parametrize("prefix_len", range(0, 6))
@pytest.mark.parametrize("char", ["é", "中", "😀", "👍🏽"])
def test_truncation_never_splits_a_character(prefix_len, char):
    # Every cut position across a run of multi-byte characters after an ASCII prefix.
    text = "a" * prefix_len + char * 3
    for max_length in range(2, len(TOK.encode(text)) + 1):
        tokens, mask = TOK.batch_encode([text], max_length)
        row = tokens[0][mask[0]]
        assert len(row) <= max_length and row[-1] == TOK.eos_id
        decoded = TOK.decode(row, errors="strict")
        assert text.startswith(decoded)
        # Greedy: the next character would not have fitted.
        next_char = text[len(decoded):len(decoded) + 1]
        if next_char:
            assert len(decoded.encode()) + len(next_char.encode()) > max_length - 2


def test_cjk_cut_layout():
    # "中" is e4 b8 ad: with room for 4 body bytes only the first character fits.
    tokens, mask = TOK.batch_encode(["中文", "abcdef"], max_length=6)
    assert tokens[0].tolist() == [256, 0xE4, 0xB8, 0xAD, 257, TOK.pad_id]
    assert mask[0].tolist() == [True] * 5 + [False]
    assert tokens[1].tolist() == [256, 97, 98, 99, 100, 257]


def test_decode_drops_special_tokens_anywhere():
    assert TOK.decode([258, 256, 104, 257, 105, 258]) == "hi"


def test_decode_invalid_utf8():
    assert TOK.decode([0xFF, 104]) == "\ufffdh"
    with pytest.raises(UnicodeDecodeError):
        TOK.decode([0xFF, 104], errors="strict")


@pytest.mark.parametrize("call, exc, words", [
    (lambda: TOK.batch_encode(["a"], max_length=1), ValueError, ["max_length", ">= 2"]),
    (lambda: TOK.batch_encode(["a"], max_length=2.5), TypeError, ["max_length"]),
    (lambda: TOK.batch_encode([], max_length=8), ValueError, ["texts", "non-empty"]),
    (lambda: TOK.batch_encode("abc", max_length=8), TypeError, ["texts", "list"]),
    (lambda: TOK.batch_encode(["a", 3], max_length=8), TypeError, ["texts[1]", "str"]),
    (lambda: TOK.encode(b"abc"), TypeError, ["text", "str"]),
    (lambda: TOK.decode([1, 259]), ValueError, ["259", "vocab_size"]),
    (lambda: TOK.decode([-1]), ValueError, ["-1", "vocab_size"]),
    (lambda: TOK.decode(torch.tensor([1, 300])), ValueError, ["300", "vocab_size"]),
    (lambda: TOK.decode(torch.tensor([[1, 2]])), ValueError, ["tokens", "1-D"]),
    (lambda: TOK.decode(torch.tensor([1.0])), TypeError, ["tokens", "integer"]),
    (lambda: TOK.decode([1.0]), TypeError, ["tokens", "int"]),
    (lambda: TOK.batch_decode(torch.tensor([1, 2])), ValueError, ["tokens", "(b, l)"]),
    (lambda: TOK.batch_decode(torch.tensor([[1, 2]]), torch.ones(1, 3, dtype=torch.bool)),
     ValueError, ["mask"]),
])
def test_bad_inputs(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value)
