"""How search results are ranked: fusing full-text with vector hits, and conversational context.

Pure functions over (key, score) lists, best first; the search service (embeddings/search.py)
and hybrid search (embeddings/hybrid.py) apply them. Why these (docs/search.md, "Ranking";
measured with `python -m bench recall` on LoCoMo):

- **Score fusion, not reciprocal rank fusion.** RRF (k = 60) scores rank 1 in one list like
  rank 3 in both, so turns that are mediocre in both lists pushed out full-text's clear winners:
  hybrid lost to full-text at every k. Here each list's scores are standardised over its own
  candidates (bm25 and cosine have no common scale, but within one query each list has a mean
  and a spread) and mixed with a fixed weight that trusts full-text more: a strong exact-word
  match stays on top, a paraphrase that full-text missed still rises above the weak keyword
  matches.
- **Neighbouring turns.** In a conversation the turn that answers a question is usually next to
  the turn that asks or announces it, and the two share different words with a later query. A
  message's score is raised by a fraction of its best adjacent message's score (same
  conversation, seq ± 1, among the candidates), so a pair that is relevant together outranks an
  isolated keyword hit. This helps full-text alone as much as hybrid.
- **Full-text keeps its first place.** The fused ranking's first result is the full-text
  ranking's first (after the same neighbour and date steps), and fusion orders the rest. When
  fusion moved the first place on LoCoMo, it was right about as often as wrong (SQLite 34 vs
  30 questions, Postgres 24 vs 32): at rank 1 it added variance, not recall, while lower down
  it adds 7 points of recall@10. Keeping the stronger single system's first result is the
  risk-averse choice (risk-sensitive retrieval: a combined ranking should not do worse than
  its baseline on the queries the baseline gets right; Wang, Bennett & Collins-Thompson,
  SIGIR 2012), and makes hybrid equal full-text at k = 1 by construction.
- **Dates the query names.** "What did Maria donate in December 2023?" is about what was said
  then: candidates stored within a day or month the query names (core/dates.py
  `named_periods`) gain a share of the best candidate's score, so the ranking needs no scale
  (bm25 alone or fused scores alike) and words still decide within the period and outside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

from .types import MessageHit, Passage

K = TypeVar("K", bound=Hashable)

# Full-text's share of a fused score (the vectors' is the rest).
TEXT_WEIGHT = 0.7
# The share of its best neighbour's score that a message gains.
NEIGHBOUR_WEIGHT = 0.4
# The share of the best candidate's score that a message within a period the query names gains.
PERIOD_WEIGHT = 0.4


def normalized(ranking: Sequence[tuple[K, float]],
               floor: float | None = None) -> dict[K, float]:
    """Scores mapped to [0, 1] over this list: its best 1, `floor` (default: its weakest) 0;
    all 1 when they are equal. A repeated key keeps its first (best) score."""
    out: dict[K, float] = {}
    if not ranking:
        return out
    values = [score for _, score in ranking]
    top = max(values)
    bottom = min(values) if floor is None else min(floor, min(values))
    span = top - bottom
    for key, score in ranking:
        if key not in out:
            out[key] = (score - bottom) / span if span > 0 else 1.0
    return out


def standardized(ranking: Sequence[tuple[K, float]],
                 floor: float | None = None) -> tuple[dict[K, float], float]:
    """Scores as standard scores over this list ((score − mean) / standard deviation; all 0
    when they are equal), and the standard score of its weakest candidate, or of `floor` when
    given (it joins the statistics: the score of what the list left out). A repeated key keeps
    its first (best) score."""
    out: dict[K, float] = {}
    if not ranking:
        return out, 0.0
    values = [score for _, score in ranking] + ([] if floor is None else [floor])
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    scale = spread if spread > 0 else 1.0
    for key, score in ranking:
        if key not in out:
            out[key] = (score - mean) / scale
    return out, (min(values) - mean) / scale


def score_fuse(text: Sequence[tuple[K, float]], vector: Sequence[tuple[K, float]],
               text_weight: float = TEXT_WEIGHT, *,
               text_complete: bool = False) -> list[tuple[K, float]]:
    """Full-text and vector candidates fused: text_weight × standard text score +
    (1 − text_weight) × standard similarity, each side's weakest score for a key it did not
    return; then mapped to [0, 1] over the fused candidates (best 1, weakest 0) so that later
    steps add shares of it. Best first; equal scores keep full-text's order, then the vector
    order.

    Standard scores (z-scores) rather than min-max: min-max rests on the list's two extremes,
    so one outlying top score squashes every other candidate of its side towards 0, while
    mean and spread use the whole list (Montague & Aslam, "Relevance score normalization for
    metasearch", CIKM 2001). A side's missing value stands for "as good as what this list
    left out": its weakest candidate when the list was cut at the candidate depth. When
    `text_complete` (full-text returned every match, fewer than it was asked for), what it
    left out did not match at all, so a score of 0 is what a missing key gets."""
    t, t_missing = standardized(text, 0.0 if text_complete else None)
    v, v_missing = standardized(vector)
    order = {key: i for i, key in enumerate([*t, *(k for k in v if k not in t)])}
    raw = {key: text_weight * t.get(key, t_missing) + (1 - text_weight) * v.get(key, v_missing)
           for key in order}
    fused = normalized(list(raw.items()))
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))


def with_neighbours(ranking: Sequence[tuple[K, float]],
                    neighbours: Callable[[K], Iterable[K]],
                    weight: float = NEIGHBOUR_WEIGHT) -> list[tuple[K, float]]:
    """Each score plus `weight` × the best score among its `neighbours` that are in the
    ranking (scores as given, before any raise). Best first; ties keep the given order."""
    base = dict(ranking)
    order = {key: i for i, key in enumerate(base)}
    raised = {key: score + weight * max((base[n] for n in neighbours(key) if n in base),
                                        default=0.0)
              for key, score in base.items()}
    return sorted(raised.items(), key=lambda item: (-item[1], order[item[0]]))


def in_periods(ranking: Sequence[tuple[K, float]], created: Callable[[K], float],
               periods: Sequence[tuple[float, float]],
               weight: float = PERIOD_WEIGHT) -> list[tuple[K, float]]:
    """Each score plus `weight` × the best score of the ranking when `created(key)` falls in
    one of the [start, end) `periods`. Best first; ties keep the given order. No periods, or
    no positive score: the ranking as given."""
    best = max((score for _, score in ranking), default=0.0)
    if not periods or best <= 0:
        return list(ranking)
    order = {key: i for i, (key, _) in enumerate(ranking)}
    raised = [(key, score + weight * best
               if any(start <= created(key) < end for start, end in periods) else score)
              for key, score in ranking]
    return sorted(raised, key=lambda item: (-item[1], order[item[0]]))


def keep_first(ranking: Sequence[tuple[K, float]], first: K | None) -> list[tuple[K, float]]:
    """`ranking` with `first` moved to the front and its score raised to the best score (so
    scores still never increase down the list); the others keep their order and scores.
    `first` None or absent: the ranking as given."""
    keys = [key for key, _ in ranking]
    if first is None or first not in keys or keys[0] == first:
        return list(ranking)
    best = max(score for _, score in ranking)
    own = dict(ranking)[first]
    return [(first, max(own, best))] + [(k, s) for k, s in ranking if k != first]


def passage_order(found: list[Passage]) -> list[Passage]:
    """Best score first; equal scores newest first, then the highest pk: the same order for
    the same data whoever searches (tools, REST) and whatever the limit."""
    return sorted(found, key=lambda p: (-(p.score or 0.0), -p.created_at, -p.pk))


def hit_order(hits: list[MessageHit]) -> list[MessageHit]:
    """Best score first; equal scores newest first, then by conversation and the latest seq
    (hits carry no pk: conversation and seq identify them)."""
    return sorted(hits, key=lambda h: (-h.score, -h.created_at, h.conversation_id, -h.seq))


def adjacent_turns(key: tuple[str, int]) -> tuple[tuple[str, int], tuple[str, int]]:
    """A message's neighbours: the messages just before and after it in its conversation."""
    conversation, seq = key
    return (conversation, seq - 1), (conversation, seq + 1)
