"""The probe suite: every negative differs from its caption in exactly the stated way, and
is false for the scene."""
import random
import re
from collections import Counter

import pytest

from ssm.data.dense import DenseScenes, parse_dense_caption
from ssm.data.scenes import COLOURS, SHAPES, SIZES, SceneObject, SyntheticScenes
from ssm.eval.probes import CATEGORIES, OPPOSITE, mentions, probe_negatives, probe_rng

Obj = SceneObject


def _words(text):
    return re.findall(r"[a-z]+|\d+|[^\sa-z\d]", text)


def _triples(objects):
    return [(o.size, o.colour, o.shape) for o in objects]


def _scenes():
    """Captions of every grammar: the default scenes at each verbosity, and dense ones."""
    for verbosity in (0, 1, 2):
        ds = SyntheticScenes("val", 40, seed=verbosity, min_objects=1, max_objects=4,
                             verbosity=verbosity)
        yield from (ds.describe(i) for i in range(40))
    for detail in (1, 2, 3):
        ds = DenseScenes("val", 25, seed=detail, detail=detail)
        yield from (ds.describe(i) for i in range(25))


SCENES = list(_scenes())


def _check_common(caption, negative):
    assert negative.text != caption
    true_words, neg_words = _words(caption), _words(negative.text)
    assert len(true_words) == len(neg_words)
    changed = [i for i, (a, b) in enumerate(zip(true_words, neg_words)) if a != b]
    assert changed
    # The edits list exactly the changed words, each old word as it stood in the caption.
    for start, end, old, new in negative.edits:
        assert caption[start:end] == old and negative.text.count(new) >= 1
    return true_words, neg_words, changed


def _mention_slots(caption, triple, attribute_index):
    """Word positions of ``attribute_index`` in every mention of triple."""
    words = _words(caption)
    slots = []
    for k in range(len(words) - 2):
        if tuple(words[k:k + 3]) == triple:
            slots.append(k + attribute_index)
    return slots


@pytest.mark.parametrize("scene", range(len(SCENES)))
def test_each_negative_differs_in_exactly_the_stated_way(scene):
    item = SCENES[scene]
    caption, objects = item["caption"], item["objects"]
    negatives = probe_negatives(caption, objects, random.Random(scene))
    scene_triples = _triples(objects)
    for category, negative in negatives.items():
        assert negative.category == category
        true_words, neg_words, changed = _check_common(caption, negative)
        if category == "attribute_swap":
            a = {"size": 0, "colour": 1}[negative.change["attribute"]]
            p, q = (tuple(t) for t in negative.change["objects"])
            assert changed == sorted(_mention_slots(caption, p, a) + _mention_slots(caption, q, a))
            assert Counter(true_words) == Counter(neg_words)  # a swap keeps the words
            assert {true_words[i] for i in changed} == {p[a], q[a]}
            swapped = [tuple(neg_words[i - a:i - a + 3]) for i in changed]
            assert any(t not in scene_triples for t in swapped)  # false for the scene
        elif category == "relation_swap":
            assert len(changed) == 1
            i = changed[0]
            assert neg_words[i] == OPPOSITE[true_words[i]]
        elif category == "object_replacement":
            triple = tuple(negative.change["object"])
            assert changed == _mention_slots(caption, triple, 2)
            assert scene_triples.count(triple) == 1
            new = {neg_words[i] for i in changed}
            assert new == {negative.change["shape"]} and new.isdisjoint(o.shape for o in objects)
        elif category == "attribute_replacement":
            a = {"size": 0, "colour": 1}[negative.change["attribute"]]
            triple = tuple(negative.change["object"])
            assert changed == _mention_slots(caption, triple, a)
            value = negative.change["value"]
            assert {neg_words[i] for i in changed} == {value} and value != triple[a]
            new_triple = list(triple)
            new_triple[a] = value
            assert tuple(new_triple) not in scene_triples
        elif category == "counting":
            assert len(changed) == 1
            i = changed[0]
            assert int(true_words[i]) == len(objects) and abs(int(neg_words[i]) - len(objects)) == 1
            assert neg_words[i + 1] == "objects"
        else:
            raise AssertionError(category)


def test_relation_swap_is_false_for_the_scene():
    """For dense captions, parse the negative and check the turned relation against the
    scene: the subject is not on that side of the object."""
    ds = DenseScenes("val", 30, detail=3)
    checked = 0
    for i in range(30):
        item = ds.describe(i)
        negative = probe_negatives(item["caption"], item["objects"], random.Random(i)).get("relation_swap")
        if negative is None:
            continue
        subject, other = (tuple(t) for t in negative.change["objects"])
        key = negative.change["relation"][1]
        a = [o for o in item["objects"] if (o.size, o.colour, o.shape) == subject]
        b = [o for o in item["objects"] if (o.size, o.colour, o.shape) == other]
        holds = {"left": lambda p, q: p.x < q.x, "right": lambda p, q: p.x > q.x,
                 "above": lambda p, q: p.y < q.y, "below": lambda p, q: p.y > q.y}[key]
        assert not any(holds(p, q) for p in a for q in b if p is not q)
        parse_dense_caption(negative.text)  # still the dense grammar
        checked += 1
    assert checked >= 25


def _found(detail):
    ds = DenseScenes("val", 40, detail=detail)
    return Counter(c for i in range(40) for c in probe_negatives(
        ds.describe(i)["caption"], ds.describe(i)["objects"], probe_rng(0, i)))


def test_dense_captions_get_every_category():
    assert set(_found(3)) == set(CATEGORIES)
    # Detail 2 states regions and centres but no relation: nothing to turn around.
    assert _found(2)["relation_swap"] == 0


def test_categories_absent_where_the_caption_cannot_make_them():
    lone = (Obj("circle", "red", "small", 0.2, 0.2),)
    negatives = probe_negatives("a small red circle in the top left", lone, random.Random(0))
    assert "attribute_swap" not in negatives and "relation_swap" not in negatives
    assert "counting" not in negatives  # no stated count
    twins = (Obj("circle", "red", "small", 0.2, 0.5), Obj("circle", "red", "small", 0.8, 0.5))
    negatives = probe_negatives("a small red circle to the left of a small red circle", twins,
                                random.Random(0))
    # Look-alike objects: turning the relation around is still true of the other pair.
    assert "relation_swap" not in negatives and "attribute_swap" not in negatives


def test_probe_rng_is_a_stream_per_item():
    assert probe_rng(0, 3).random() == probe_rng(0, 3).random()
    assert probe_rng(0, 3).random() != probe_rng(0, 4).random()
    assert probe_rng(0, 3).random() != probe_rng(1, 3).random()


def test_mentions_read_every_description():
    caption = "a small red circle to the left of a large blue star. the small red circle is"
    assert [m.words for m in mentions(caption)] == [("small", "red", "circle"),
                                                   ("large", "blue", "star"),
                                                   ("small", "red", "circle")]
    assert len(SIZES) * len(COLOURS) * len(SHAPES) == 96  # every triple is a mention


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="caption"):
        probe_negatives(None, (Obj("circle", "red", "small", 0.2, 0.2),), random.Random(0))
    with pytest.raises(ValueError, match="objects"):
        probe_negatives("a small red circle", (), random.Random(0))
