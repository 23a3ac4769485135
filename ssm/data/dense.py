"""Dense scenes: 4 to 12 objects, and a long caption that describes every one of them.

Item i of a split is drawn like a ``SyntheticScenes`` item (a random.Random seeded by a
stable hash of (seed, "dense-" + split, i); held-out (shape, colour) pairs kept out of
"train"), so it is deterministic per index and seed. The caption is built from the scene
alone, by a fixed grammar that ``parse_dense_caption`` reads back:

    a picture of {n} objects on a plain grey background.
    then one paragraph per object, in a random description order (``item["order"]``):
      detail >= 1   there is a {size} {colour} {shape} {region}.
      detail >= 2   its centre is {x} percent across and {y} percent down.
      detail >= 3   it is {relation} the {size} {colour} {shape}.
                    (relation to the next object described, the last one to the first)

Regions are the 3x3 grid of thirds (``ssm.data.captions.REGIONS``), x and y the centre in
percent of the image side, relations those of ``ssm.data.captions.relation``. ``detail``
sets the caption length at a fixed object count: with 4 to 12 objects, captions run
202-699 bytes at detail 1, 406-1,359 at detail 2 and 534-1,947 at detail 3 (the bounds
``caption_byte_bounds`` computes from the vocabulary), so always within 200-2,000 bytes.

The needle test (``needle_distractors``): the true scene against copies that differ in
exactly one attribute (colour, shape, size or position) of one object, the needle, chosen
by where its paragraph sits in the caption (first, middle or last).
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from ssm.data.captions import REGIONS, RELATIONS, region, relation
from ssm.data.scenes import (COLOURS, MIN_GAP, SHAPES, SIZES, SceneObject, SyntheticScenes,
                             object_radius, render)

__all__ = ["DETAILS", "NEEDLE_POSITIONS", "NEEDLE_ATTRIBUTES", "DenseObject", "DenseParse",
           "dense_caption", "parse_dense_caption", "scene_parse", "caption_byte_bounds",
           "clip_tokens", "clip_byte_budget", "needle_index", "needle_distractors",
           "DenseScenes"]

DETAILS = (1, 2, 3)
MIN_OBJECTS, MAX_OBJECTS = 4, 12
NEEDLE_POSITIONS = ("first", "middle", "last")
NEEDLE_ATTRIBUTES = ("colour", "shape", "size", "position")

_HEADER = "a picture of {} objects on a plain grey background."
_OBJECT = "there is a {} {} {} {}."
_CENTRE = "its centre is {} percent across and {} percent down."
_RELATION = "it is {} the {} {} {}."


@dataclass(frozen=True)
class DenseObject:
    """What a dense caption says about one object, in its paragraph's order of facts."""
    size: str
    colour: str
    shape: str
    region: tuple[int, int]                  # (row, column) of the grid of thirds
    centre: Optional[tuple[int, int]] = None  # (x, y) in percent; detail >= 2
    relation: Optional[tuple[str, tuple[str, str, str]]] = None  # (key, (size, colour, shape))


@dataclass(frozen=True)
class DenseParse:
    """A dense caption read back: the stated object count and each paragraph, in order."""
    count: int
    objects: tuple[DenseObject, ...]


def _percent(v: float) -> int:
    return round(100 * v)


def scene_parse(objects: Sequence, order: Sequence[int], detail: int) -> DenseParse:
    """What the caption of ``objects`` described in ``order`` at ``detail`` says: the parse
    that ``parse_dense_caption`` must give back."""
    _check(objects, order, detail)
    described = []
    for k, i in enumerate(order):
        o = objects[i]
        centre = (_percent(o.x), _percent(o.y)) if detail >= 2 else None
        rel = None
        if detail >= 3:
            other = objects[order[(k + 1) % len(order)]]
            rel = (relation(o, other), (other.size, other.colour, other.shape))
        described.append(DenseObject(o.size, o.colour, o.shape, region(o), centre, rel))
    return DenseParse(len(objects), tuple(described))


def _paragraph(obj: DenseObject) -> str:
    sentences = [_OBJECT.format(obj.size, obj.colour, obj.shape, REGIONS[obj.region])]
    if obj.centre is not None:
        sentences.append(_CENTRE.format(*obj.centre))
    if obj.relation is not None:
        key, (size, colour, shape) = obj.relation
        sentences.append(_RELATION.format(RELATIONS[key][0], size, colour, shape))
    return " ".join(sentences)


def render_parse(parse: DenseParse) -> str:
    """The caption text of a parse (the grammar in the module docstring)."""
    return " ".join([_HEADER.format(parse.count)] + [_paragraph(o) for o in parse.objects])


def dense_caption(objects: Sequence, order: Sequence[int], detail: int = 2) -> str:
    """The dense caption of ``objects``, paragraphs in ``order`` (a permutation of their
    indices), at ``detail`` 1, 2 or 3 (module docstring)."""
    return render_parse(scene_parse(objects, order, detail))


def paragraph_spans(caption: str) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each object paragraph of a dense caption, in order."""
    starts = [m.start() for m in re.finditer(r"there is a ", caption)]
    ends = starts[1:] + [len(caption)]
    return [(s, e) for s, e in zip(starts, ends)]


_WORDS = {"size": "|".join(SIZES), "colour": "|".join(COLOURS), "shape": "|".join(SHAPES)}
_DESC = r"({size}) ({colour}) ({shape})".format(**_WORDS)
_REGION_BY_PHRASE = {phrase: key for key, phrase in REGIONS.items()}
_RELATION_BY_PHRASE = {phrases[0]: key for key, phrases in RELATIONS.items()}
_HEADER_RE = re.compile(r"a picture of (\d+) objects on a plain grey background\.")
_PARAGRAPH_RE = re.compile(
    r" there is a " + _DESC + " (" + "|".join(map(re.escape, _REGION_BY_PHRASE)) + r")\."
    r"(?: its centre is (\d+) percent across and (\d+) percent down\.)?"
    r"(?: it is (" + "|".join(map(re.escape, _RELATION_BY_PHRASE)) + ") the " + _DESC + r"\.)?")


def parse_dense_caption(caption: str) -> DenseParse:
    """Read a dense caption back into what it states. Raises ValueError naming the first
    part that does not follow the grammar."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    header = _HEADER_RE.match(caption)
    if header is None:
        raise ValueError(f"caption does not start with the dense header: {caption[:60]!r}")
    position, objects = header.end(), []
    while position < len(caption):
        m = _PARAGRAPH_RE.match(caption, position)
        if m is None:
            raise ValueError(f"caption does not follow the dense grammar at byte {position}: "
                             f"{caption[position:position + 60]!r}")
        size, colour, shape, where, x, y, rel, r_size, r_colour, r_shape = m.groups()
        objects.append(DenseObject(
            size, colour, shape, _REGION_BY_PHRASE[where],
            (int(x), int(y)) if x is not None else None,
            (_RELATION_BY_PHRASE[rel], (r_size, r_colour, r_shape)) if rel else None))
        position = m.end()
    return DenseParse(int(header.group(1)), tuple(objects))


def caption_byte_bounds(n_objects: int, detail: int) -> tuple[int, int]:
    """Shortest and longest possible caption of a scene of ``n_objects`` at ``detail``,
    from the vocabulary (centres in percent lie in 0..100)."""
    def extreme(pick):
        word = {k: pick(v, key=len) for k, v in (("size", SIZES), ("colour", COLOURS),
                                                 ("shape", SHAPES))}
        desc = (word["size"], word["colour"], word["shape"])
        obj = DenseObject(*desc, pick(REGIONS, key=lambda r: len(REGIONS[r])),
                          (pick((0, 100), key=lambda v: len(str(v))),) * 2 if detail >= 2 else None,
                          (pick(RELATIONS, key=lambda r: len(RELATIONS[r][0])), desc)
                          if detail >= 3 else None)
        return len(render_parse(DenseParse(n_objects, (obj,) * n_objects)))
    return extreme(min), extreme(max)


_CLIP_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def clip_tokens(caption: str) -> list[str]:
    """The caption split as CLIP's BPE splits it: every word, number and punctuation mark
    of this grammar is one token of CLIP's 49,408-entry vocabulary (common English words,
    numbers below 1,000)."""
    return _CLIP_TOKEN.findall(caption)


def clip_byte_budget(captions: Sequence[str], clip_context: int = 77) -> int:
    """Byte tokens (BOS and EOS included) holding as much text as CLIP's ``clip_context``
    tokens: its clip_context - 2 text tokens times the captions' mean bytes per CLIP token
    (a word or mark with its share of spaces), plus our BOS and EOS."""
    tokens = sum(len(clip_tokens(c)) for c in captions)
    if not tokens:
        raise ValueError("captions hold no words: cannot measure bytes per token")
    return 2 + round((clip_context - 2) * sum(len(c) for c in captions) / tokens)


def needle_index(order: Sequence[int], position: str) -> int:
    """The object whose paragraph comes first, in the middle or last."""
    if position not in NEEDLE_POSITIONS:
        raise ValueError(f"position must be one of {NEEDLE_POSITIONS}, got {position!r}")
    k = {"first": 0, "middle": len(order) // 2, "last": len(order) - 1}[position]
    return order[k]


def _moved(objects: Sequence, k: int, rng: random.Random) -> SceneObject:
    """Object k at a new centre in another region of the grid, clear of the others when
    any such spot is found in 2,000 draws (else the clearest one drawn)."""
    obj, n = objects[k], len(objects)
    r = object_radius(obj.size, n)
    best, best_gap = None, -math.inf
    for _ in range(2000):
        x, y = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
        candidate = replace(obj, x=x, y=y)
        if region(candidate) == region(obj):
            continue
        gap = min((math.hypot(x - o.x, y - o.y) - r - object_radius(o.size, n)
                   for j, o in enumerate(objects) if j != k), default=math.inf)
        if gap >= MIN_GAP:
            return candidate
        if gap > best_gap:
            best, best_gap = candidate, gap
    if best is None:
        raise RuntimeError("no centre outside the object's region was drawn")
    return best


def needle_distractors(objects: Sequence, k: int, rng: random.Random) -> dict[str, tuple]:
    """Copies of the scene that differ from it in exactly one attribute of object k, one
    per attribute in NEEDLE_ATTRIBUTES: another colour, another shape, the other size, and
    a centre in another region of the grid. A caption of the true scene is false for each.
    The other size may touch a neighbour (sizes have two values, so there is no choice)."""
    obj = objects[k]
    changed = {
        "colour": replace(obj, colour=rng.choice([c for c in COLOURS if c != obj.colour])),
        "shape": replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape])),
        "size": replace(obj, size=next(s for s in SIZES if s != obj.size)),
        "position": _moved(objects, k, rng),
    }
    return {attribute: tuple(new if j == k else o for j, o in enumerate(objects))
            for attribute, new in changed.items()}


def _check(objects, order, detail) -> None:
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
    if sorted(order) != list(range(len(objects))) or not objects:
        raise ValueError(f"order must be a permutation of range({len(objects)}), got {order!r}")


class DenseScenes(SyntheticScenes):
    """Scenes of min_objects..max_objects (4 to 12) shapes with dense captions.

    Item: dict(image, caption, negatives=[], objects, order) where ``order`` lists the
    objects in the order their paragraphs appear. ``needle(index)`` gives the needle test's
    scenes for an item.
    """

    def __init__(self, split: str = "train", size: int = 10_000, seed: int = 0,
                 image_size: int = 64, min_objects: int = MIN_OBJECTS,
                 max_objects: int = MAX_OBJECTS, detail: int = 2, held_out_fraction: float = 0.2):
        if not MIN_OBJECTS <= min_objects <= max_objects <= MAX_OBJECTS:
            raise ValueError(f"dense scenes need {MIN_OBJECTS} <= min_objects <= max_objects <= "
                             f"{MAX_OBJECTS} (the caption length bounds hold there), got "
                             f"{min_objects}, {max_objects}")
        if detail not in DETAILS:
            raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
        super().__init__(split, size, seed, image_size, min_objects, max_objects,
                         held_out_fraction=held_out_fraction)
        self.detail = detail
        self._namespace = f"dense-{split}"

    def describe(self, index: int) -> dict:
        index = self._check_index(index)
        rng = self._rng(index)
        objects = self._draw(rng, index)
        order = tuple(rng.sample(range(len(objects)), len(objects)))
        return dict(caption=dense_caption(objects, order, self.detail), negatives=[],
                    objects=objects, order=order)

    def needle(self, index: int) -> dict:
        """The needle test of item ``index``: its caption and image, and per needle
        position the needle's index and one distractor image per attribute,
        ``distractors[position][attribute]`` (3, image_size, image_size). Deterministic:
        the distractors draw from their own stream of (seed, split, index)."""
        item = self.describe(index)
        objects, order = item["objects"], item["order"]
        key = f"{self.seed}|needle-{self.split}|{index}"
        rng = random.Random(key)
        distractors, needles = {}, {}
        for position in NEEDLE_POSITIONS:
            k = needles[position] = needle_index(order, position)
            distractors[position] = {a: render(scene, self.image_size)
                                     for a, scene in needle_distractors(objects, k, rng).items()}
        return dict(caption=item["caption"], image=render(objects, self.image_size),
                    objects=objects, order=order, needles=needles, distractors=distractors)
