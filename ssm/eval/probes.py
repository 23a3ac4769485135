"""Compositional probes in the style of ARO and SugarCrepe: a scene's true caption against a
negative that differs from it in exactly one stated way. The model passes an item when it
scores the image with the true caption above the image with the negative (chance 0.5).

Negatives are edits of the caption text, so they work on every caption of this repo's
grammar (``ssm.data.captions``: the default scenes at any verbosity; ``ssm.data.dense``):
an object is always mentioned as the three words "size colour shape", a relation as "left
of" / "right of" (after "to the", or terse) / "above" / "below", a count as "N objects".
An edit changes every mention of the object it touches, so the caption stays consistent
with itself apart from the probed change. Categories (``CATEGORIES``):

- ``attribute_swap``: the colour (or, failing that, the size) of two objects swapped;
- ``relation_swap``: one relation turned around (left <-> right, above <-> below);
- ``object_replacement``: one object's shape replaced by a shape absent from the scene;
- ``attribute_replacement``: one object's colour (or size) replaced by a value that no
  object of that shape and size (or colour) has;
- ``counting``: the stated object count off by one (only captions that state a count).

Every negative is checked to be false for the scene, even when each description is read
as "some object like this": an edited description matches no object, or the turned
relation holds for no pair of objects matching its two descriptions. A category is absent
for an item when no such negative exists (one object, identical objects, no count).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from ssm.data.scenes import COLOURS, SHAPES, SIZES

CATEGORIES = ("attribute_swap", "relation_swap", "object_replacement", "attribute_replacement",
              "counting")
ATTRIBUTES = ("size", "colour", "shape")  # the order of the words in a mention
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}

_MENTION = re.compile(r"\b({}) ({}) ({})\b".format("|".join(SIZES), "|".join(COLOURS),
                                                  "|".join(SHAPES)))
_RELATION = re.compile(r"\b(?:(left|right)(?= of\b)|(above|below))\b")
_COUNT = re.compile(r"\b(\d+) objects\b")


@dataclass(frozen=True)
class Mention:
    start: int                    # byte offsets of each word: size, colour, shape
    words: tuple[str, str, str]
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ProbeNegative:
    category: str
    text: str
    edits: tuple[tuple[int, int, str, str], ...]   # (start, end, old word, new word)
    change: dict = field(default_factory=dict, compare=False)  # what was changed, for reports


def mentions(caption: str) -> list[Mention]:
    """Every "size colour shape" mention in the caption, in order."""
    return [Mention(m.start(), m.groups(), tuple(m.span(g) for g in (1, 2, 3)))
            for m in _MENTION.finditer(caption)]


def _apply(caption: str, edits) -> str:
    out, last = [], 0
    for start, end, _, new in sorted(edits):
        out += [caption[last:start], new]
        last = end
    return "".join(out + [caption[last:]])


def _triples(objects) -> list[tuple[str, str, str]]:
    return [(o.size, o.colour, o.shape) for o in objects]


def _unique(found: list[Mention], objects) -> list[tuple[str, str, str]]:
    """Described triples that name exactly one object of the scene, in caption order."""
    scene = _triples(objects)
    seen = []
    for m in found:
        if scene.count(m.words) == 1 and m.words not in seen:
            seen.append(m.words)
    return seen


def _retag(found, triple, attribute, value) -> list[tuple]:
    """Edits setting ``attribute`` to ``value`` at every mention of ``triple``."""
    a = ATTRIBUTES.index(attribute)
    return [(m.spans[a][0], m.spans[a][1], m.words[a], value) for m in found if m.words == triple]


def _with(triple, attribute, value) -> tuple[str, str, str]:
    t = list(triple)
    t[ATTRIBUTES.index(attribute)] = value
    return tuple(t)


def _attribute_swap(caption, found, objects, rng):
    scene, unique = _triples(objects), _unique(found, objects)
    for attribute in ("colour", "size"):
        pairs = [(p, q) for i, p in enumerate(unique) for q in unique[i + 1:]
                 if p[ATTRIBUTES.index(attribute)] != q[ATTRIBUTES.index(attribute)]]
        rng.shuffle(pairs)
        for p, q in pairs:
            a = ATTRIBUTES.index(attribute)
            new_p, new_q = _with(p, attribute, q[a]), _with(q, attribute, p[a])
            if new_p in scene and new_q in scene:
                continue  # both swapped descriptions still name real objects
            edits = _retag(found, p, attribute, q[a]) + _retag(found, q, attribute, p[a])
            return edits, {"attribute": attribute, "objects": [list(p), list(q)]}
    return None


def _holds(a, b, key) -> bool:
    return {"left": a.x < b.x, "right": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}[key]


def _relation_swap(caption, found, objects, rng):
    candidates = list(_RELATION.finditer(caption))
    rng.shuffle(candidates)
    for m in candidates:
        before = [x for x in found if x.spans[2][1] <= m.start()]
        after = [x for x in found if x.start >= m.end()]
        if not before or not after:
            continue
        subject, other = before[-1].words, after[0].words
        key = m.group(1) or m.group(2)
        turned = OPPOSITE[key]
        a_objects = [o for o in objects if (o.size, o.colour, o.shape) == subject]
        b_objects = [o for o in objects if (o.size, o.colour, o.shape) == other]
        if any(a is not b and _holds(a, b, turned) for a in a_objects for b in b_objects):
            continue  # look-alike objects make the turned relation true as well
        return ([(m.start(), m.end(), key, turned)],
                {"relation": [key, turned], "objects": [list(subject), list(other)]})
    return None


def _object_replacement(caption, found, objects, rng):
    absent = [s for s in SHAPES if s not in {o.shape for o in objects}]
    unique = _unique(found, objects)
    if not absent or not unique:
        return None
    triple, shape = rng.choice(unique), rng.choice(absent)
    return _retag(found, triple, "shape", shape), {"object": list(triple), "shape": shape}


def _attribute_replacement(caption, found, objects, rng):
    scene, unique = _triples(objects), _unique(found, objects)
    rng.shuffle(unique)
    for attribute, values in (("colour", list(COLOURS)), ("size", list(SIZES))):
        for triple in unique:
            options = [v for v in values if _with(triple, attribute, v) not in scene]
            if options:
                value = rng.choice(options)
                return (_retag(found, triple, attribute, value),
                        {"attribute": attribute, "object": list(triple), "value": value})
    return None


def _counting(caption, found, objects, rng):
    m = _COUNT.search(caption)
    if m is None or int(m.group(1)) != len(objects):
        return None
    n = len(objects)
    wrong = rng.choice([n - 1, n + 1]) if n - 1 >= 2 else n + 1  # "N objects" needs N >= 2
    return [(m.start(1), m.end(1), m.group(1), str(wrong))], {"stated": n, "negative": wrong}


_BUILDERS = {"attribute_swap": _attribute_swap, "relation_swap": _relation_swap,
             "object_replacement": _object_replacement,
             "attribute_replacement": _attribute_replacement, "counting": _counting}


def probe_negatives(caption: str, objects: Sequence, rng: random.Random) -> dict[str, ProbeNegative]:
    """One negative per category that can be made for this caption and scene (``objects``:
    anything with size, colour, shape, x and y), drawn with ``rng``."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    if not objects:
        raise ValueError("objects must hold the scene's objects (at least one)")
    found = mentions(caption)
    negatives = {}
    for category in CATEGORIES:
        built = _BUILDERS[category](caption, found, objects, rng)
        if built is not None:
            edits, change = built
            negatives[category] = ProbeNegative(category, _apply(caption, edits), tuple(edits),
                                                change)
    return negatives


def probe_rng(seed: int, index: int) -> random.Random:
    """The probes' own random stream for item ``index`` of a dataset with ``seed``: the same
    negatives for every model evaluated on that dataset."""
    return random.Random(f"probes|{seed}|{index}")
