"""The blind baseline: a caption-only n-gram model fitted on training captions only, able
to pass a biased probe and held at chance by an unbiased one."""
import math
import random

import pytest

from ssm.data.dense import DenseScenes
from ssm.data.scenes import SyntheticScenes
from ssm.eval.blind import (NGramCaptionModel, bias_verdict, blind_outcomes,
                            fit_on_training_captions, words)


def test_it_prefers_what_training_captions_say():
    model = NGramCaptionModel().fit(["a small red circle", "a large blue square"] * 20)
    assert model.log_prob("a small red circle") > model.log_prob("a small blue circle")
    assert model.prefers_first("a large blue square", "a large red square") == 1.0
    assert model.prefers_first("a small red circle", "a small red circle") == 0.5
    # An unseen word is the unknown word, not an error.
    assert math.isfinite(model.log_prob("a purple hexagon"))


def test_probabilities_sum_to_one_over_the_vocabulary():
    model = NGramCaptionModel(order=3).fit(["a b c", "a c b", "b a"])
    for history in [("<s>", "<s>"), ("<s>", "a"), ("a", "b"), ("c", "c")]:
        total = sum(model._prob(history, w) for w in model.vocabulary)
        assert total == pytest.approx(1.0, abs=1e-9), history


def test_a_biased_probe_is_solved_blind_and_an_unbiased_one_is_not():
    """Training captions never pair "star" with "purple": a negative that does gives
    itself away without the image. Swapping two colours both seen with both shapes does not."""
    rng = random.Random(0)
    colours, shapes = ["red", "blue", "green", "purple"], ["circle", "square", "star"]
    train = [f"a small {c} {s} left of a large {c2} {s2}."
             for c, s, c2, s2 in ((rng.choice(colours), rng.choice(shapes),
                                   rng.choice(colours), rng.choice(shapes)) for _ in range(3000))
             if "purple star" not in f"{c} {s}" and "purple star" not in f"{c2} {s2}"]
    model = NGramCaptionModel().fit(train)
    biased = [(f"a small red star left of a large blue circle.",
               f"a small purple star left of a large blue circle.")] * 10
    fair = []
    for _ in range(400):
        c, c2 = rng.sample(["red", "blue", "green"], 2)
        s, s2 = rng.choice(shapes[:2]), rng.choice(shapes[:2])
        fair.append((f"a small {c} {s} left of a large {c2} {s2}.",
                     f"a small {c2} {s} left of a large {c} {s2}."))
    assert sum(blind_outcomes(model, biased)) / len(biased) == 1.0
    fair_acc = sum(blind_outcomes(model, fair)) / len(fair)
    assert abs(fair_acc - 0.5) < 0.1


def test_fitted_on_the_training_split_only():
    with pytest.raises(ValueError, match="training split only"):
        fit_on_training_captions(SyntheticScenes("val", 10))
    train = SyntheticScenes("train", 50, seed=2)
    model = fit_on_training_captions(train, n_captions=30)
    reference = NGramCaptionModel().fit(train.describe(i)["caption"] for i in range(30))
    assert model.n_captions == 30 and model.unigrams == reference.unigrams
    assert model.counts == reference.counts


def test_fitting_reads_captions_without_rendering(monkeypatch):
    """Only describe() is called: no image is rendered, and nothing from another split."""
    train = DenseScenes("train", 20)
    calls = []
    monkeypatch.setattr(type(train), "__getitem__", lambda self, i: calls.append(i))
    original = DenseScenes.describe
    seen = []
    monkeypatch.setattr(DenseScenes, "describe",
                        lambda self, i: seen.append((self.split, i)) or original(self, i))
    fit_on_training_captions(train, n_captions=8)
    assert calls == [] and seen == [("train", i) for i in range(8)]


def test_bias_verdict():
    assert bias_verdict(0.75, 0.70) == "biased"
    assert bias_verdict(0.58, 0.52) == "ok"        # above chance, but not by the margin
    assert bias_verdict(0.65, 0.45) == "ok"        # the interval reaches chance
    assert bias_verdict(math.nan, math.nan) == "n/a"


def test_words_and_argument_checks():
    assert words("There are 5 objects.") == ["there", "are", "5", "objects", "."]
    with pytest.raises(ValueError, match="order"):
        NGramCaptionModel(order=0)
    with pytest.raises(ValueError, match="empty"):
        NGramCaptionModel().fit([])
    with pytest.raises(ValueError, match="not fitted"):
        NGramCaptionModel().log_prob("a")
