"""Hybrid search: reciprocal rank fusion (property tests), the fake embedding model's
paraphrase property, the embeddings client against the fake upstream app, and `HybridSearch`
over real stores on both backends."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import load_settings
from proxy.embeddings import (
    RRF_K,
    EmbeddingClient,
    EmbeddingError,
    EmbeddingService,
    HybridSearch,
    VectorIndex,
    rrf_fuse,
)
from proxy.embeddings.client import parse_embeddings
from proxy.embeddings.hybrid import MAX_CANDIDATES, MIN_CANDIDATES, candidates
from proxy.store.vector_base import MESSAGE, PASSAGE
from tests import store_backends
from tests.fakes import FakeUpstream
from tests.fakes.embeddings import CONCEPTS, concept_embed, cosine
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend
DIM = 32
MODEL = "fake@32"

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


# --- the client ----------------------------------------------------------------------------
def client_for(fake: FakeUpstream, **kw: Any) -> EmbeddingClient:
    transport = httpx.ASGITransport(app=fake.app)
    return EmbeddingClient("http://fake/v1", kw.pop("key", "sk-e"), "m", transport=transport,
                           **kw)


def test_the_client_returns_normalized_rows_in_input_order() -> None:
    fake = FakeUpstream()
    fake.embedder = concept_embed

    async def run() -> np.ndarray:
        client = client_for(fake, dimensions=DIM)
        try:
            return await client.embed(["dog", "feline", "dog"])
        finally:
            await client.aclose()

    matrix = asyncio.run(run())
    assert matrix.shape == (3, DIM) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0)
    assert np.array_equal(matrix[0], matrix[2]) and not np.array_equal(matrix[0], matrix[1])
    body = fake.all_requests[-1].json
    assert body == {"model": "m", "input": ["dog", "feline", "dog"], "encoding_format": "float",
                    "dimensions": DIM}
    assert fake.all_requests[-1].headers["authorization"] == "Bearer sk-e"


@pytest.mark.parametrize("setup_fake, code, status", [
    (lambda f: setattr(f, "embeddings_status", 503), "server_error", 503),
    (lambda f: setattr(f, "require_api_key", "other"), "invalid_api_key", 401),
])
def test_client_errors_are_typed_and_leak_nothing(setup_fake: Any, code: str,
                                                  status: int) -> None:
    fake = FakeUpstream()
    setup_fake(fake)

    async def run() -> EmbeddingError:
        client = client_for(fake, key="sk-secret-key")
        try:
            with pytest.raises(EmbeddingError) as info:
                await client.embed(["my secret diary entry"])
            return info.value
        finally:
            await client.aclose()

    error = asyncio.run(run())
    assert (error.status, error.code) == (status, code)
    assert "secret" not in str(error) and "diary" not in str(error)
    assert not error.bad_input


def test_an_unreachable_endpoint_is_an_error_not_a_crash() -> None:
    async def run() -> EmbeddingError:
        client = EmbeddingClient("http://127.0.0.1:9/v1", None, "m", timeout_s=2)
        try:
            with pytest.raises(EmbeddingError) as info:
                await client.embed(["x"])
            return info.value
        finally:
            await client.aclose()

    assert asyncio.run(run()).code == "unreachable"


@pytest.mark.parametrize("payload", [
    None, {}, {"data": []}, {"data": [{"index": 0, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]},
    {"data": [{"index": 0, "embedding": "not base64!"}, {"index": 1, "embedding": [1.0]}]},
    {"data": [{"index": 0, "embedding": [float("nan")]}, {"index": 1, "embedding": [1.0]}]},
])
def test_malformed_responses_are_rejected(payload: Any) -> None:
    with pytest.raises(EmbeddingError) as info:
        parse_embeddings(payload, 2)
    assert info.value.code == "bad_response"


def test_responses_out_of_order_and_base64_are_accepted() -> None:
    import base64
    encoded = base64.b64encode(np.array([0.0, 2.0], dtype="<f4").tobytes()).decode()
    matrix = parse_embeddings({"data": [{"index": 1, "embedding": encoded},
                                        {"index": 0, "embedding": [3.0, 4.0]}]}, 2)
    assert np.allclose(matrix, [[0.6, 0.8], [0.0, 1.0]])


def test_the_service_is_a_no_op_when_disabled() -> None:
    settings = load_settings(environ={})
    store = object()
    service = EmbeddingService(settings, store)
    asyncio.run(service.start())
    assert service.search is store and not service.active
    service.notify(1)  # nothing to wake, nothing fails


# --- HybridSearch over real stores --------------------------------------------------------
def vec(text: str) -> np.ndarray:
    return np.asarray(concept_embed(text, DIM), dtype=np.float32)


class QueryEmbedder:
    """Embeds queries in-process; can be told to fail like an endpoint that is down."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    async def __call__(self, query: str) -> np.ndarray:
        self.calls += 1
        if self.down:
            raise EmbeddingError("down", status=503, code="server_error")
        return vec(query)


async def embed_all(s: Any, agent_pk: int) -> None:
    for kind in (PASSAGE, MESSAGE):
        page = await s.pending_texts(kind, MODEL, 0, 1000)
        await s.put_vectors(kind, MODEL, [(i.pk, vec(i.text)) for i in page.items])


def hybrid(s: Any, embedder: QueryEmbedder) -> HybridSearch:
    return HybridSearch(s, VectorIndex(s, MODEL, 1 << 30), embedder, timeout_s=5)


def test_passages_fuse_full_text_and_vectors(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        texts = {"answer": "the physician said to avoid groundnuts",
                 "d1": "doctor appointment on monday", "d2": "peanut butter recipe",
                 "tagged": "groundnut farming notes", "far": "kitten on the sofa"}
        pks = {}
        for name, text in texts.items():
            tags = ["farm"] if name == "tagged" else []
            pks[name] = (await s.insert_passage(agent.pk, text, tags)).pk
        embedder = QueryEmbedder()
        search = hybrid(s, embedder)
        # no vectors yet: exactly the full-text result, and no query embedding asked for
        plain = await s.search_passages(agent.pk, "doctor peanut", top_k=3)
        assert await search.search_passages(agent.pk, "doctor peanut", top_k=3) == plain
        assert embedder.calls == 0
        await embed_all(s, agent.pk)

        found = await search.search_passages(agent.pk, "doctor peanut", top_k=3)
        # found by both lists first, then the best vector-only hit: the paraphrase
        assert {p.pk for p in found[:2]} == {pks["d1"], pks["d2"]}
        assert found[2].pk == pks["answer"]
        assert all(0 < p.score < 2 / RRF_K for p in found)
        # tags restrict the vector side as well
        farm = await search.search_passages(agent.pk, "doctor peanut", tags=["farm"], top_k=5)
        assert [p.pk for p in farm] == [pks["tagged"]]
        # a blank query is full-text's newest-first listing
        assert (await search.search_passages(agent.pk, " ", top_k=2)
                == await s.search_passages(agent.pk, " ", top_k=2))
        # the endpoint fails: full-text alone, exactly
        embedder.down = True
        assert (await search.search_passages(agent.pk, "doctor recipe", top_k=3)
                == await s.search_passages(agent.pk, "doctor recipe", top_k=3))

    store_backend.run(body)


def test_messages_fuse_and_honour_every_filter(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        first = await s.begin_turn(conv.pk, "t1", "h1", None, [user("my physician said no")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            assistant("avoid groundnuts then"), assistant("internal step", visible=False)))
        await s.begin_turn(conv.pk, "t2", "h2", None, [user("a doctor joke")])
        await s.begin_turn(conv.pk, "t3", "h3", None, [user("the medic was wrong")],
                           supersede_from_seq=first + 3)  # "a doctor joke" superseded
        await embed_all(s, agent.pk)
        search = hybrid(s, QueryEmbedder())
        texts = [h.text for h in await search.search_messages(agent.pk, "doctor", limit=10)]
        assert "my physician said no" in texts and "the medic was wrong" in texts
        assert "a doctor joke" not in texts and "internal step" not in texts
        users = await search.search_messages(agent.pk, "doctor", roles=["user"], limit=10)
        assert users and {h.role for h in users} == {"user"}
        late = await search.search_messages(agent.pk, "doctor", start=9e12, limit=10)
        assert late == []
        hit = (await search.search_messages(agent.pk, "groundnuts", limit=1))[0]
        assert (hit.conversation_id, hit.seq, hit.role) == ("default", first + 1, "assistant")

    store_backend.run(body)


def test_a_slow_query_embedding_times_out_to_full_text(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        await s.insert_passage(agent.pk, "doctor visit", [])
        await s.insert_passage(agent.pk, "physician", [])
        await embed_all(s, agent.pk)

        async def slow(query: str) -> np.ndarray:
            await asyncio.sleep(30)
            return vec(query)

        search = HybridSearch(s, VectorIndex(s, MODEL, 1 << 30), slow, timeout_s=0.05)
        assert (await search.search_passages(agent.pk, "doctor", top_k=5)
                == await s.search_passages(agent.pk, "doctor", top_k=5))

    store_backend.run(body)
