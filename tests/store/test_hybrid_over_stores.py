"""`HybridSearch` over real stores on both backends (SQLite and Postgres): full-text and
vector results fused, every filter honoured, and full text alone when the query embedding
fails or is too slow."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from proxy.embeddings import EmbeddingError, HybridSearch, VectorIndex
from proxy.embeddings.search import SearchService
from proxy.store.vector_base import MESSAGE, PASSAGE
from tests import store_backends
from tests.fakes.embeddings import concept_embed
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend
DIM = 32
MODEL = "fake@32"


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
        assert all(0 < p.score <= 1 for p in found)  # fused scores are in (0, 1]
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


def test_the_search_service_keeps_full_texts_first_hit_first(store_backend: Backend) -> None:
    """Fusion orders the rest, but full-text's best match stays first (core/ranking.py,
    `keep_first`): the paraphrase that fusion alone puts first comes second."""
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        texts = {"keyword": "doctor kitten",
                 "paraphrase": "doctor: avoid groundnuts",
                 "f1": "kitten on the sofa", "f2": "car trip to berlin",
                 "f3": "coffee with my sister"}
        for i, text in enumerate(texts.values()):  # one conversation each: no neighbours
            conv = await s.ensure_conversation(agent.pk, f"c{i}")
            await s.begin_turn(conv.pk, f"t{i}", f"h{i}", None, [user(text)])
        await embed_all(s, agent.pk)
        search = hybrid(s, QueryEmbedder())
        fused = await search.search_messages(agent.pk, "doctor peanuts", limit=5)
        assert fused[0].text == texts["paraphrase"]  # fusion alone moves the first place
        service = SearchService(s, search)
        found = await service.search_messages(agent.pk, "doctor peanuts", limit=5)
        text_only = await SearchService(s).search_messages(agent.pk, "doctor peanuts", limit=5)
        assert found[0].text == text_only[0].text == texts["keyword"]
        assert found[1].text == texts["paraphrase"]
        assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
        assert {h.text for h in found} >= {texts["keyword"], texts["paraphrase"]}

    store_backend.run(body)
