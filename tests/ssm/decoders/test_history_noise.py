"""Word substitution in the teacher-forced history (ssm.decoders.history_noise) and the
objective that uses it in training only."""
import pytest
import torch

from ssm.data import ByteTokenizer
from ssm.decoders import substitute_words
from ssm.objective import Objective

SPACE = 32
CAPTIONS = ["large green cross", "small red circle left of large blue star", "a",
            "small white diamond above large black square"]


def _batch(texts=CAPTIONS, length=64):
    return ByteTokenizer().batch_encode(texts, length)


def _words(row):
    return bytes(row[1:-1]).split(b" ")


def test_rate_zero_changes_nothing():
    tokens, mask = _batch()
    noisy, noisy_mask, counted = substitute_words(tokens, mask, 0.0, SPACE)
    assert torch.equal(noisy, tokens) and torch.equal(noisy_mask, mask)
    assert torch.equal(counted, mask)


@pytest.mark.parametrize("seed", range(5))
def test_substituted_words_come_from_the_batch_and_leave_the_loss(seed):
    tokens, mask = _batch()
    g = torch.Generator().manual_seed(seed)
    noisy, noisy_mask, counted = substitute_words(tokens, mask, 0.5, SPACE, g)
    pool = {w for row, m in zip(tokens.tolist(), mask) for w in _words(row[:int(m.sum())])}
    changed = 0
    for i in range(len(CAPTIONS)):
        true_row = tokens[i, :int(mask[i].sum())].tolist()
        row = noisy[i, :int(noisy_mask[i].sum())].tolist()
        # Right-padded, BOS and EOS kept, and nothing is counted past the row's end.
        assert torch.equal(noisy_mask[i], torch.arange(noisy.shape[1]) < len(row))
        assert row[0] == true_row[0] and row[-1] == true_row[-1]
        assert not counted[i, len(row):].any()
        true_words, words = _words(true_row), _words(row)
        assert len(words) == len(true_words)
        position = 1
        for true_word, word in zip(true_words, words):
            span = counted[i, position:position + len(word)]
            if span.all():
                assert word == true_word       # counted words are the caption's own
            else:
                assert not span.any() and word in pool
                changed += 1
            assert counted[i, position + len(word)]   # the separator or EOS after it counts
            position += len(word) + 1
    assert changed > 0


def test_the_draws_follow_the_generator_and_the_rate():
    tokens, mask = _batch(CAPTIONS * 25)
    runs = [substitute_words(tokens, mask, 0.3, SPACE, torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    _, noisy_mask, counted = runs[0]
    # Share of caption tokens (BOS and EOS excluded) taken out of the loss: near the rate.
    words = (noisy_mask.sum() - 2 * len(tokens)).item()
    dropped = (noisy_mask & ~counted).sum().item()
    assert 0.15 < dropped / words < 0.45


def test_the_batch_widens_to_the_longest_noisy_row():
    tokens, mask = _batch(["x" * 10, "c d"], length=12)     # (2, 12)
    widths = set()
    for seed in range(40):
        noisy, noisy_mask, counted = substitute_words(tokens, mask, 0.9, SPACE,
                                                      torch.Generator().manual_seed(seed))
        n = int(noisy_mask.sum(1).max())
        assert noisy.shape == noisy_mask.shape == counted.shape == (2, max(12, n))
        row = noisy[1, :int(noisy_mask[1].sum())].tolist()
        assert all(w in (b"x" * 10, b"c", b"d") for w in _words(row))   # whole words only
        widths.add(noisy.shape[1])
    assert min(widths) == 12 and max(widths) > 12


def test_bad_input_is_named():
    tokens, mask = _batch()
    for rate in (-0.1, 1.0, True, "0.1"):
        with pytest.raises(ValueError, match="caption_word_noise must be a number in"):
            substitute_words(tokens, mask, rate, SPACE)
    with pytest.raises(ValueError, match="tokens and mask must both have shape"):
        substitute_words(tokens, mask[:, :-1], 0.1, SPACE)
    with pytest.raises(ValueError, match="caption_word_noise"):
        Objective(itc=0.0, caption=1.0, caption_word_noise=1.5)


def _bigrams(noisy, noisy_mask):
    return {pair for row, m in zip(noisy.tolist(), noisy_mask)
            for words in [_words(row[:int(m.sum())])] for pair in zip(words, words[1:])}


def test_avoided_pairs_are_never_written():
    tokens, mask = _batch(["large green circle", "small red cross", "green square"] * 4)
    avoid = frozenset({(tuple(b"green"), tuple(b"cross")), (tuple(b"red"), tuple(b"circle"))})
    blind, careful = set(), set()
    for seed in range(30):
        blind |= _bigrams(*substitute_words(tokens, mask, 0.7, SPACE,
                                            torch.Generator().manual_seed(seed))[:2])
        careful |= _bigrams(*substitute_words(tokens, mask, 0.7, SPACE,
                                              torch.Generator().manual_seed(seed), avoid)[:2])
    assert {(b"green", b"cross"), (b"red", b"circle")} <= blind      # blind noise writes them
    assert not {(b"green", b"cross"), (b"red", b"circle")} & careful
    assert (b"green", b"circle") in careful                          # the captions' own pair


def test_the_objective_avoids_the_pairs_it_is_given():
    objective = Objective(itc=0.0, caption=1.0, caption_word_noise=0.5)
    objective.avoid_word_pairs({("green", "cross")})
    assert objective.word_noise_avoid == {(tuple(b"green"), tuple(b"cross"))}


class _Recorder(torch.nn.Module):
    """A stand-in CLIP whose caption logits record the tokens they were asked for."""

    decoder = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def caption_logits(self, out, tokens, mask):
        self.seen.append(tokens.clone())
        return torch.zeros(*tokens.shape, 259, requires_grad=True)


def test_the_objective_substitutes_in_training_only():
    tokens, mask = _batch(CAPTIONS * 8)
    objective = Objective(itc=0.0, caption=1.0, caption_word_noise=0.5)
    model = _Recorder()
    objective.train()
    objective._caption(model, None, tokens, mask, torch.Generator().manual_seed(0))
    objective.eval()
    objective._caption(model, None, tokens, mask, torch.Generator().manual_seed(0))
    assert not torch.equal(model.seen[0], tokens)
    assert torch.equal(model.seen[1], tokens)
