"""Captions of an exact token length (data.caption_tokens): the long-caption benchmark's data."""
import random
import re

import pytest

from ssm.data import ByteTokenizer
from ssm.data.captions import REGIONS, RELATIONS, detail_sentences, fill_caption, region, relation
from ssm.data.scenes import COLOURS, SHAPES, SIZES, SceneObject, SyntheticScenes, caption
from ssm.data.sources import ScenesData

DESC = rf"(?:{'|'.join(SIZES)}) (?:{'|'.join(COLOURS)}) (?:{'|'.join(SHAPES)})"
REL_WORDS = "|".join(v[0] for v in RELATIONS.values())
REL_SENTENCE = re.compile(rf"the ({DESC}) is ({REL_WORDS}) the ({DESC})\.")
AT_SENTENCE = re.compile(rf"a ({DESC}) is ({'|'.join(REGIONS.values())})\.")


def _by_desc(objects):
    return {f"{o.size} {o.colour} {o.shape}": o for o in objects}


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("tokens", [3, 16, 64, 257, 1024, 4096])
def test_every_caption_is_exactly_the_asked_number_of_tokens(split, tokens):
    data = SyntheticScenes(split, 50, seed=1, max_objects=3, caption_tokens=tokens)
    tokenizer = ByteTokenizer()
    items = [data[i] for i in range(12)]
    for item in items:
        assert len(tokenizer.encode(item["caption"])) == tokens
        for negative in item["negatives"]:
            assert len(tokenizer.encode(negative)) == tokens and negative != item["caption"]
    batch, mask = tokenizer.batch_encode([x["caption"] for x in items], tokens)
    assert batch.shape == (12, tokens) and bool(mask.all())  # no padding anywhere


def test_long_captions_continue_the_scene_caption_and_stay_true():
    plain = SyntheticScenes("train", 40, seed=3, max_objects=3)
    long = SyntheticScenes("train", 40, seed=3, max_objects=3, caption_tokens=1024)
    checked = 0
    for i in range(40):
        a, b = plain[i], long[i]
        assert b["objects"] == a["objects"] and b["image"].equal(a["image"])
        assert b["caption"].startswith(a["caption"])  # the scene's own caption comes first
        objects = _by_desc(b["objects"])
        if len(objects) < len(b["objects"]):
            continue  # look-alike objects: a sentence could be about either
        for first, rel, second in REL_SENTENCE.findall(b["caption"][len(a["caption"]):]):
            key = next(k for k, v in RELATIONS.items() if v[0] == rel)
            assert relation(objects[first], objects[second]) == key
            checked += 1
        for desc, where in AT_SENTENCE.findall(b["caption"]):
            assert REGIONS[region(objects[desc])] == where
            checked += 1
    assert checked > 100


def test_long_captions_are_deterministic_and_differ_between_items():
    make = lambda: SyntheticScenes("val", 30, seed=5, caption_tokens=300)  # noqa: E731
    first, second = make(), make()
    texts = [first[i]["caption"] for i in range(30)]
    assert texts == [second[i]["caption"] for i in range(30)]
    assert [first[i]["negatives"] for i in range(30)] == [second[i]["negatives"] for i in range(30)]
    assert len(set(texts)) == 30


def test_fill_caption_cuts_a_caption_longer_than_asked():
    objects = [SceneObject("circle", "red", "small", 0.2, 0.5),
               SceneObject("square", "blue", "large", 0.8, 0.5)]
    text = caption(objects, random.Random(0), verbosity=2)
    assert fill_caption(text, objects, random.Random(0), 10) == text[:10]
    sentences = detail_sentences(objects)
    assert "the small red circle is to the left of the large blue square." in sentences
    assert "there are 2 objects." in sentences


def test_bad_caption_lengths_name_the_argument():
    with pytest.raises(ValueError, match="caption_tokens"):
        SyntheticScenes("train", 4, caption_tokens=2)  # BOS and EOS leave no room for text
    with pytest.raises(ValueError, match="caption_tokens"):
        SyntheticScenes("train", 4, caption_tokens=64.0)
    with pytest.raises(ValueError, match="data.caption_tokens"):
        ScenesData(max_length=64, caption_tokens=128)  # the tokenizer would cut it
    with pytest.raises(ValueError, match="caption_tokens must be None or an int >= 3"):
        ScenesData(max_length=64, caption_tokens=2)  # the one check, SyntheticScenes'
    with pytest.raises(ValueError, match="caption_tokens must be None or an int >= 3"):
        ScenesData(max_length=64, caption_tokens=True)
    with pytest.raises(ValueError, match="n_bytes"):
        fill_caption("a red circle", [SceneObject("circle", "red", "small", .5, .5)],
                     random.Random(0), 0)


def test_scenes_data_passes_caption_tokens_to_train_and_val_only():
    data = ScenesData(train_size=8, val_size=8, zero_shot_size=6, max_length=128,
                      caption_tokens=100)
    assert len(data.train_dataset()[0]["caption"]) == 98
    assert len(data.val_dataset()[0]["caption"]) == 98
    assert len(data.zero_shot_dataset()[0]["caption"]) < 98  # zero-shot scenes stay short
