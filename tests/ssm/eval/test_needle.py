"""The needle test's bookkeeping, with encoders whose answers are known."""
import pytest
import torch

from ssm.data.dense import NEEDLE_ATTRIBUTES, DenseScenes
from ssm.data.scenes import SyntheticScenes
from ssm.eval.needle import CHANCE, length_bin, needle_test


def _oracle(dataset, n, sees_attributes):
    """Text features (1, 0); an image scores 1 when it is a true scene, or a distractor
    whose changed attribute the fake encoder cannot see."""
    truths = [dataset.needle(i) for i in range(n)]
    blind_spots = [t["distractors"][p][a] for t in truths for p in t["distractors"]
                   for a in NEEDLE_ATTRIBUTES if a not in sees_attributes]

    def encode_images(images):
        feats = []
        for image in images:
            looks_true = any(torch.equal(image, t["image"]) for t in truths) or any(
                torch.equal(image, d) for d in blind_spots)
            feats.append([1.0, 0.0] if looks_true else [0.0, 1.0])
        return torch.tensor(feats)
    return (lambda texts: torch.tensor([[1.0, 0.0]] * len(texts))), encode_images


def test_a_perfect_reader_scores_one_and_records_every_query():
    ds = DenseScenes("val", 6, image_size=32)
    text, images = _oracle(ds, 4, set(NEEDLE_ATTRIBUTES))
    metrics, records = needle_test(ds, 4, text, images, batch_size=3)
    assert metrics["needle_acc"] == 1.0 and metrics["needle_queries"] == 12
    assert metrics["needle_chance"] == CHANCE == 0.2
    assert {(r["index"], r["position"]) for r in records} == {
        (i, p) for i in range(4) for p in ("first", "middle", "last")}
    for r in records:
        caption = ds.describe(r["index"])["caption"]
        assert r["bytes"] == len(caption)
        assert caption[r["needle_byte"]:].startswith("there is a ")


def test_a_colour_blind_reader_fails_every_query_and_only_the_colour_pairs():
    """Ties count against the model: a distractor that scores like the true image wins."""
    ds = DenseScenes("val", 6, image_size=32)
    text, images = _oracle(ds, 3, {"shape", "size", "position"})
    metrics, _ = needle_test(ds, 3, text, images)
    assert metrics["needle_acc"] == 0.0
    assert metrics["needle_acc_colour"] == 0.0 and metrics["needle_acc_shape"] == 1.0
    assert metrics["needle_acc_position"] == 1.0


def test_needs_dense_scenes():
    with pytest.raises(TypeError, match="dense scenes"):
        needle_test(SyntheticScenes("val", 4), 2, None, None)


def test_length_bins():
    assert [length_bin(b) for b in (200, 400, 401, 1999, 2500)] == [
        "0-400", "0-400", "400-700", "1400-2000", ">2000"]
