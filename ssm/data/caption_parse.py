"""Captions read back into objects: the inverse of ``ssm.data.captions`` for scoring.

``parse_caption(text)`` finds every object mention ("small red circle": size, colour,
shape, always in that order in the grammar), the region a caption gives an object ("a small
red circle in the top left", "a ... is at the bottom.") and the relation claimed between
two mentions in a row ("... to the left of a ...", "the ... is above the ..."). A mention
after "the" names an object mentioned before when one fits (verbose captions repeat each
object), any of them when several do; any other mention is a new object. Words the grammar never uses, and attribute
words outside a full mention, are returned as ``unknown``: a caption with any is not
exactly right whatever its objects.

Works on all three verbosities and on generated text, which may be anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ssm.data.captions import FRAMES, REGIONS, RELATIONS
from ssm.data.scenes import COLOURS, SHAPES, SIZES

# Phrases as word tuples, longest first, so "to the left of" wins over "left of" and a
# region ("on the left") is never read as part of a relation.
_REGION_PHRASES = sorted(((tuple(text.split()), where) for where, text in REGIONS.items()),
                         key=lambda item: -len(item[0]))
_RELATION_PHRASES = sorted(((tuple(text.split()), key) for key, texts in RELATIONS.items()
                            for text in texts), key=lambda item: -len(item[0]))
# Every other word the grammar writes: frames, the verbose sentences' words, numbers.
_GRAMMAR_WORDS = ({w for frames in FRAMES.values() for frame in frames
                   for w in re.findall(r"[a-z]+", frame)}
                  | {"a", "the", "which", "is", "are", "there", "and", "one", "object",
                     "objects", "."})


@dataclass(frozen=True)
class ParsedObject:
    size: str
    colour: str
    shape: str
    region: Optional[tuple[int, int]] = None   # (row, column) of the grid of thirds, if said


@dataclass
class ParsedCaption:
    """objects in order of first mention; relations (I, J, key): an object of the index
    tuple I is ``key`` (a key of RELATIONS) of one of J (one index each unless a "the"
    mention fits several objects); unknown: words the grammar does not account for."""

    objects: list = field(default_factory=list)
    relations: list = field(default_factory=list)
    unknown: list = field(default_factory=list)


def _words(text: str) -> list[str]:
    """Lower-case words, with each full stop its own word."""
    return re.findall(r"[a-z0-9]+|\.", text.lower())


def _phrase_at(words, i, phrases):
    """(value, length) of the first phrase of ``phrases`` that starts at words[i]."""
    for phrase, value in phrases:
        if tuple(words[i:i + len(phrase)]) == phrase:
            return value, len(phrase)
    return None, 0


def parse_caption(text: str) -> ParsedCaption:
    """Objects, regions and relations of one caption (see the module docstring)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = _words(text)
    found = ParsedCaption()
    attributes: list[list] = []          # [size, colour, shape, region] per object
    last: Optional[tuple] = None         # object(s) of the latest mention, in this sentence
    relation: Optional[str] = None       # a relation phrase seen since that mention
    i = 0
    while i < len(words):
        word = words[i]
        if (i + 2 < len(words) and word in SIZES and words[i + 1] in COLOURS
                and words[i + 2] in SHAPES):
            description = words[i:i + 3]
            refers = i > 0 and words[i - 1] == "the"
            earlier = [k for k, a in enumerate(attributes) if a[:3] == description]
            if refers and earlier:
                objs = tuple(earlier)
            else:
                objs = (len(attributes),)
                attributes.append([*description, None])
            if relation is not None and last is not None:
                found.relations.append((last, objs, relation))
            last, relation = objs, None
            i += 3
            continue
        where, n = _phrase_at(words, i, _REGION_PHRASES)
        if where is not None:
            if last is not None and len(last) == 1 and attributes[last[0]][3] is None:
                attributes[last[0]][3] = where
            else:
                found.unknown.append(" ".join(words[i:i + n]))  # a region of nothing
            i += n
            continue
        key, n = _phrase_at(words, i, _RELATION_PHRASES)
        if key is not None:
            relation = key
            i += n
            continue
        if word in (".", "and"):
            if relation is not None:
                found.unknown.append(f"<relation '{relation}' with no object after it>")
            last, relation = None, None      # a new sentence or clause starts afresh
        elif word not in _GRAMMAR_WORDS and not word.isdigit():
            found.unknown.append(word)
        i += 1
    if relation is not None:
        found.unknown.append(f"<relation '{relation}' with no object after it>")
    found.objects = [ParsedObject(*a) for a in attributes]
    return found
