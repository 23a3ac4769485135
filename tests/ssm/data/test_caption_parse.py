"""Captions read back into objects: every caption the grammar writes parses to its scene,
every word-order negative is caught as false, and generated junk is flagged."""
import random
from collections import Counter

import pytest

from ssm.data.caption_parse import ParsedObject, parse_caption
from ssm.data.captions import caption, reference_captions, region, word_order_negatives
from ssm.data.scenes import SceneObject, SyntheticScenes
from ssm.eval.captioning import score_caption


def _scenes(verbosity, n=60, max_objects=3):
    data = SyntheticScenes("val", n, seed=3, image_size=16, max_objects=max_objects,
                           verbosity=verbosity)
    return [data[i]["objects"] for i in range(n)]


@pytest.mark.parametrize("verbosity", [0, 1, 2])
def test_every_grammar_caption_parses_back_to_its_scene(verbosity):
    for k, objects in enumerate(_scenes(verbosity)):
        text = caption(objects, random.Random(k), verbosity)
        parsed = parse_caption(text)
        assert not parsed.unknown, (text, parsed.unknown)
        said = Counter((o.size, o.colour, o.shape) for o in parsed.objects)
        assert said == Counter((o.size, o.colour, o.shape) for o in objects), text
        assert score_caption(text, objects).exact, text


@pytest.mark.parametrize("verbosity", [1, 2])
def test_word_order_negatives_are_never_exact(verbosity):
    """Same words, wrong facts (attributes swapped between objects, a relation turned
    round): the parser and the claim check must catch each one."""
    caught = 0
    for k, objects in enumerate(_scenes(verbosity)):
        true, negatives = word_order_negatives(objects, random.Random(k), verbosity)
        assert score_caption(true, objects).exact
        for negative in negatives:
            assert not score_caption(negative, objects).exact, negative
            caught += 1
    assert caught > 50


def test_regions_and_relations_are_read():
    parsed = parse_caption("a picture of a small red circle in the top left")
    assert parsed.objects == [ParsedObject("small", "red", "circle", (0, 0))]
    parsed = parse_caption("there is a large blue star to the left of a small white cross "
                           "which is above a small red circle")
    assert [o.shape for o in parsed.objects] == ["star", "cross", "circle"]
    assert parsed.relations == [((0,), (1,), "left"), ((1,), (2,), "above")]
    verbose = parse_caption("there are 2 objects. a small red circle is at the top. a large blue "
                            "star is near the centre. the large blue star is below the small red circle")
    assert [o.region for o in verbose.objects] == [(0, 1), (1, 1)]
    assert verbose.relations == [((1,), (0,), "below")] and not verbose.unknown
    twins = parse_caption("there are 2 objects. a small red circle is at the top. a small red "
                          "circle is at the bottom. the small red circle is above the small red circle")
    assert len(twins.objects) == 2 and twins.relations == [((0, 1), (0, 1), "above")]


def test_junk_and_broken_captions_are_flagged():
    parsed = parse_caption("a smal red circel left of")
    assert parsed.objects == []
    assert "smal" in parsed.unknown and "circel" in parsed.unknown
    assert any("relation" in u for u in parsed.unknown)  # "left of" leads nowhere
    assert parse_caption("a small red").unknown == ["small", "red"]
    assert parse_caption("").objects == []


def test_references_are_true_captions_of_the_scene():
    objects = (SceneObject("circle", "red", "small", 0.2, 0.2),
               SceneObject("star", "blue", "large", 0.8, 0.7))
    refs = reference_captions(objects, 6, verbosity=1, seed="x")
    assert len(refs) == 6 and len(set(refs)) > 2
    assert refs == reference_captions(objects, 6, verbosity=1, seed="x")
    assert all(score_caption(r, objects).exact for r in refs)
    assert region(objects[0]) == (0, 0)
    with pytest.raises(ValueError, match="count"):
        reference_captions(objects, 0)
