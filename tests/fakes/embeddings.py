"""A deterministic embedding model where paraphrases land near each other.

`concept_embed(text, dim)` maps each word to a coordinate: words listed in `CONCEPTS` (small
synonym groups: "doctor", "physician", "medic") share their group's coordinate, among the first
len(CONCEPTS) dimensions; every other word is feature-hashed into the remaining ones; common
function words are ignored. The vector is the normalized bag of those coordinates. So "the
physician told me to avoid groundnuts" and "what did my doctor say about peanuts" share no word
but have a high cosine similarity, which is what a real embedding model gives and what
full-text search cannot find. Use it with the fake upstream: `fake_upstream.embedder =
concept_embed`.
"""

from __future__ import annotations

import hashlib
import math
import re

CONCEPTS: list[frozenset[str]] = [frozenset(group.split()) for group in (
    "doctor doctors physician physicians medic gp clinician",
    "peanut peanuts groundnut groundnuts",
    "allergy allergies allergic intolerance",
    "car cars automobile automobiles vehicle vehicles sedan",
    "dog dogs puppy puppies canine hound",
    "cat cats kitten kittens feline",
    "house home apartment flat residence dwelling",
    "job work employment occupation career profession",
    "money cash funds savings budget",
    "travel trip journey voyage vacation holiday",
    "birthday anniversary celebration party",
    "sister sibling brother siblings",
    "avoid avoiding skip shun refrain",
    "eat eating food meal meals dine",
    "moved relocated relocation move",
    "berlin germany german",
    "music song songs melody tune",
    "coffee espresso latte cappuccino",
    "sick ill unwell illness",
    "buy bought purchase purchased",
)]
_CONCEPT_OF = {word: i for i, group in enumerate(CONCEPTS) for word in group}
IGNORED = frozenset(
    """a about an and are as at be been but by can could did do does for from had has have he
    her him his how i if in into is it its me my no not of on or our she so than that the their
    them then there these they this those to us was we were what when where which who whom why
    will with would you your say said says told tell asked ask""".split()
)
MIN_DIM = len(CONCEPTS) + 8


def _coordinate(word: str, dim: int) -> int:
    concept = _CONCEPT_OF.get(word)
    if concept is not None:
        return concept
    digest = hashlib.sha256(word.encode()).digest()
    return len(CONCEPTS) + int.from_bytes(digest[:4], "little") % (dim - len(CONCEPTS))


def concept_embed(text: str, dim: int) -> list[float]:
    """A unit vector of `dim` floats (`dim` >= MIN_DIM); see the module doc."""
    if dim < MIN_DIM:
        raise ValueError(f"concept_embed needs at least {MIN_DIM} dimensions")
    vector = [0.0] * dim
    words = [w for w in re.findall(r"[^\W_]+", text.lower()) if w not in IGNORED]
    for word in words:
        vector[_coordinate(word, dim)] += 1.0
    if not words:  # still a valid unit vector, unlike every other text
        vector[-1] = 1.0
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
