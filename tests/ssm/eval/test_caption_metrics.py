"""Caption metrics: object matching by hand, the exact-scene rule, BLEU-4 and CIDEr-D
through pycocoevalcap, and all of it on scenes captioned by their own grammar."""
import random

import pytest

from ssm.data.caption_parse import ParsedObject
from ssm.data.captions import caption
from ssm.data.scenes import SceneObject, SyntheticScenes
from ssm.eval.captioning import (bleu4_cider, caption_scores, max_matching, object_metrics,
                                 score_caption, scoring_tokens)

RED = SceneObject("circle", "red", "small", 0.15, 0.15)        # top left
BLUE = SceneObject("star", "blue", "large", 0.8, 0.5)          # right of RED, on the right


def test_objects_are_matched_once_each():
    s = score_caption("a small red circle to the left of a large blue star", [RED, BLUE])
    assert (s.matched, s.said, s.present, s.exact) == (2, 2, 2, True)
    wrong = score_caption("a small red circle to the right of a large blue star", [RED, BLUE])
    assert (wrong.matched, wrong.exact) == (2, False)     # objects right, relation wrong
    extra = score_caption("a small red circle left of a small red circle", [RED, BLUE])
    assert (extra.matched, extra.said, extra.present) == (1, 2, 2)
    colour = score_caption("a picture of a small green circle in the top left", [RED])
    assert (colour.matched, colour.exact) == (0, False)
    place = score_caption("a picture of a small red circle in the bottom left", [RED])
    assert (place.matched, place.exact) == (0, False)     # a stated region must be right


def test_micro_averaged_metrics():
    scores = [score_caption("a small red circle", [RED, BLUE]),                # 1 of 2
              score_caption("a small red circle left of a large blue star", [RED, BLUE]),
              score_caption("a large blue star left of a small white cross", [BLUE])]
    metrics = object_metrics(scores)
    precision, recall = 4 / 5, 4 / 5
    assert metrics["caption_object_precision"] == pytest.approx(precision)
    assert metrics["caption_object_recall"] == pytest.approx(recall)
    assert metrics["caption_object_f1"] == pytest.approx(0.8)
    assert metrics["caption_exact"] == pytest.approx(1 / 3)


def test_matching_is_maximum():
    """A greedy match would pair the region-less mention with the top-left object and
    leave the region-bound one unmatched; the maximum matching pairs both."""
    twin = SceneObject("circle", "red", "small", 0.85, 0.85)   # bottom right
    said = [ParsedObject("small", "red", "circle"), ParsedObject("small", "red", "circle", (0, 0))]
    assert sorted(max_matching(said, [RED, twin])) == [0, 1]


def test_bleu_and_cider_come_from_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    refs = [["A small red circle.", "there is a small red circle"],
            ["a large blue star on the right", "a picture of a large blue star on the right"],
            ["a small white cross at the top", "an image of a small white cross at the top"]]
    perfect = bleu4_cider([r[0] for r in refs], refs)
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    candidates = ["a red circle", "a large blue circle at the bottom", "a white cross"]
    ours = bleu4_cider(candidates, refs)
    gts = {i: [scoring_tokens(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [scoring_tokens(c)] for i, c in enumerate(candidates)}
    assert ours["bleu4"] == Bleu(4).compute_score(gts, res, verbose=0)[0][3]
    assert ours["cider"] == Cider().compute_score(gts, res)[0]
    assert ours["bleu4"] < perfect["bleu4"] and ours["cider"] < perfect["cider"]
    assert scoring_tokens("A small, red Circle.") == "a small red circle"
    with pytest.raises(ValueError, match="one list of references per candidate"):
        bleu4_cider(["a"], [])


def test_scenes_captioned_by_their_own_grammar_score_perfectly():
    data = SyntheticScenes("val", 40, seed=5, image_size=16, verbosity=1)
    items = [data[i] for i in range(40)]
    scores = caption_scores([x["caption"] for x in items], items, data.held_out, references=4,
                            verbosity=1)
    assert scores["caption_object_f1"] == 1.0 and scores["caption_exact"] == 1.0
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert 0 < scores["caption_heldout_scenes"] < 40
    assert scores["caption_heldout_object_f1"] == 1.0
    other = [caption(x["objects"][::-1], random.Random(1), 0) for x in items]   # terse
    worse = caption_scores(other, items, data.held_out, references=4, verbosity=1)
    assert worse["caption_object_f1"] == 1.0     # same objects, in other words
    assert worse["bleu4"] < 0.9 and worse["cider"] < scores["cider"]


def test_novel_pair_recall_counts_only_the_never_trained_pairs():
    """Captions that leave out every object of a held-out (shape, colour) pair: the seen
    scenes stay perfect, novel-pair recall is 0, and naming half of them gives 0.5."""
    data = SyntheticScenes("val", 60, seed=5, image_size=16, verbosity=0)
    items = [data[i] for i in range(60)]
    novel = lambda o: (o.shape, o.colour) in data.held_out  # noqa: E731

    def without_novel(objects, keep_every=0):
        kept = [o for k, o in enumerate(objects) if not novel(o) or (keep_every and k % 2 == 0)]
        return caption(kept, random.Random(0), 0) if kept else ""

    scores = caption_scores([without_novel(x["objects"]) for x in items], items, data.held_out,
                            references=1)
    n_novel = sum(novel(o) for x in items for o in x["objects"])
    assert scores["caption_novel_pair_objects"] == n_novel > 0
    assert scores["caption_novel_pair_recall"] == 0.0
    assert scores["caption_seen_object_f1"] == 1.0 and scores["caption_seen_exact"] == 1.0
    assert scores["caption_seen_scenes"] + scores["caption_heldout_scenes"] == 60
    assert scores["caption_heldout_object_precision"] == 1.0
    assert scores["caption_heldout_object_recall"] < 1.0
    some = caption_scores([without_novel(x["objects"], keep_every=1) for x in items], items,
                          data.held_out, references=1)
    named = sum(novel(o) for x in items for k, o in enumerate(x["objects"]) if k % 2 == 0)
    assert some["caption_novel_pair_recall"] == pytest.approx(named / n_novel)
