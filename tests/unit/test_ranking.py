"""core/ranking.py: score fusion and neighbouring turns (property tests and cases)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.ranking import (
    adjacent_turns,
    in_periods,
    keep_first,
    normalized,
    score_fuse,
    with_neighbours,
)

scored = st.lists(st.tuples(st.integers(0, 30), st.floats(0, 100, allow_nan=False)),
                  max_size=25, unique_by=lambda item: item[0]).map(
    lambda items: sorted(items, key=lambda item: -item[1]))


@given(scored)
def test_normalized_scores_span_zero_to_one_in_the_same_order(ranking) -> None:
    norm = normalized(ranking)
    assert set(norm) == {key for key, _ in ranking}
    assert all(0.0 <= v <= 1.0 for v in norm.values())
    values = [norm[key] for key, _ in ranking]
    assert values == sorted(values, reverse=True)
    if ranking:
        assert max(values) == 1.0


@given(scored, scored, st.floats(0, 1))
def test_fusion_covers_both_sides_and_is_sorted(text, vector, weight) -> None:
    fused = score_fuse(text, vector, weight)
    assert {key for key, _ in fused} == {k for k, _ in text} | {k for k, _ in vector}
    scores = [s for _, s in fused]
    assert scores == sorted(scores, reverse=True)
    assert all(-1e-9 <= s <= 1 + 1e-9 for s in scores)


@given(scored)
def test_one_side_alone_keeps_its_order(ranking) -> None:
    keys = [key for key, _ in ranking]
    assert [k for k, _ in score_fuse(ranking, [])] == keys
    assert [k for k, _ in score_fuse([], ranking)] == keys


def test_full_text_weighs_more_but_agreement_wins() -> None:
    text = [("exact", 10.0), ("both", 6.0), ("weak", 1.0)]
    vector = [("paraphrase", 0.9), ("both", 0.8), ("weak", 0.1)]
    order = [k for k, _ in score_fuse(text, vector, 0.7)]
    # "exact" (1.0 × 0.7) beats a vector-only hit (1.0 × 0.3); "both" (0.56 × 0.7 + 0.875
    # × 0.3) beats the vector-only paraphrase; the paraphrase beats the weakest keyword match
    assert order == ["exact", "both", "paraphrase", "weak"]
    assert score_fuse([("a", 3.0)], [("a", 0.5)], 0.7) == [("a", pytest.approx(1.0))]
    assert score_fuse([], []) == []


def test_equal_fused_scores_keep_full_text_order_then_vector_order() -> None:
    assert [k for k, _ in score_fuse([("a", 1.0), ("b", 1.0)], [("c", 1.0)], 0.5)] == [
        "a", "b", "c"]


def test_a_neighbour_lifts_a_turn_above_an_isolated_hit() -> None:
    ranking = [(("c", 5), 1.0), (("c", 9), 0.9), (("c", 10), 0.8), (("d", 6), 0.85)]
    raised = dict(with_neighbours(ranking, adjacent_turns, 0.5))
    assert raised[("c", 10)] == pytest.approx(0.8 + 0.45)  # next to ("c", 9)
    assert raised[("c", 9)] == pytest.approx(0.9 + 0.4)
    assert raised[("c", 5)] == 1.0 and raised[("d", 6)] == 0.85  # no neighbour in the list
    order = [k for k, _ in with_neighbours(ranking, adjacent_turns, 0.5)]
    assert order == [("c", 9), ("c", 10), ("c", 5), ("d", 6)]


@given(scored, st.floats(0, 1))
def test_neighbours_only_raise_and_a_lone_ranking_is_unchanged(ranking, weight) -> None:
    raised = dict(with_neighbours(ranking, lambda k: (k - 1, k + 1), weight))
    assert all(raised[k] >= s for k, s in ranking)
    assert with_neighbours(ranking, lambda k: (), weight) == ranking


def test_adjacent_turns_are_in_the_same_conversation() -> None:
    assert adjacent_turns(("default", 7)) == (("default", 6), ("default", 8))


def test_candidates_in_a_named_period_gain_a_share_of_the_best_score() -> None:
    created = {"old": 10.0, "in": 150.0, "edge": 200.0, "also-in": 100.0}.__getitem__
    ranking = [("old", 10.0), ("in", 8.0), ("edge", 7.0), ("also-in", 2.0)]
    raised = in_periods(ranking, created, [(100.0, 200.0)], weight=0.4)
    assert raised == [("in", 12.0), ("old", 10.0), ("edge", 7.0), ("also-in", 6.0)]
    assert in_periods(ranking, created, []) == ranking  # no period: as given
    zero = [("old", 0.0), ("in", 0.0)]
    assert in_periods(zero, created, [(100.0, 200.0)]) == zero  # nothing to scale by


@given(scored, st.floats(0, 30), st.floats(0, 30))
def test_a_period_never_lowers_a_score_and_keeps_order_within_each_side(ranking, a, b) -> None:
    lo, hi = min(a, b), max(a, b)
    raised = dict(in_periods(ranking, float, [(lo, hi)]))
    inside = [k for k, _ in ranking if lo <= k < hi]
    outside = [k for k, _ in ranking if not lo <= k < hi]
    assert all(raised[k] >= s for k, s in ranking)
    for group in (inside, outside):
        assert [raised[k] for k in group] == sorted((raised[k] for k in group), reverse=True)


@given(scored, st.integers(0, 30) | st.none())
def test_keep_first_moves_one_key_to_the_front_and_changes_nothing_else(ranking, first) -> None:
    kept = keep_first(ranking, first)
    keys = [k for k, _ in ranking]
    if first is None or first not in keys:
        assert kept == ranking
        return
    assert kept[0][0] == first
    assert sorted(k for k, _ in kept) == sorted(keys)
    # the others in their order, with their scores
    assert kept[1:] == [(k, s) for k, s in ranking if k != first]
    # scores never increase down the list: the kept key has (at least) the best score
    scores = [s for _, s in kept]
    assert scores == sorted(scores, reverse=True)
    assert kept[0][1] == max(dict(ranking)[first], ranking[0][1])


def test_keep_first_restores_full_texts_winner_over_fusion() -> None:
    text = [("exact", 7.0), ("both", 6.0), ("weak", 1.0), ("weaker", 0.5)]
    vector = [("both", 0.95), ("weak", 0.5), ("weaker", 0.4), ("exact", 0.1)]
    fused = score_fuse(text, vector, 0.7)
    assert fused[0][0] == "both"  # fusion alone moves the first place
    kept = keep_first(fused, text[0][0])
    assert [k for k, _ in kept] == ["exact", "both", "weak", "weaker"]
    assert kept[0][1] == kept[1][1] == fused[0][1]  # raised to the best score, not above


def test_rescored_hits_equal_dataclasses_replace() -> None:
    """`rescored` is a fast `dataclasses.replace(hit, score=...)`: every field but the score
    is kept, including fields added later (this fails if one is forgotten)."""
    import dataclasses

    from proxy.core.types import MessageHit, Passage

    hit = MessageHit("c", 3, "user", "text", 1.5, 0.25, name="Ann")
    passage = Passage(7, "text", ["a", "b"], 2.5, 0.5)
    for item in (hit, passage):
        assert item.rescored(0.75) == dataclasses.replace(item, score=0.75)
        assert item.score != 0.75  # a copy: the original keeps its score
