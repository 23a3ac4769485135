"""Tests for ssm.eval.metrics: retrieval ranks/recalls, zero-shot, word-order probe, baseline."""
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

from ssm.data.tokenizer import ByteTokenizer
from ssm.eval import (BagOfBytesBaseline, class_embeddings, retrieval_metrics, retrieval_ranks,
                      word_order_accuracy, zero_shot_accuracy)

KEYS = {f"{d}_{m}" for d in ("t2i", "i2t")
        for m in ("r1", "r5", "r10", "mean_rank", "median_rank")}

# Scores S[i, j] = <image i, text j>, built as image = I and text = S.T. Every column is a unit
# vector (0.49 + 0.25 + 0.25 + 0.01 = 1, ...), so normalising the features leaves S unchanged,
# and no row or column has a tie.
S4 = torch.tensor([[0.7, 0.9, 0.4, 0.1],
                   [0.5, 0.3, 0.8, 0.7],
                   [-0.5, 0.1, 0.2, -0.1],
                   [0.1, -0.3, -0.4, -0.7]])
# Text j against column j: 0.7 is the top of column 0; 0.3 is beaten by 0.9; 0.2 by 0.4 and 0.8;
# -0.7 by everything.
S4_T2I = [1, 2, 3, 4]
# Image i against row i: 0.7 is beaten by 0.9; 0.3 by 0.5, 0.8, 0.7; 0.2 is the top of row 2;
# -0.7 is the bottom of row 3.
S4_I2T = [2, 4, 1, 4]


def reference_ranks(scores):
    """Rank by the definition, one query at a time: (t2i, i2t) lists from a (b, b) matrix."""
    b = len(scores)
    i2t = [1 + sum(scores[i][j] >= scores[i][i] for j in range(b) if j != i) for i in range(b)]
    t2i = [1 + sum(scores[i][j] >= scores[j][j] for i in range(b) if i != j) for j in range(b)]
    return t2i, i2t


def signed_sparse_features(b, e, seed):
    """Rows with exactly four +-1 entries: unit-normalised they hold +-0.5, so every score is an
    exact multiple of 0.25 whatever the summation order. Many ties, all of them exact."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, e)
    for row in x:
        cols = torch.randperm(e, generator=g)[:4]
        row[cols] = torch.randint(0, 2, (4,), generator=g).float() * 2 - 1
    return x


# --- retrieval ------------------------------------------------------------------------------

def test_hand_built_scores_give_known_ranks_both_directions():
    t2i, i2t = retrieval_ranks(torch.eye(4), S4.T)
    assert t2i.tolist() == S4_T2I
    assert i2t.tolist() == S4_I2T
    m = retrieval_metrics(torch.eye(4), S4.T)
    assert set(m) == KEYS
    assert m["t2i_r1"] == 0.25 and m["t2i_r5"] == 1.0 and m["t2i_r10"] == 1.0
    assert m["t2i_mean_rank"] == 2.5 and m["t2i_median_rank"] == 2.5
    assert m["i2t_r1"] == 0.25 and m["i2t_r5"] == 1.0 and m["i2t_r10"] == 1.0
    assert m["i2t_mean_rank"] == 2.75 and m["i2t_median_rank"] == 3.0
    assert all(isinstance(v, float) for v in m.values())


def test_swapping_modalities_swaps_directions():
    m = retrieval_metrics(S4.T, torch.eye(4))
    assert m["t2i_mean_rank"] == 2.75 and m["i2t_mean_rank"] == 2.5


@pytest.mark.parametrize("features", [
    torch.eye(16), torch.randn(50, 8, generator=torch.Generator().manual_seed(0))])
def test_identical_features_are_perfect(features):
    m = retrieval_metrics(features, features * 3.0)  # the scale checks normalisation
    for d in ("t2i", "i2t"):
        assert m[f"{d}_r1"] == 1.0 and m[f"{d}_mean_rank"] == 1.0 and m[f"{d}_median_rank"] == 1.0


def test_permuted_pairing_ranks_true_match_last_among_ties():
    # Image i = e_i, text j = e_perm[j]: the true pair scores 0 unless perm[j] == j, and a 0 ties
    # with every other 0, so it ranks b (pessimistic); fixed points rank 1.
    b = 20
    perm = torch.randperm(b, generator=torch.Generator().manual_seed(3))
    fixed = int((perm == torch.arange(b)).sum())
    assert fixed < b
    expected_ranks = torch.where(perm == torch.arange(b), 1, b)
    t2i, i2t = retrieval_ranks(torch.eye(b), torch.eye(b)[perm])
    # Image i sees its true text score 1 only when perm[i] == i, so i2t follows the same rule.
    assert torch.equal(t2i, expected_ranks) and torch.equal(i2t, expected_ranks)
    m = retrieval_metrics(torch.eye(b), torch.eye(b)[perm])
    for d in ("t2i", "i2t"):
        assert m[f"{d}_r1"] == fixed / b
        assert m[f"{d}_r10"] == fixed / b
        assert m[f"{d}_mean_rank"] == (fixed + (b - fixed) * b) / b


def test_shifted_pairing_with_distinct_scores():
    # Text j sits between images j and j + 1 on a circle, closer to j + 1: every text's nearest
    # image is the next one, so the true image ranks 2 (t2i); and every image's nearest text is
    # the previous one (i2t rank 2 as well).
    b = 12
    angle = 2 * torch.pi * torch.arange(b) / b
    image = torch.stack([angle.cos(), angle.sin()], 1)
    shifted = angle + 0.7 * (2 * torch.pi / b)
    text = torch.stack([shifted.cos(), shifted.sin()], 1)
    t2i, i2t = retrieval_ranks(image, text)
    assert t2i.tolist() == [2] * b and i2t.tolist() == [2] * b
    m = retrieval_metrics(image, text)
    assert m["t2i_r1"] == 0.0 and m["t2i_r5"] == 1.0 and m["i2t_mean_rank"] == 2.0


def test_ties_are_pessimistic():
    # Every score is exactly 1 (rows normalise to 0.5s), so each query ties with all b candidates.
    b = 7
    ones = torch.ones(b, 4)
    t2i, i2t = retrieval_ranks(ones, ones)
    assert t2i.tolist() == [b] * b and i2t.tolist() == [b] * b
    m = retrieval_metrics(ones, ones)
    assert m["t2i_r1"] == 0.0 and m["i2t_r5"] == 0.0
    assert m["t2i_mean_rank"] == b and m["i2t_median_rank"] == b


def test_matches_definition_on_exact_scores_with_many_ties():
    image = signed_sparse_features(40, 6, seed=1)
    text = signed_sparse_features(40, 6, seed=2)
    text[::3] = image[::3]  # some true pairs are perfect matches that still tie with duplicates
    scores = (F.normalize(image, dim=1) @ F.normalize(text, dim=1).T).tolist()
    t2i, i2t = retrieval_ranks(image, text)
    expected_t2i, expected_i2t = reference_ranks(scores)
    assert t2i.tolist() == expected_t2i and i2t.tolist() == expected_i2t
    assert len(set(expected_t2i)) > 3  # the case is not degenerate


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
def test_chunking_matches_single_block(chunk_size):
    g = torch.Generator().manual_seed(4)
    cases = [(signed_sparse_features(37, 6, seed=5), signed_sparse_features(37, 6, seed=6)),
             (torch.randn(37, 5, generator=g), torch.randn(37, 5, generator=g))]
    for image, text in cases:
        whole = retrieval_ranks(image, text, chunk_size=10_000)
        chunked = retrieval_ranks(image, text, chunk_size=chunk_size)
        assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
        assert (retrieval_metrics(image, text, chunk_size=chunk_size)
                == retrieval_metrics(image, text, chunk_size=10_000))


def test_random_features_are_at_chance():
    b = 1000
    g = torch.Generator().manual_seed(7)
    m = retrieval_metrics(torch.randn(b, 32, generator=g), torch.randn(b, 32, generator=g),
                          chunk_size=256)
    for d in ("t2i", "i2t"):
        # Ranks are ~uniform on 1..b: R@1 ~ 1/b, R@10 ~ 10/b, mean and median ~ b/2.
        assert m[f"{d}_r1"] <= 0.01
        assert 0.002 <= m[f"{d}_r10"] <= 0.03
        assert 400 <= m[f"{d}_median_rank"] <= 600
        assert 420 <= m[f"{d}_mean_rank"] <= 580


@pytest.mark.parametrize("image, text, match", [
    (torch.randn(4, 3), torch.randn(5, 3), "same shape"),
    (torch.randn(4, 3), torch.randn(4, 2), "same shape"),
    (torch.randn(4), torch.randn(4), r"\(b, e\)"),
    (torch.randn(2, 4, 3), torch.randn(2, 4, 3), r"\(b, e\)"),
    (torch.randn(0, 3), torch.randn(0, 3), "empty"),
    (torch.randn(3, 0), torch.randn(3, 0), "empty"),
    (torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2), "NaN"),
])
def test_retrieval_rejects_bad_inputs(image, text, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(image, text)


@pytest.mark.parametrize("chunk_size", [0, -1, 1.5, True])
def test_retrieval_rejects_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_metrics(torch.eye(3), torch.eye(3), chunk_size=chunk_size)


# --- zero-shot ------------------------------------------------------------------------------

def hashed_encoder(e, calls):
    """A deterministic text encoder: each string maps to a fixed random vector whose norm
    depends on its length, so normalising before averaging changes the result."""
    def encode(texts):
        calls.append(list(texts))
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(zlib.crc32(t.encode()))
            rows.append(torch.randn(e, generator=g) * (1 + len(t)))
        return torch.stack(rows)
    return encode


def test_class_embeddings_average_normalised_templates():
    calls = []
    encode = hashed_encoder(8, calls)
    classes, templates = ["cat", "dog", "school bus"], ["a {}.", "a photo of a {}.", "{} art"]
    got = class_embeddings(encode, classes, templates)
    assert got.shape == (3, 8)
    assert calls == [[t.format(c) for t in templates] for c in classes]
    for row, c in zip(got, classes):
        units = [v / v.norm() for v in encode([t.format(c) for t in templates])]
        mean = sum(units) / len(units)
        torch.testing.assert_close(row, mean / mean.norm())
        raw = sum(encode([t.format(c) for t in templates]))
        assert not torch.allclose(row, raw / raw.norm(), atol=1e-3)  # per-template norm matters


def test_class_embeddings_single_template_is_the_unit_encoding():
    encode = hashed_encoder(5, [])
    got = class_embeddings(encode, ["x", "y"], ("a {}.",))
    torch.testing.assert_close(got, F.normalize(encode(["a x.", "a y."]), dim=1))


def test_class_embeddings_rejects_bad_inputs():
    encode = hashed_encoder(4, [])
    with pytest.raises(TypeError, match="single str"):
        class_embeddings(encode, ["cat"], "a {}.")
    with pytest.raises(ValueError, match="classes is empty"):
        class_embeddings(encode, [], ["a {}."])
    with pytest.raises(ValueError, match="templates is empty"):
        class_embeddings(encode, ["cat"], [])
    with pytest.raises(ValueError, match="no '\\{\\}' field"):
        class_embeddings(encode, ["cat"], ["a {}.", "a photo."])
    with pytest.raises(ValueError, match="encode_text must return"):
        class_embeddings(lambda texts: torch.zeros(len(texts) + 1, 4), ["cat"], ["a {}."])


def test_zero_shot_accuracy_on_constructed_case():
    classes = torch.eye(3) * torch.tensor([[1.0], [5.0], [0.2]])  # scales must not matter
    image = torch.tensor([[2.0, 0.1, 0.0],    # class 0
                          [0.0, 1.0, 0.3],    # class 1
                          [0.1, 0.0, 0.4],    # class 2
                          [0.9, 1.0, 0.0],    # class 1
                          [1.0, 1.0, 0.0]])   # exact tie of 0 and 1
    assert zero_shot_accuracy(image, classes, torch.tensor([0, 1, 2, 1, 0])) == 4 / 5
    assert zero_shot_accuracy(image, classes, torch.tensor([0, 1, 2, 0, 1])) == 3 / 5
    assert zero_shot_accuracy(image, classes, torch.tensor([1, 2, 0, 0, 2])) == 0.0


def test_zero_shot_ties_count_as_wrong():
    # Every image ties between classes 0 and 1; argmax would pick 0 and reward label 0.
    image = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    assert zero_shot_accuracy(image, torch.eye(2), torch.tensor([0, 0])) == 0.0
    assert zero_shot_accuracy(image, torch.eye(2), torch.tensor([1, 1])) == 0.0


def test_zero_shot_rejects_bad_inputs():
    image, classes = torch.randn(4, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="labels must lie"):
        zero_shot_accuracy(image, classes, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="labels must lie"):
        zero_shot_accuracy(image, classes, torch.tensor([0, -1, 1, 0]))
    with pytest.raises(ValueError, match="labels must have shape"):
        zero_shot_accuracy(image, classes, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="share e"):
        zero_shot_accuracy(image, torch.randn(2, 4), torch.tensor([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="empty"):
        zero_shot_accuracy(torch.randn(0, 3), classes, torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match="long"):
        zero_shot_accuracy(image, classes, torch.tensor([0.0, 1.0, 1.0, 0.0]))


# --- word-order probe -----------------------------------------------------------------------

def test_word_order_accuracy_counts_ties_as_half():
    pos = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5])
    neg = torch.tensor([0.0, 2.0, 5.0, 4.0, 0.4])
    assert word_order_accuracy(pos, neg) == (1 + 0.5 + 0 + 0.5 + 1) / 5
    assert word_order_accuracy(pos, pos.clone()) == 0.5
    assert word_order_accuracy(pos, pos - 1) == 1.0
    assert word_order_accuracy(pos, pos + 1) == 0.0


def test_word_order_accuracy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        word_order_accuracy(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match=r"\(m,\)"):
        word_order_accuracy(torch.ones(3, 1), torch.ones(3, 1))
    with pytest.raises(ValueError, match="empty"):
        word_order_accuracy(torch.ones(0), torch.ones(0))


# --- bag-of-bytes baseline ------------------------------------------------------------------

WORDS = ["red", "blue", "dog", "cat", "on", "the", "under", "sofa", "big", "small", "runs",
         "sleeps", "a", "green", "bird", "tree", "car", "near", "two", "zebra"]


def random_captions(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


def word_shuffled(caption, rng):
    words = caption.split()
    while len(set(words)) > 1:
        shuffled = rng.sample(words, len(words))
        if shuffled != words:
            return " ".join(shuffled)
    return caption


def correlated_data(captions, e, seed):
    """Images as a noisy linear function of the captions' byte histograms."""
    tokens, mask = ByteTokenizer().batch_encode(captions, max_length=64)
    hist = BagOfBytesBaseline().histograms(tokens, mask)
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(256, e, generator=g)
    images = hist @ mixing + 0.05 * torch.randn(len(captions), e, generator=g)
    return images, tokens, mask, mixing


def test_histograms_ignore_specials_and_padding():
    tokens, mask = ByteTokenizer().batch_encode(["abba", "c"], max_length=16)
    hist = BagOfBytesBaseline().histograms(tokens, mask)
    assert hist.shape == (2, 256)
    expected = torch.zeros(2, 256)
    expected[0, ord("a")], expected[0, ord("b")] = 2, 2
    expected[1, ord("c")] = 1
    torch.testing.assert_close(hist, F.normalize(expected, dim=1))

    # Masked-out positions do not count even when they hold bytes; nor do ids >= 256 that the
    # mask keeps (BOS/EOS are inside the mask).
    tokens = torch.tensor([[256, ord("x"), ord("y"), 257, ord("z")]])
    mask = torch.tensor([[True, True, True, True, False]])
    hist = BagOfBytesBaseline().histograms(tokens, mask)
    assert hist[0].nonzero().flatten().tolist() == [ord("x"), ord("y")]

    only_specials = BagOfBytesBaseline().histograms(torch.tensor([[256, 257, 258]]),
                                                    torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(only_specials, torch.zeros(1, 256))


def test_probe_accuracy_is_exactly_chance():
    train = random_captions(300, seed=0)
    images, tokens, mask, _ = correlated_data(train, e=24, seed=1)
    baseline = BagOfBytesBaseline().fit(images, tokens, mask)

    rng = random.Random(2)
    probe = random_captions(100, seed=3)
    negatives = [word_shuffled(c, rng) for c in probe]
    assert sum(n != c for n, c in zip(negatives, probe)) > 90
    probe_images, pos_tokens, pos_mask, _ = correlated_data(probe, e=24, seed=1)
    neg_tokens, neg_mask = ByteTokenizer().batch_encode(negatives, max_length=64)

    pos = baseline.score(probe_images, pos_tokens, pos_mask)
    neg = baseline.score(probe_images, neg_tokens, neg_mask)
    assert pos.shape == (100,)
    assert pos.unique().numel() > 50  # a real model, not a constant
    assert word_order_accuracy(pos, neg) == 0.5


def test_fitted_baseline_retrieves_better_than_chance():
    images, tokens, mask, _ = correlated_data(random_captions(400, seed=10), e=32, seed=11)
    baseline = BagOfBytesBaseline().fit(images, tokens, mask)
    test_images, test_tokens, test_mask, _ = correlated_data(random_captions(200, seed=12),
                                                             e=32, seed=11)
    m = retrieval_metrics(test_images, baseline.text_features(test_tokens, test_mask))
    # Chance is R@1 = 1/200, R@10 = 1/20 and mean rank ~100. Captions drawn from 20 words share
    # many bytes, so the histograms are far from one-hot and perfect retrieval is not expected.
    for d in ("t2i", "i2t"):
        assert m[f"{d}_r1"] > 0.1 and m[f"{d}_r10"] > 0.5 and m[f"{d}_mean_rank"] < 25

    # Same images against captions the map was not tied to: back at chance.
    unrelated = baseline.text_features(*ByteTokenizer().batch_encode(random_captions(200, 99), 64))
    assert retrieval_metrics(test_images, unrelated)["t2i_r1"] < 0.05

    # The matched caption outscores a caption of a different image for most images.
    wrong = baseline.score(test_images, test_tokens.roll(1, 0), test_mask.roll(1, 0))
    assert word_order_accuracy(baseline.score(test_images, test_tokens, test_mask), wrong) > 0.8


def test_fit_solves_the_ridge_normal_equations():
    images, tokens, mask, _ = correlated_data(random_captions(50, seed=20), e=6, seed=21)
    baseline = BagOfBytesBaseline(ridge=0.3).fit(images, tokens, mask)
    x = images.double()
    h = baseline.histograms(tokens, mask).double()
    # Gradient of ||XW - H||^2 + ridge ||W||^2 vanishes at the fitted W.
    grad = x.T @ (x @ baseline.weight.double() - h) + 0.3 * baseline.weight.double()
    assert grad.abs().max() < 1e-4
    assert baseline.weight.shape == (6, 256)
    scores = baseline.score(images, tokens, mask)
    expected = ((images @ baseline.weight) * baseline.histograms(tokens, mask)).sum(1)
    torch.testing.assert_close(scores, expected)


def test_baseline_rejects_bad_inputs():
    tokens, mask = ByteTokenizer().batch_encode(["a b", "c d"], max_length=8)
    baseline = BagOfBytesBaseline()
    with pytest.raises(ValueError, match="not fitted"):
        baseline.score(torch.randn(2, 3), tokens, mask)
    with pytest.raises(ValueError, match="not fitted"):
        baseline.text_features(tokens, mask)
    with pytest.raises(ValueError, match="b = 3 rows"):
        baseline.fit(torch.randn(3, 4), tokens, mask)
    baseline.fit(torch.randn(2, 4), tokens, mask)
    with pytest.raises(ValueError, match="e = 4"):
        baseline.score(torch.randn(2, 5), tokens, mask)
    with pytest.raises(ValueError, match="must match tokens"):
        baseline.histograms(tokens, mask[:, :-1])
    with pytest.raises(ValueError, match=r"\(b, l\)"):
        baseline.histograms(tokens[0], mask[0])
    with pytest.raises(ValueError, match="empty"):
        baseline.histograms(tokens[:0], mask[:0])
    with pytest.raises(ValueError, match="non-negative"):
        baseline.histograms(-tokens, mask)
    with pytest.raises(ValueError, match="ridge"):
        BagOfBytesBaseline(ridge=0.0)
