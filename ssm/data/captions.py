"""Captions for synthetic scenes: sentence frames, spatial relations and word-order negatives.

An object is anything with ``shape``, ``colour``, ``size`` (str) and ``x``, ``y`` (float in
[0, 1], x to the right, y downwards), i.e. ``ssm.data.scenes.SceneObject``. Attribute words are
always the bare vocabulary words ("small red circle"): paraphrases vary the sentence frame only,
so a zero-shot probe that prompts with "a circle" or "something red" finds the same words.

``fill_caption`` stretches a caption to an exact byte length (long-caption benchmarks) by
continuing it with more true sentences about the same scene.

A caption is built in two steps: a plan (frame, body template with one slot per mention, which
object each mention names, and the claims the text makes about the mentions), then its
realisation. Negatives reuse the plan and only permute what fills the slots, which is why they
have exactly the word multiset of the true caption.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

# key -> (verbose phrase, terse phrase); "a is left of b" means a.x < b.x, y grows downwards.
RELATIONS = {
    "left": ("to the left of", "left of"),
    "right": ("to the right of", "right of"),
    "above": ("above", "above"),
    "below": ("below", "below"),
}
# (row, column) of the 3x3 grid of thirds -> phrase.
REGIONS = {
    (0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
    (1, 0): "on the left", (1, 1): "near the centre", (1, 2): "on the right",
    (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right",
}
FRAMES = {
    0: ("{}",),
    1: ("{}", "there is {}", "a picture of {}", "an image of {}", "a photo of {}",
        "{} on a grey background", "a rendering of {}"),
    2: ("{}", "a picture. {}", "an image on a grey background. {}"),
}
# Attribute swaps in the order negatives list them: colour, shape, size (indices into an
# object's (size, colour, shape) description).
_SWAP_ORDER = (1, 2, 0)


def relation(a, b) -> str:
    """Key of RELATIONS describing a relative to b, along the axis where they are further apart."""
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "above" if dy > 0 else "below"


def _third(v: float) -> int:
    return 0 if v < 1 / 3 else (2 if v > 2 / 3 else 1)


def region(obj) -> tuple[int, int]:
    """(row, column) of the grid of thirds that holds the object's centre."""
    return _third(obj.y), _third(obj.x)


def _holds_relation(a, b, key: str) -> bool:
    # Looser than relation(): any displacement in the right direction makes it true. Negatives
    # must be false under this reading, hence false under any stricter one.
    return {"left": a.x < b.x, "right": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}[key]


@dataclass(frozen=True)
class _Plan:
    frame: str                    # sentence frame with one "{}" for the body
    template: str                 # body with "{0}", "{1}", ... one per mention
    mentions: tuple[int, ...]     # index of the object named at each mention
    claims: tuple[tuple, ...]     # ("rel", p, q, key) or ("at", p, (row, col)) over mentions


def _plan(objects: Sequence, rng: random.Random, verbosity: int) -> _Plan:
    n = len(objects)
    frame = rng.choice(FRAMES[verbosity])
    if verbosity < 2:
        order = tuple(rng.sample(range(n), n))
        if n == 1:
            if verbosity == 0:
                return _Plan(frame, "{0}", order, ())
            # Without a relation to carry it, position would otherwise go unsaid.
            where = region(objects[order[0]])
            return _Plan(frame, "a {0} " + REGIONS[where], order, (("at", 0, where),))
        article, which, col = ("a ", "which is ", 0) if verbosity == 1 else ("", "", 1)
        parts, claims = [article + "{0}"], []
        for k in range(n - 1):
            key = relation(objects[order[k]], objects[order[k + 1]])
            link = which if k else ""
            parts.append(f"{link}{RELATIONS[key][col]} {article}{{{k + 1}}}")
            claims.append(("rel", k, k + 1, key))
        return _Plan(frame, " ".join(parts), order, tuple(claims))

    # Verbose: every object once with its position, then every pair once. Each object is
    # mentioned exactly n times, so swapping an attribute between two objects keeps the words.
    order = rng.sample(range(n), n)
    head = "there is one object." if n == 1 else f"there are {n} objects."
    sentences, clauses, mentions, claims = [head], [], [], []
    for i in order:
        where = region(objects[i])
        sentences.append("a {%d} is %s." % (len(mentions), REGIONS[where]))
        claims.append(("at", len(mentions), where))
        mentions.append(i)
    pairs = [(i, j) if rng.random() < 0.5 else (j, i) for i in range(n) for j in range(i + 1, n)]
    rng.shuffle(pairs)
    for i, j in pairs:
        key = relation(objects[i], objects[j])
        p = len(mentions)
        clauses.append("the {%d} is %s the {%d}" % (p, RELATIONS[key][0], p + 1))
        claims.append(("rel", p, p + 1, key))
        mentions += [i, j]
    body = " ".join(sentences + ([" and ".join(clauses)] if clauses else []))
    return _Plan(frame, body, tuple(mentions), tuple(claims))


def _descriptions(objects: Sequence) -> list[tuple[str, str, str]]:
    return [(o.size, o.colour, o.shape) for o in objects]


def _realise(plan: _Plan, mentions: Sequence[int], descs: Sequence[tuple[str, str, str]]) -> str:
    body = plan.template.format(*(" ".join(descs[i]) for i in mentions))
    return plan.frame.replace("{}", body)


def _could_be_true(plan: _Plan, mentions, descs, objects) -> bool:
    """Whether each claim, read on its own, is met by some objects matching the descriptions."""
    matching = [[o for o in objects if (o.size, o.colour, o.shape) == descs[i]] for i in mentions]
    if not all(matching):
        return False
    for claim in plan.claims:
        if claim[0] == "at":
            if not any(region(o) == claim[2] for o in matching[claim[1]]):
                return False
        elif not any(a is not b and _holds_relation(a, b, claim[3])
                     for a in matching[claim[1]] for b in matching[claim[2]]):
            return False
    return True


def _check(objects: Sequence, verbosity: int) -> None:
    if len(objects) == 0:
        raise ValueError("objects must hold at least one object to caption")
    if verbosity not in FRAMES:
        raise ValueError(f"verbosity must be 0, 1 or 2, got {verbosity!r}")


def caption(objects: Sequence, rng: random.Random, verbosity: int = 1) -> str:
    """One caption naming every object's size, colour and shape.

    verbosity 0: terse, no frame ("small red circle left of large blue triangle").
    verbosity 1: a sentence frame around the objects chained by relations ("there is a small
      red circle to the left of a large blue triangle which is above ..."); a lone object gets
      its absolute position ("a picture of a small red circle in the top left").
    verbosity 2: "there are n objects.", each object's absolute position, then the relation of
      every pair.
    Relations follow the axis along which the two centres are further apart.
    """
    _check(objects, verbosity)
    plan = _plan(objects, rng, verbosity)
    return _realise(plan, plan.mentions, _descriptions(objects))


def reference_captions(objects: Sequence, count: int, verbosity: int = 1,
                       seed: str = "") -> list[str]:
    """``count`` captions of one scene drawn from the grammar with rngs seeded by
    (seed, k): other frames, orders and chains, the same facts. References for BLEU and
    CIDEr, which reward a caption for matching any of several ways of saying it."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    return [caption(objects, random.Random(f"reference|{seed}|{k}"), verbosity)
            for k in range(count)]


def word_order_negatives(objects: Sequence, rng: random.Random,
                         verbosity: int = 1) -> tuple[str, list[str]]:
    """(true caption, negatives): false captions with exactly the true caption's words.

    The true caption is the one ``caption(objects, rng, verbosity)`` gives for the same rng
    state. Negatives share its frame and template, in this order, each present only when it can
    be made (at most 4, none for one object):
      - colours swapped between two objects, then shapes, then sizes;
      - the two objects of one relation swapped around it.
    Each is checked to be false even when every claim is read on its own, so a scene with
    look-alike objects cannot turn a "negative" into a true caption.
    """
    _check(objects, verbosity)
    plan = _plan(objects, rng, verbosity)
    descs = _descriptions(objects)
    true = _realise(plan, plan.mentions, descs)
    negatives: list[str] = []

    def offer(mentions, new_descs) -> bool:
        text = _realise(plan, mentions, new_descs)
        if text == true or text in negatives or _could_be_true(plan, mentions, new_descs, objects):
            return False
        assert Counter(text.split()) == Counter(true.split())
        negatives.append(text)
        return True

    n = len(objects)
    for a in _SWAP_ORDER:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if descs[i][a] != descs[j][a]]
        rng.shuffle(pairs)
        for i, j in pairs[:8]:  # a few tries: look-alike objects can make a swap still true
            swapped = [list(d) for d in descs]
            swapped[i][a], swapped[j][a] = descs[j][a], descs[i][a]
            if offer(plan.mentions, [tuple(d) for d in swapped]):
                break
    relations = [c for c in plan.claims if c[0] == "rel"]
    rng.shuffle(relations)
    for _, p, q, _ in relations[:8]:
        mentions = list(plan.mentions)
        mentions[p], mentions[q] = mentions[q], mentions[p]
        if offer(mentions, descs):
            break
    return true, negatives


def detail_sentences(objects: Sequence) -> list[str]:
    """True sentences about a scene, beyond what a caption says: each object's region,
    attributes and centre (in percent of the image side), every ordered pair's relation, and
    the object count and background."""
    _check(objects, 0)
    sentences = ["there is one object." if len(objects) == 1 else
                 f"there are {len(objects)} objects.",
                 "the background is plain grey."]
    for o in objects:
        desc = f"{o.size} {o.colour} {o.shape}"
        sentences += [f"a {desc} is {REGIONS[region(o)]}.",
                      f"the {o.shape} is {o.size} and {o.colour}.",
                      f"the {desc} has its centre {round(100 * o.x)} percent from the left "
                      f"and {round(100 * o.y)} percent from the top."]
    for a in objects:
        for b in objects:
            if a is not b:
                sentences.append(f"the {a.size} {a.colour} {a.shape} is "
                                 f"{RELATIONS[relation(a, b)][0]} the {b.size} {b.colour} {b.shape}.")
    return sentences


def fill_caption(text: str, objects: Sequence, rng: random.Random, n_bytes: int) -> str:
    """``text`` continued with ``detail_sentences(objects)`` (reshuffled by ``rng`` each time
    round) and cut to exactly ``n_bytes`` bytes, the way a tokenizer cuts a caption at its
    context length: the last sentence is usually cut short. A ``text`` longer than
    ``n_bytes`` is itself cut. Captions are ASCII, so bytes and characters coincide."""
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, int) or n_bytes < 1:
        raise ValueError(f"n_bytes must be an int >= 1, got {n_bytes!r}")
    if not text.isascii():
        raise ValueError("fill_caption takes ASCII captions")
    parts, length = [text], len(text)
    sentences = detail_sentences(objects)
    while length < n_bytes:
        rng.shuffle(sentences)
        for sentence in sentences:
            joiner = " " if parts[-1].endswith(".") else ". "
            parts += [joiner, sentence]
            length += len(joiner) + len(sentence)
    return "".join(parts)[:n_bytes]
