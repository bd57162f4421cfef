"""Hybrid search's pure parts: reciprocal rank fusion (property tests), the fake embedding
model's paraphrase property, and the embedding service when it is disabled. The embeddings
client is tested in tests/upstream/test_embedding_client.py, `HybridSearch` over real stores
in tests/store/test_hybrid_over_stores.py."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import load_settings
from proxy.embeddings import RRF_K, EmbeddingService, rrf_fuse
from proxy.embeddings.hybrid import MAX_CANDIDATES, MIN_CANDIDATES, candidates
from tests.fakes.embeddings import CONCEPTS, concept_embed, cosine

DIM = 32

rankings = st.lists(st.lists(st.integers(0, 30), max_size=25, unique=True),
                    min_size=1, max_size=4)


# --- reciprocal rank fusion ----------------------------------------------------------------
@given(rankings)
def test_rrf_scores_are_sums_of_reciprocal_ranks(lists: list[list[int]]) -> None:
    fused = rrf_fuse(lists)
    assert {key for key, _ in fused} == set(itertools.chain(*lists))
    for key, score in fused:
        expected = sum(1 / (RRF_K + r.index(key) + 1) for r in lists if key in r)
        assert score == pytest.approx(expected)
        assert 0 < score <= len(lists) / (RRF_K + 1)
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)


@given(rankings)
def test_rrf_does_not_depend_on_the_order_of_the_rankings(lists: list[list[int]]) -> None:
    forward = dict(rrf_fuse(lists))
    backward = dict(rrf_fuse(list(reversed(lists))))
    assert forward.keys() == backward.keys()
    assert all(forward[k] == pytest.approx(backward[k]) for k in forward)


@given(st.lists(st.integers(0, 50), max_size=30, unique=True))
def test_one_ranking_keeps_its_order(ranking: list[int]) -> None:
    assert [key for key, _ in rrf_fuse([ranking])] == ranking
    assert [key for key, _ in rrf_fuse([ranking, []])] == ranking


@given(rankings, st.data())
def test_moving_an_item_up_never_moves_it_down(lists: list[list[int]], data: Any) -> None:
    candidates_ = [(i, j) for i, r in enumerate(lists) for j in range(1, len(r))]
    if not candidates_:
        return
    i, j = data.draw(st.sampled_from(candidates_))
    key = lists[i][j]
    better = [list(r) for r in lists]
    better[i][j - 1], better[i][j] = better[i][j], better[i][j - 1]
    before = [k for k, _ in rrf_fuse(lists)].index(key)
    after = [k for k, _ in rrf_fuse(better)].index(key)
    assert after <= before


def test_rrf_rewards_agreement_and_breaks_ties_deterministically() -> None:
    # "b" is second in both lists: it beats "a" and "x", each first in one list only
    assert [k for k, _ in rrf_fuse([["a", "b"], ["x", "b"]])] == ["b", "a", "x"]
    # a repeated key counts once, at its first place
    assert rrf_fuse([["a", "a", "b"]]) == rrf_fuse([["a", "b"]])
    assert rrf_fuse([]) == []


def test_candidate_depth_is_bounded() -> None:
    assert candidates(1) == MIN_CANDIDATES
    assert candidates(20) == 80
    assert candidates(100) == MAX_CANDIDATES
    assert candidates(10_000) == 10_000  # never fewer than asked for


# --- the fake embedding model ----------------------------------------------------------------
def test_paraphrases_are_near_and_unrelated_texts_far() -> None:
    query = concept_embed("what did my doctor say about peanuts", DIM)
    paraphrase = concept_embed("the physician told me to avoid groundnuts", DIM)
    unrelated = concept_embed("the kitten sleeps on the sofa", DIM)
    assert cosine(query, paraphrase) > 0.5
    assert cosine(query, unrelated) < 0.2
    assert cosine(query, query) == pytest.approx(1.0)


@given(st.sampled_from(CONCEPTS), st.data())
def test_synonyms_embed_identically(group: frozenset[str], data: Any) -> None:
    a, b = data.draw(st.lists(st.sampled_from(sorted(group)), min_size=2, max_size=2))
    assert concept_embed(f"about the {a}", DIM) == concept_embed(f"about the {b}", DIM)


# --- the embedding service -------------------------------------------------------------------
def test_the_service_is_a_no_op_when_disabled() -> None:
    settings = load_settings(environ={})
    store = object()
    service = EmbeddingService(settings, store)
    asyncio.run(service.start())
    assert service.search.backend is store and not service.search.hybrid
    assert not service.active
    service.notify(1)  # nothing to wake, nothing fails
