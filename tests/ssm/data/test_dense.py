"""Dense scenes: deterministic, 200-2,000 bytes, parsed back to their scene; the needle
test's distractors differ in exactly one attribute of one object; the CLIP byte budget."""
import random
from dataclasses import asdict

import pytest
import torch

from ssm.data.captions import region, relation
from ssm.data.dense import (DETAILS, NEEDLE_ATTRIBUTES, NEEDLE_POSITIONS, DenseScenes,
                            caption_byte_bounds, clip_byte_budget, clip_tokens, dense_caption,
                            needle_distractors, needle_index, paragraph_spans,
                            parse_dense_caption, scene_parse)
from ssm.data.scenes import SceneObject
from ssm.data.sources import DenseScenesData
from run_config import CONF


@pytest.mark.parametrize("detail", DETAILS)
def test_items_are_deterministic_per_index_and_seed(detail):
    a, b = DenseScenes("val", 20, seed=3, detail=detail), DenseScenes("val", 20, seed=3, detail=detail)
    for i in (0, 7, 19):
        x, y = a[i], b[i]
        assert x["caption"] == y["caption"] and x["objects"] == y["objects"]
        assert torch.equal(x["image"], y["image"])
        assert a.describe(i) == {k: v for k, v in x.items() if k != "image"}
    other_seed = DenseScenes("val", 20, seed=4, detail=detail)
    assert [a.describe(i)["caption"] for i in range(5)] != [
        other_seed.describe(i)["caption"] for i in range(5)]
    train = DenseScenes("train", 20, seed=3, detail=detail)
    assert a.describe(0)["caption"] != train.describe(0)["caption"]  # splits draw apart


@pytest.mark.parametrize("detail", DETAILS)
def test_captions_parse_back_to_their_scene(detail):
    ds = DenseScenes("val", 150, seed=1, detail=detail)
    for i in range(150):
        item = ds.describe(i)
        objects, order = item["objects"], item["order"]
        parsed = parse_dense_caption(item["caption"])
        assert parsed == scene_parse(objects, order, detail)
        # ... and what it says is the scene: count, attributes, region, centre, relation.
        assert parsed.count == len(objects) and 4 <= len(objects) <= 12
        for k, said in enumerate(parsed.objects):
            o = objects[order[k]]
            assert (said.size, said.colour, said.shape) == (o.size, o.colour, o.shape)
            assert said.region == region(o)
            if detail >= 2:
                assert abs(said.centre[0] - 100 * o.x) <= 0.5 and abs(said.centre[1] - 100 * o.y) <= 0.5
            if detail >= 3:
                nxt = objects[order[(k + 1) % len(order)]]
                assert said.relation == (relation(o, nxt), (nxt.size, nxt.colour, nxt.shape))
        assert dense_caption(objects, order, detail) == item["caption"]


@pytest.mark.parametrize("detail", DETAILS)
def test_caption_lengths_stay_within_200_and_2000_bytes(detail):
    low, _ = caption_byte_bounds(4, detail)
    _, high = caption_byte_bounds(12, detail)
    assert 200 <= low and high <= 2000  # the grammar's extremes, from the vocabulary
    lengths = [len(DenseScenes("train", 300, detail=detail).describe(i)["caption"])
               for i in range(300)]
    assert low <= min(lengths) and max(lengths) <= high
    assert all(len(c.encode()) == len(c) for c in [DenseScenes("val", 3).describe(0)["caption"]])


def test_longer_detail_means_longer_captions_of_the_same_scene():
    lengths = [len(DenseScenes("val", 5, detail=d).describe(2)["caption"]) for d in DETAILS]
    assert lengths == sorted(lengths) and len(set(lengths)) == 3
    scenes = [DenseScenes("val", 5, detail=d).describe(2)["objects"] for d in DETAILS]
    assert scenes[0] == scenes[1] == scenes[2]  # detail changes the words, not the scene


def test_parse_rejects_text_outside_the_grammar():
    caption = DenseScenes("val", 2).describe(0)["caption"]
    with pytest.raises(ValueError, match="dense header"):
        parse_dense_caption("a photo of a cat")
    with pytest.raises(ValueError, match="at byte"):
        parse_dense_caption(caption + " and a dog.")
    with pytest.raises(ValueError, match="at byte"):
        parse_dense_caption(caption.replace("there is a", "there is an", 1))


def test_paragraph_spans_follow_the_description_order():
    item = DenseScenes("val", 3, detail=3).describe(1)
    spans = paragraph_spans(item["caption"])
    assert len(spans) == len(item["objects"])
    for (start, end), index in zip(spans, item["order"]):
        o = item["objects"][index]
        assert item["caption"][start:end].startswith(f"there is a {o.size} {o.colour} {o.shape}")


@pytest.mark.parametrize("seed", range(5))
def test_needle_distractors_differ_in_exactly_one_attribute_of_one_object(seed):
    ds = DenseScenes("val", 10, seed=seed)
    item = ds.describe(seed)
    objects, rng = item["objects"], random.Random(seed)
    for position in NEEDLE_POSITIONS:
        k = needle_index(item["order"], position)
        for attribute, scene in needle_distractors(objects, k, rng).items():
            changed = [j for j, (a, b) in enumerate(zip(objects, scene)) if a != b]
            assert changed == [k]
            before, after = asdict(objects[k]), asdict(scene[k])
            fields = {f for f in before if before[f] != after[f]}
            if attribute == "position":
                assert fields and fields <= {"x", "y"} and region(scene[k]) != region(objects[k])
            else:
                assert fields == {attribute}
            # The caption of the true scene is false for the distractor.
            assert scene_parse(scene, item["order"], ds.detail) != parse_dense_caption(item["caption"])


def test_needle_positions_pick_first_middle_and_last_paragraph():
    order = (5, 2, 0, 3, 1, 4)
    assert [needle_index(order, p) for p in NEEDLE_POSITIONS] == [5, 3, 4]
    with pytest.raises(ValueError, match="position"):
        needle_index(order, "second")


def test_needle_item_renders_every_candidate():
    ds = DenseScenes("val", 4, image_size=32)
    test = ds.needle(2)
    assert test["caption"] == ds.describe(2)["caption"]
    assert torch.equal(test["image"], ds[2]["image"])
    for position in NEEDLE_POSITIONS:
        images = test["distractors"][position]
        assert list(images) == list(NEEDLE_ATTRIBUTES)
        for image in images.values():
            assert image.shape == (3, 32, 32) and not torch.equal(image, test["image"])
    again = ds.needle(2)
    assert all(torch.equal(again["distractors"][p][a], test["distractors"][p][a])
               for p in NEEDLE_POSITIONS for a in NEEDLE_ATTRIBUTES)


def test_clip_byte_budget_is_the_configured_window():
    """transformer_clip.yaml states 343 tokens: CLIP's 75 text tokens of our captions."""
    captions = [DenseScenes("train", 300, detail=d).describe(i)["caption"]
                for d in DETAILS for i in range(300)]
    assert clip_byte_budget(captions) == 343
    assert "context_length: 343" in open(CONF + "/model/text_encoder/transformer_clip.yaml").read()
    assert clip_tokens("there is a small red star at the top.") == [
        "there", "is", "a", "small", "red", "star", "at", "the", "top", "."]
    # Two words and a mark in 6 bytes: 2 bytes per token, 3 text tokens in a 5-token window.
    assert clip_byte_budget(["ab cd."], clip_context=5) == 2 + 3 * 2
    with pytest.raises(ValueError, match="no words"):
        clip_byte_budget([" "])


@pytest.mark.parametrize("kwargs,words", [
    (dict(min_objects=3), "min_objects"), (dict(max_objects=13), "max_objects"),
    (dict(min_objects=8, max_objects=6), "min_objects"), (dict(detail=4), "detail"),
])
def test_bad_settings_are_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        DenseScenes("train", 10, **kwargs)


def test_data_source_refuses_a_budget_that_would_cut_captions():
    with pytest.raises(ValueError, match="max_length"):
        DenseScenesData(max_length=1024, detail=3)
    data = DenseScenesData(train_size=10, val_size=4, zero_shot_size=0, detail=1, max_length=704)
    assert data.val_dataset().split == "val" and data.zero_shot_dataset() is None
    assert data.train_dataset().detail == 1


def test_scene_parse_checks_its_arguments():
    objects = (SceneObject("star", "red", "small", 0.2, 0.2),)
    with pytest.raises(ValueError, match="permutation"):
        scene_parse(objects, (1,), 1)
    with pytest.raises(ValueError, match="detail"):
        scene_parse(objects, (0,), 0)
