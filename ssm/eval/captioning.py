"""Caption metrics: exact scores on the built-in scenes, BLEU-4 and CIDEr-D on any data.

On the scenes a caption can be checked against the truth: ``ssm.data.caption_parse``
reads it back into objects, which are matched one to one with the scene's objects (size,
colour and shape equal; the region too, where the caption gives one).
- object precision / recall / F1: micro-averaged over scenes (matched objects over the
  objects said, over the objects present);
- exact scene: every object said once and rightly, nothing extra, every stated relation
  and region true, and no word outside the grammar;
- the same on the held-out scenes that hold a (shape, colour) pair never seen in training
  (``caption_heldout_``) and on the others (``caption_seen_``);
- novel-pair recall: of the objects whose (shape, colour) pair was never trained on, the
  share named rightly (``caption_novel_pair_recall``). With about a third of the val
  objects in such pairs, object F1 cannot pass about 0.67 unless the decoder composes.
BLEU-4 and CIDEr-D come from pycocoevalcap's Bleu and Cider scorers (the ones captioning
papers cite; its Cider is CIDEr-D) on our own tokenisation (lower case, words split at
anything not a letter or digit), so no Java tokenizer is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ssm.data.caption_parse import ParsedCaption, parse_caption
from ssm.data.captions import reference_captions, region, relation


@dataclass
class CaptionScore:
    """One caption against its scene: matched objects, objects said, objects present."""

    said: int
    present: int
    exact: bool
    found: tuple = ()      # indices of the scene's objects that a said object matched

    @property
    def matched(self) -> int:
        return len(self.found)


def _fits(said, true) -> bool:
    return ((said.size, said.colour, said.shape) == (true.size, true.colour, true.shape)
            and (said.region is None or said.region == region(true)))


def max_matching(said: Sequence, true: Sequence) -> list[Optional[int]]:
    """For each said object the index of its true object (or None), in a maximum one-to-one
    matching of objects that fit (Kuhn's augmenting paths)."""
    owner: dict[int, int] = {}      # true index -> said index

    def place(i, seen) -> bool:
        for j, obj in enumerate(true):
            if j not in seen and _fits(said[i], obj):
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(said)):
        place(i, set())
    match: list[Optional[int]] = [None] * len(said)
    for j, i in owner.items():
        match[i] = j
    return match


def _perfect_matchings(said: Sequence, true: Sequence, taken=()):
    """Every one-to-one assignment (a tuple: said index -> true index) of said objects to
    true objects they fit. Only look-alike objects make more than one."""
    if len(taken) == len(said):
        yield tuple(taken)
        return
    obj = said[len(taken)]
    for j, candidate in enumerate(true):
        if j not in taken and _fits(obj, candidate):
            yield from _perfect_matchings(said, true, (*taken, j))


def _claims_hold(parsed: ParsedCaption, assignment, true) -> bool:
    """Every relation holds between some pair of the objects its mentions may name."""
    return all(any(a != b and relation(true[assignment[a]], true[assignment[b]]) == key
                   for a in first for b in second)
               for first, second, key in parsed.relations)


def score_caption(text: str, objects: Sequence) -> CaptionScore:
    """A caption against the scene's objects (``SceneObject``s)."""
    parsed = parse_caption(text)
    found = tuple(sorted(j for j in max_matching(parsed.objects, objects) if j is not None))
    exact = (not parsed.unknown and len(found) == len(parsed.objects) == len(objects) > 0)
    if exact:
        # Look-alike objects may match either way round: exact if some way makes every
        # relation true.
        exact = any(_claims_hold(parsed, assignment, objects)
                    for assignment in _perfect_matchings(parsed.objects, objects))
    return CaptionScore(len(parsed.objects), len(objects), exact, found)


def object_metrics(scores: Sequence[CaptionScore], prefix: str = "caption_") -> dict:
    """Micro-averaged object precision, recall and F1, and the exact-scene rate."""
    matched = sum(s.matched for s in scores)
    said, present = sum(s.said for s in scores), sum(s.present for s in scores)
    precision = matched / said if said else 0.0
    recall = matched / present if present else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    exact = sum(s.exact for s in scores) / len(scores) if scores else 0.0
    return {f"{prefix}object_precision": precision, f"{prefix}object_recall": recall,
            f"{prefix}object_f1": f1, f"{prefix}exact": exact}


def scoring_tokens(text: str) -> str:
    """Lower case, words split at anything not a letter or digit, joined by spaces (what
    the COCO tokenizer leaves of our captions: they have no contractions)."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def bleu4_cider(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """Corpus BLEU-4 and CIDEr-D of candidates[i] against references[i] (one or more)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need one list of references per candidate and at least one "
                         f"candidate, got {len(candidates)} and {len(references)}")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every candidate needs at least one reference caption")
    res = {i: [scoring_tokens(c)] for i, c in enumerate(candidates)}
    gts = {i: [scoring_tokens(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


def caption_scores(captions: Sequence[str], items: Sequence[dict], held_out=frozenset(),
                   references: int = 5, verbosity: Optional[int] = None) -> dict:
    """Every caption metric of generated ``captions`` for dataset ``items`` (dicts with
    ``caption``, and on the scenes ``objects``). References: the item's caption, plus
    ``references - 1`` more from the scene grammar at ``verbosity`` when the items are
    scenes. ``held_out``: (shape, colour) pairs never trained on."""
    if len(captions) != len(items):
        raise ValueError(f"need one caption per item, got {len(captions)} and {len(items)}")
    refs = []
    for index, item in enumerate(items):
        extra = []
        if item.get("objects") and verbosity is not None and references > 1:
            extra = [r for r in reference_captions(item["objects"], references - 1, verbosity,
                                                   seed=str(index)) if r != item["caption"]]
        refs.append([item["caption"], *extra])
    results = bleu4_cider(captions, refs)
    scenes = [(text, item["objects"]) for text, item in zip(captions, items) if item.get("objects")]
    if scenes:
        scores = [score_caption(text, objects) for text, objects in scenes]
        results.update(object_metrics(scores))
        novel = [[(o.shape, o.colour) in held_out for o in objects] for _, objects in scenes]
        unseen = [s for s, flags in zip(scores, novel) if any(flags)]
        seen = [s for s, flags in zip(scores, novel) if not any(flags)]
        results["caption_heldout_scenes"] = len(unseen)
        if unseen:
            results.update(object_metrics(unseen, prefix="caption_heldout_"))
            named = sum(flags[j] for s, flags in zip(scores, novel) for j in s.found)
            results["caption_novel_pair_objects"] = sum(map(sum, novel))
            results["caption_novel_pair_recall"] = named / results["caption_novel_pair_objects"]
        results["caption_seen_scenes"] = len(seen)
        if seen:
            results.update(object_metrics(seen, prefix="caption_seen_"))
    return results
