"""Synthetic scenes: rendering, determinism, held-out pairs, captions, negatives, speed.

Captions are checked by parsing them here, independently of ssm.data.captions: every
"A <relation> B" must hold for the objects A and B, and every absolute position must match
the grid of thirds; negatives must fail that same check.
"""
import itertools
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from ssm.data.scenes import (BACKGROUND, COLOURS, SHAPES, SIZES, ZERO_SHOT_TEMPLATES, SceneObject,
                             SyntheticScenes, caption, held_out_combinations,
                             render, word_order_negatives, zero_shot_set)

Obj = SceneObject
ROOT = Path(__file__).resolve().parents[3]
DESC = rf"({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})"
TOKEN = re.compile(rf"\b(?:(?P<desc>{DESC})|(?P<rel>to the left of|to the right of|left of|"
                   rf"right of|above|below))\b")
REGION = re.compile(rf"\ba {DESC} (?:is )?(in the top left|at the top|in the top right|on the left|"
                    rf"near the centre|on the right|in the bottom left|at the bottom|"
                    rf"in the bottom right)\b")
HOLDS = {"left": lambda a, b: a.x < b.x, "right": lambda a, b: a.x > b.x,
         "above": lambda a, b: a.y < b.y, "below": lambda a, b: a.y > b.y}
ROWS = {"top": 0, "bottom": 2}
COLUMNS = {"left": 0, "right": 2}


def third(v):
    return 0 if v < 1 / 3 else (2 if v > 2 / 3 else 1)


def claimed_cell(phrase):
    if phrase == "near the centre":
        return 1, 1
    words = phrase.split()[1:]
    row = next((ROWS[w] for w in words if w in ROWS), 1)
    column = next((COLUMNS[w] for w in words if w in COLUMNS), 1)
    return row, column


def statements(text):
    """(relations, positions): [(desc, key, desc)] and [(desc, (row, col))] the text asserts."""
    tokens = [(m["rel"] and "rel", m["rel"] or m["desc"]) for m in TOKEN.finditer(text)]
    relations = []
    for (k1, a), (k2, r), (k3, b) in zip(tokens, tokens[1:], tokens[2:]):
        if (k1, k2, k3) == (None, "rel", None):
            relations.append((a, r.split()[-2] if r.endswith(" of") else r, b))
    positions = [(" ".join(m.groups()[:3]), claimed_cell(m.group(4)))
                 for m in REGION.finditer(text)]
    return relations, positions


def describe(obj):
    return f"{obj.size} {obj.colour} {obj.shape}"


def could_be_true(text, objects):
    """Whether each statement, read on its own, is met by some objects with those descriptions."""
    named = {m["desc"] for m in TOKEN.finditer(text) if m["desc"]}
    if any(not [o for o in objects if describe(o) == d] for d in named):
        return False
    relations, positions = statements(text)
    for a, key, b in relations:
        if not any(x is not y and HOLDS[key](x, y) for x in objects for y in objects
                   if describe(x) == a and describe(y) == b):
            return False
    return all(any(describe(o) == d and (third(o.y), third(o.x)) == cell for o in objects)
               for d, cell in positions)


def val_items(n=200, **kwargs):
    ds = SyntheticScenes("val", size=n, image_size=16, **kwargs)
    return [ds[i] for i in range(n)]


# ---------------------------------------------------------------- vocabulary and rendering

def test_vocabulary_is_well_separated():
    assert len(SHAPES) >= 5 and len(set(SHAPES)) == len(SHAPES) and SIZES == ("small", "large")
    assert len(COLOURS) >= 6
    rgb = torch.tensor(list(COLOURS.values()) + [BACKGROUND])
    assert rgb.min() >= 0 and rgb.max() <= 1
    distances = torch.cdist(rgb, rgb) + torch.eye(len(rgb)) * 10
    assert distances.min() > 0.3
    # Attribute words are what captions and probes share: no word may belong to two lists.
    words = [*SHAPES, *COLOURS, *SIZES]
    assert len(set(words)) == len(words) and all(" " not in w for w in words)


def test_render_shape_dtype_range():
    objects = [Obj("star", "red", "large", 0.3, 0.3), Obj("cross", "white", "small", 0.75, 0.7)]
    for size in (16, 64):
        image = render(objects, image_size=size)
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
    empty = render([], image_size=32, background=(0.1, 0.2, 0.3))
    assert torch.equal(empty, torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1).expand(3, 32, 32))


@pytest.mark.parametrize("shape", SHAPES)
def test_colour_at_centre_pixel(shape):
    rng = random.Random(shape)
    for colour, rgb in COLOURS.items():
        x, y = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75)
        image = render([Obj(shape, colour, rng.choice(SIZES), x, y)], image_size=64)
        pixel = image[:, int(y * 64), int(x * 64)]
        torch.testing.assert_close(pixel, torch.tensor(rgb), atol=1e-6, rtol=0)
        # and the corner, far from the object, keeps the background
        torch.testing.assert_close(image[:, 0, 0], torch.tensor(BACKGROUND), atol=1e-6, rtol=0)


def mask(objects, size=64):
    return (render(objects, size) - torch.tensor(BACKGROUND).view(3, 1, 1)).abs().sum(0) > 0.25


def test_shapes_have_different_masks():
    for size in SIZES:
        masks = {s: mask([Obj(s, "red", size, 0.5, 0.5)]) for s in SHAPES}
        for a, b in itertools.combinations(SHAPES, 2):
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, (size, a, b, float(iou))
    for s in SHAPES:
        small, large = (mask([Obj(s, "red", z, 0.5, 0.5)]).sum() for z in SIZES)
        assert large > 2 * small


def test_position_moves_the_object():
    for shape in SHAPES:
        for x, y in [(0.25, 0.3), (0.7, 0.35), (0.5, 0.75)]:
            m = mask([Obj(shape, "blue", "large", x, y)])
            rows, cols = torch.nonzero(m, as_tuple=True)
            # Centroid of the drawn pixels, in [0, 1]; the triangle's centroid is its centre too.
            assert abs((cols.float().mean() + 0.5) / 64 - x) < 0.03
            assert abs((rows.float().mean() + 0.5) / 64 - y) < 0.03


def test_render_rejects_unknown_attributes():
    for bad in [Obj("blob", "red", "small", 0.5, 0.5), Obj("circle", "mauve", "small", 0.5, 0.5),
                Obj("circle", "red", "huge", 0.5, 0.5)]:
        with pytest.raises(ValueError):
            render([bad])


# ---------------------------------------------------------------- determinism

def same_item(a, b):
    return (torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
            and a["negatives"] == b["negatives"] and a["objects"] == b["objects"])


def test_items_are_deterministic_in_any_order():
    for split in ("train", "val"):
        first, second = (SyntheticScenes(split, size=50, seed=3) for _ in range(2))
        forward = [first[i] for i in range(20)]
        backward = {i: second[i] for i in reversed(range(20))}
        assert all(same_item(forward[i], backward[i]) for i in range(20))
        assert same_item(first[7], first[7])
        other = SyntheticScenes(split, size=50, seed=4)
        assert sum(same_item(first[i], other[i]) for i in range(20)) < 3
    train, val = SyntheticScenes("train", size=20), SyntheticScenes("val", size=20)
    assert sum(train[i]["caption"] == val[i]["caption"] for i in range(20)) < 3


def test_items_are_the_same_in_another_process():
    # A fresh interpreter with another hash seed: catches seeding from Python's salted hash().
    script = ("import json; from ssm.data.scenes import SyntheticScenes;"
              "d = SyntheticScenes('val', seed=5);"
              "print(json.dumps([[d[i]['caption'], d[i]['image'].sum().item()]"
              "                  for i in (0, 9, 4)]))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    d = SyntheticScenes("val", seed=5)
    assert json.loads(out) == [[d[i]["caption"], d[i]["image"].sum().item()] for i in (0, 9, 4)]


# ---------------------------------------------------------------- held-out combinations

def test_held_out_pairs_never_in_train_and_often_in_val():
    held = held_out_combinations(0.2)
    pairs = len(SHAPES) * len(COLOURS)
    assert 0.15 * pairs <= len(held) <= 0.25 * pairs
    assert held_out_combinations(0.0) == frozenset() and held_out_combinations(0.1) < held
    train = SyntheticScenes("train", size=2000, image_size=16)
    seen = {(o.shape, o.colour) for i in range(len(train)) for o in train[i]["objects"]}
    assert not seen & held
    assert {s for s, _ in seen} == set(SHAPES) and {c for _, c in seen} == set(COLOURS)
    val = val_items(400)
    with_held = sum(any((o.shape, o.colour) in held for o in it["objects"]) for it in val)
    assert 0.35 < with_held / len(val) < 0.65
    assert SyntheticScenes("val", size=1, seed=9).held_out == held  # same pairs for any seed


# ---------------------------------------------------------------- captions

@pytest.mark.parametrize("verbosity", [0, 1, 2])
def test_captions_name_every_object_and_tell_the_truth(verbosity):
    checked = Counter()
    for item in val_items(150, min_objects=1, max_objects=4, verbosity=verbosity):
        text, objects = item["caption"], item["objects"]
        for obj in objects:
            assert re.search(rf"\b{describe(obj)}\b", text), (text, obj)
        relations, positions = statements(text)
        counts = Counter(describe(o) for o in objects)
        by_desc = {describe(o): o for o in objects}
        for a, key, b in relations:
            if counts[a] == counts[b] == 1:  # unambiguous: check the exact pair
                first, second = by_desc[a], by_desc[b]
                assert HOLDS[key](first, second), (text, objects)
                # and the relation names the axis along which they are further apart
                dx, dy = abs(first.x - second.x), abs(first.y - second.y)
                assert dx >= dy if key in ("left", "right") else dy >= dx, (text, objects)
                checked["relation"] += 1
        for d, cell in positions:
            if counts[d] == 1:
                assert (third(by_desc[d].y), third(by_desc[d].x)) == cell, (text, objects)
                checked["position"] += 1
        if len(objects) >= 2:
            assert len(relations) >= len(objects) - 1, text
        if verbosity == 2 or (verbosity == 1 and len(objects) == 1):
            assert len(positions) == len(objects), text
        assert could_be_true(text, objects)
    assert checked["relation"] > 100 and (verbosity == 0 or checked["position"] > 20)


def test_verbosity_two_lists_every_pair():
    objects = (Obj("circle", "red", "small", 0.2, 0.2), Obj("triangle", "blue", "large", 0.7, 0.3),
               Obj("star", "green", "small", 0.4, 0.8))
    relations, positions = statements(caption(objects, random.Random(0), verbosity=2))
    assert {frozenset((a, b)) for a, _, b in relations} == {
        frozenset((describe(a), describe(b))) for a, b in itertools.combinations(objects, 2)}
    assert sorted(positions) == sorted([("small red circle", (0, 0)),
                                        ("large blue triangle", (0, 2)),
                                        ("small green star", (2, 1))])


def test_caption_lengths_grow_with_verbosity_and_objects():
    mean = {v: sum(len(it["caption"]) for it in val_items(40, max_objects=3, verbosity=v)) / 40
            for v in (0, 1, 2)}
    assert mean[0] < mean[1] < mean[2]
    long = SyntheticScenes("train", size=5, image_size=16, min_objects=12, max_objects=12,
                           verbosity=2)
    lengths = [len(long[i]["caption"].encode()) for i in range(5)]
    assert min(lengths) >= 1000, lengths
    assert all(len(long[i]["objects"]) == 12 for i in range(5))


def test_most_val_captions_are_distinct():
    captions = [it["caption"] for it in val_items(500)]
    distinct = len(set(captions)) / len(captions)
    print(f"distinct val captions: {distinct:.1%}")
    assert distinct >= 0.8


def test_sentence_frames_vary_but_attribute_words_do_not():
    frames = Counter()
    for item in val_items(200):
        text = REGION.sub("D", item["caption"])
        text = re.sub(rf"\b{DESC}\b", "D", text)
        frames[re.sub(r"\bD\b.*\bD\b|\bD\b", "...", text)] += 1
    assert len(frames) >= 4 and max(frames.values()) < 0.6 * 200, frames
    # the same scene under different rngs: frames change, object words stay
    objects = (Obj("cross", "white", "small", 0.2, 0.3),)
    texts = {caption(objects, random.Random(seed)) for seed in range(30)}
    assert len(texts) >= 4 and all("small white cross" in t for t in texts)


def test_caption_rejects_bad_arguments():
    with pytest.raises(ValueError):
        caption([], random.Random(0))
    with pytest.raises(ValueError):
        caption([Obj("circle", "red", "small", 0.5, 0.5)], random.Random(0), verbosity=3)


# ---------------------------------------------------------------- word-order negatives

@pytest.mark.parametrize("verbosity", [0, 1, 2])
def test_negatives_reorder_the_words_of_the_caption_and_are_false(verbosity):
    made = 0
    for item in val_items(150, min_objects=1, max_objects=3, verbosity=verbosity):
        text, objects = item["caption"], item["objects"]
        distinct = len({describe(o) for o in objects})
        if distinct < 2:
            assert item["negatives"] == [], text
        for negative in item["negatives"]:
            assert negative != text and Counter(negative.split()) == Counter(text.split())
            assert not could_be_true(negative, objects), (text, negative, objects)
        assert len(set(item["negatives"])) == len(item["negatives"])
        if len(objects) == 2 and distinct == 2:
            assert item["negatives"], text  # a relation swap always exists
        made += len(item["negatives"])
    assert made > 150


def test_negatives_swap_attributes_and_objects():
    a, b = Obj("circle", "red", "small", 0.2, 0.5), Obj("triangle", "blue", "large", 0.8, 0.5)
    for seed in range(10):
        true, negatives = word_order_negatives([a, b], random.Random(seed))
        assert true == caption([a, b], random.Random(seed))  # same rng state, same caption
        first, second = sorted(["small red circle", "large blue triangle"], key=true.index)
        expected_pairs = [("small blue circle", "large red triangle"),
                          ("small red triangle", "large blue circle"),
                          ("large red circle", "small blue triangle")]
        assert len(negatives) == 4
        for negative, pair in zip(negatives, expected_pairs):  # colours, then shapes, then sizes
            assert all(p in negative for p in pair) and first not in negative, negative
        assert negatives[3].index(second) < negatives[3].index(first)  # objects swapped


def test_negatives_that_look_alike_objects_could_make_true_are_dropped():
    # Two red circles flank a blue one: most swaps yield a sentence that some reading of the
    # scene makes true ("a red circle to the left of a red circle"), and must not be offered.
    objects = [Obj("circle", "red", "small", 0.15, 0.5), Obj("circle", "blue", "small", 0.5, 0.5),
               Obj("circle", "red", "small", 0.85, 0.5)]
    kept = 0
    for seed, verbosity in itertools.product(range(20), (0, 1, 2)):
        true, negatives = word_order_negatives(objects, random.Random(seed), verbosity)
        assert could_be_true(true, objects)
        for negative in negatives:
            assert not could_be_true(negative, objects), (true, negative)
        kept += len(negatives)
    assert kept > 0  # the verbose captions' absolute positions still give false swaps


def test_identical_objects_have_no_negatives():
    twins = [Obj("star", "green", "small", 0.2, 0.2), Obj("star", "green", "small", 0.8, 0.8)]
    for verbosity in (0, 1, 2):
        true, negatives = word_order_negatives(twins, random.Random(1), verbosity)
        assert negatives == [] and true.count("small green star") >= 2
    assert word_order_negatives(twins[:1], random.Random(1))[1] == []


# ---------------------------------------------------------------- dataset API

def test_items_layout():
    ds = SyntheticScenes("val", size=8, image_size=32)
    assert len(ds) == 8
    item = ds[0]
    assert set(item) == {"image", "caption", "negatives", "objects"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert isinstance(item["caption"], str) and isinstance(item["negatives"], list)
    assert isinstance(item["objects"], tuple)
    assert all(isinstance(o, SceneObject) for o in item["objects"])
    assert all(1 <= len(ds[i]["objects"]) <= 2 for i in range(8))
    with pytest.raises(IndexError):
        ds[8]


def test_objects_are_inside_the_image_and_apart():
    for item in val_items(100, min_objects=2, max_objects=6):
        objects = item["objects"]
        assert all(0 < o.x < 1 and 0 < o.y < 1 for o in objects)
        for a, b in itertools.combinations(objects, 2):
            assert ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5 > 0.1


@pytest.mark.parametrize("kwargs", [
    dict(split="test"), dict(size=0), dict(min_objects=3, max_objects=2), dict(min_objects=0),
    dict(image_size=8), dict(verbosity=3), dict(held_out_fraction=1.0),
    dict(held_out_fraction=-0.1)])
def test_bad_arguments_raise(kwargs):
    name = next(iter(kwargs)) if "min_objects" not in kwargs else "min_objects"
    with pytest.raises(ValueError, match=name):
        SyntheticScenes(**kwargs)


def test_rendering_speed():
    ds = SyntheticScenes("val", size=500)
    start = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    elapsed = time.perf_counter() - start
    print(f"{len(ds)} val items in {elapsed:.2f} s")
    assert elapsed < 10


# ---------------------------------------------------------------- zero-shot

def test_zero_shot_set_labels_and_templates():
    ds = zero_shot_set(size=96, seed=1, image_size=32)
    items = [ds[i] for i in range(len(ds))]
    for item in items:
        obj, = item["objects"]
        assert (item["shape"], item["colour"]) == (obj.shape, obj.colour)
        assert item["image"].shape == (3, 32, 32)
        pixel = item["image"][:, int(obj.y * 32), int(obj.x * 32)]
        torch.testing.assert_close(pixel, torch.tensor(COLOURS[obj.colour]), atol=1e-6, rtol=0)
    assert Counter(it["shape"] for it in items) == {s: 96 // len(SHAPES) for s in SHAPES}
    assert Counter(it["colour"] for it in items) == {c: 96 // len(COLOURS) for c in COLOURS}
    assert same_item(items[5], zero_shot_set(size=96, seed=1, image_size=32)[5])
    assert set(ZERO_SHOT_TEMPLATES) == {"shape", "colour"}
    for task, labels in (("shape", SHAPES), ("colour", tuple(COLOURS))):
        templates = ZERO_SHOT_TEMPLATES[task]
        assert len(templates) >= 3 and len(set(templates)) == len(templates)
        for template, label in itertools.product(templates, labels):
            assert template.count("{}") == 1
            assert re.search(rf"\b{label}\b", template.format(label))
