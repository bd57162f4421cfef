"""Vectors: the float32 codec, in-process scoring, the store's vector methods on both backends,
the per-agent cache and the background worker (against real stores, with a deterministic
in-process embedding function instead of an HTTP endpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from proxy.core.types import NewMessage
from proxy.embeddings import EmbeddingError, EmbeddingWorker, VectorIndex
from proxy.embeddings.client import normalize_rows
from proxy.embeddings.index import AgentVectors
from proxy.store.vector_base import (
    CONTEXT_CHARS,
    MESSAGE,
    PASSAGE,
    ROLE_CODES,
    VectorRows,
    VectorState,
    pack,
    unpack,
)
from tests import store_backends
from tests.fakes.embeddings import concept_embed
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend


async def vector_rows(store: Any, agent_pk: int) -> dict[str, int]:
    """The agent's stored vectors per kind, any model (`vector_state`'s row counts)."""
    return {kind: (await store.vector_state(kind, agent_pk)).rows for kind in (PASSAGE, MESSAGE)}


DIM = 32
MODEL = "fake@32"


def vec(text: str) -> np.ndarray:
    return np.asarray(concept_embed(text, DIM), dtype=np.float32)


async def embed(texts: Sequence[str]) -> np.ndarray:
    return np.vstack([vec(t) for t in texts])


# --- codec -------------------------------------------------------------------------------
@given(hnp.arrays(np.float32, st.integers(1, 64),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_blobs_round_trip_exactly(values: np.ndarray) -> None:
    blob = pack(values)
    assert len(blob) == 4 * values.shape[0]
    assert np.array_equal(unpack(blob, values.shape[0]), values)


def test_blobs_are_little_endian_float32_and_checked() -> None:
    assert pack(np.array([1.0, -2.0])) == b"\x00\x00\x80?\x00\x00\x00\xc0"
    with pytest.raises(ValueError, match="3 dimensions, expected 4"):
        unpack(pack(np.ones(3)), 4)


# --- in-process scoring --------------------------------------------------------------------
def rows_of(matrix: np.ndarray, pks: list[int], *, tags: list[list[str]] | None = None,
            roles: list[int] | None = None, created: list[float] | None = None) -> VectorRows:
    n = len(pks)
    return VectorRows(VectorState(n, n, 0), scanned=n, max_id=n, pks=pks,
                      blobs=[pack(r) for r in matrix], tags=tags or [[] for _ in pks],
                      roles=roles or [1] * n, created=created or [0.0] * n)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.integers(2, 9), st.integers(1, 30), st.integers(0, 10),
       st.integers(0, 2**31 - 1))
def test_top_matches_brute_force(n: int, dim: int, k: int, skip: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    matrix = normalize_rows(rng.normal(size=(n, dim)).astype(np.float32))
    query = normalize_rows(rng.normal(size=(1, dim)).astype(np.float32))[0]
    pks = [1000 + i for i in range(n)]
    vectors = AgentVectors(PASSAGE)
    half = n // 2  # appended in two reads, as the cache does
    vectors.extend(rows_of(matrix[:half], pks[:half]))
    vectors.extend(rows_of(matrix[half:], pks[half:]))
    got = vectors.top(query, k, skip=skip)
    scores = matrix @ query
    order = sorted(range(n), key=lambda i: -scores[i])[skip:skip + k]
    assert [pk for pk, _ in got] == [pks[i] for i in order]
    assert np.allclose([s for _, s in got], [scores[i] for i in order], atol=1e-6)


def test_masks_restrict_the_candidates() -> None:
    matrix = np.eye(4, dtype=np.float32)
    vectors = AgentVectors(MESSAGE)
    vectors.extend(rows_of(matrix, [1, 2, 3, 4], roles=[1, 2, 1, 2],
                           created=[10.0, 20.0, 30.0, 40.0]))
    query = np.ones(4, dtype=np.float32) / 2
    mask = vectors.message_mask(["assistant"], 15.0, None)
    assert [pk for pk, _ in vectors.top(query, 10, mask)] == [2, 4]
    mask = vectors.message_mask(["user"], None, 25.0)
    assert [pk for pk, _ in vectors.top(query, 10, mask)] == [1]
    assert not vectors.message_mask(["tool"], None, None).any()
    assert vectors.message_mask(None, None, None) is None

    passages = AgentVectors(PASSAGE)
    passages.extend(rows_of(matrix, [1, 2, 3, 4], tags=[["a"], ["a", "b"], ["b"], []]))
    assert [pk for pk, _ in passages.top(query, 10, passages.tag_mask(["a", "b"]))] == [2]
    assert sorted(pk for pk, _ in passages.top(query, 10, passages.tag_mask(["b"]))) == [2, 3]
    assert not passages.tag_mask(["nope"]).any()
    assert passages.top(np.ones(3, dtype=np.float32), 5) == []  # another dimension


def test_rows_of_another_dimension_are_skipped() -> None:
    vectors = AgentVectors(PASSAGE)
    rows = rows_of(np.eye(3, dtype=np.float32), [1, 2, 3])
    rows.blobs[1] = pack(np.ones(5))
    vectors.extend(rows)
    assert vectors.count == 2 and vectors.scanned == 3


# --- the store's vector methods (both backends) --------------------------------------------
def test_pending_rows_and_storing_vectors(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        first = await s.begin_turn(conv.pk, "t1", "h", None, [user("dogs bark")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            assistant("", visible=False), assistant("puppies are canines"),
            NewMessage({"role": "tool", "tool_call_id": "c1", "content": "client tool result"}),
            passages=[("the sedan is red", ["car"]), ("", [])]))
        await s.begin_turn(conv.pk, "t2", "h2", None, [user("to be replaced")])
        await s.begin_turn(conv.pk, "t3", "h3", None, [user("after the edit")],
                           supersede_from_seq=first + 4)  # "to be replaced"
        passages = await s.pending_texts(PASSAGE, MODEL, 0, 100)
        messages = await s.pending_texts(MESSAGE, MODEL, 0, 100)
        assert [i.text for i in passages.items] == ["the sedan is red"]  # empty text: skipped
        assert passages.done and messages.done
        # visible, not superseded, user/assistant, with text
        assert [i.text for i in messages.items] == ["dogs bark", "puppies are canines",
                                                    "after the edit"]
        assert {i.agent_pk for i in messages.items} == {agent.pk}
        # a page as long as the limit resumes after its last row
        page = await s.pending_texts(MESSAGE, MODEL, 0, 2)
        assert [i.text for i in page.items] == ["dogs bark", "puppies are canines"]
        rest = await s.pending_texts(MESSAGE, MODEL, page.cursor, 10)
        assert [i.text for i in rest.items] == ["after the edit"]

        added = await s.put_vectors(MESSAGE, MODEL, [(i.pk, vec(i.text)) for i in messages.items])
        assert added == 3
        assert await s.put_vectors(MESSAGE, MODEL, [(messages.items[0].pk, vec("x"))]) == 0
        assert await s.put_vectors(PASSAGE, MODEL, [(999_999, vec("gone"))]) == 0  # no row
        assert (await s.pending_texts(MESSAGE, MODEL, 0, 100)).items == []
        # another model: everything is pending again, and replaced when stored
        again = await s.pending_texts(MESSAGE, "other", 0, 100)
        assert len(again.items) == 3
        await s.put_vectors(MESSAGE, "other", [(i.pk, vec(i.text)[:16]) for i in again.items])
        assert await vector_rows(s, agent.pk) == {PASSAGE: 0, MESSAGE: 3}
        loaded = await s.load_vectors(MESSAGE, agent.pk, "other")
        assert loaded.scanned == 3 and [len(b) for b in loaded.blobs] == [64, 64, 64]
        assert loaded.roles == [ROLE_CODES["user"], ROLE_CODES["assistant"], ROLE_CODES["user"]]
        assert all(c > 0 for c in loaded.created)
        assert (await s.load_vectors(MESSAGE, agent.pk, MODEL)).pks == []

    store_backend.run(body)


def test_messages_are_embedded_with_the_turns_before_them(store_backend: Backend) -> None:
    """`context_turns`: a message's text comes after its conversation's earlier turns (only
    turns: not hidden steps, tool calls or results, superseded messages, other conversations),
    each clipped to its end; passages and the first turn stay alone."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        _, other = await setup(s, conversation_id="other")
        long_question = "x" * 400 + " where did you go hiking?"
        first = await s.begin_turn(conv.pk, "t1", "h", None, [user(long_question)])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            assistant("", visible=False),
            NewMessage({"role": "assistant", "content": "calling a tool",
                        "tool_calls": [{"id": "c1", "type": "function",
                                        "function": {"name": "f", "arguments": "{}"}}]}),
            NewMessage({"role": "tool", "tool_call_id": "c1", "content": "client tool result"}),
            assistant("to the lake"), passages=[("the sedan is red", [])]))
        await s.begin_turn(other.pk, "o1", "ho", None, [user("another conversation")])
        await s.begin_turn(conv.pk, "t2", "h2", None, [user("to be replaced")])
        await s.begin_turn(conv.pk, "t3", "h3", None, [user("with whom?")],
                           supersede_from_seq=first + 5)  # "to be replaced"
        clipped = long_question[-CONTEXT_CHARS:]
        assert len(clipped) == CONTEXT_CHARS and clipped.endswith("hiking?")

        plain = [i.text for i in (await s.pending_texts(MESSAGE, MODEL, 0, 100)).items]
        one = [i.text for i in (await s.pending_texts(MESSAGE, MODEL, 0, 100, 1)).items]
        two = [i.text for i in (await s.pending_texts(MESSAGE, MODEL, 0, 100, 2)).items]
        call = plain[1]  # the call's text (embedded as before) is not a turn for its successors
        assert call.startswith("calling a tool")
        assert plain == [long_question, call, "to the lake", "another conversation", "with whom?"]
        assert one == [long_question, f"{clipped}\n{call}", f"{clipped}\nto the lake",
                       "another conversation", "to the lake\nwith whom?"]
        assert two[-1] == f"{clipped}\nto the lake\nwith whom?"
        passages = await s.pending_texts(PASSAGE, MODEL, 0, 100, 2)
        assert [i.text for i in passages.items] == ["the sedan is red"]

    store_backend.run(body)


def test_vector_state_follows_inserts_and_cascaded_deletes(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other, _ = await setup(s, "bob")
        ps = [await s.insert_passage(agent.pk, f"text {i}", ["t"] if i % 2 else [])
              for i in range(4)]
        mine = await s.insert_passage(other.pk, "bob's", [])
        await s.put_vectors(PASSAGE, MODEL, [(p.pk, vec(p.text)) for p in ps[:2]])
        state = await s.vector_state(PASSAGE, agent.pk)
        assert state == VectorState(2, 2, 0)
        first = await s.load_vectors(PASSAGE, agent.pk, MODEL)
        assert first.pks == [ps[0].pk, ps[1].pk] and first.tags == [[], ["t"]]
        await s.put_vectors(PASSAGE, MODEL, [(p.pk, vec(p.text)) for p in ps[2:]]
                            + [(mine.pk, vec(mine.text))])
        newer = await s.load_vectors(PASSAGE, agent.pk, MODEL, first.max_id)
        assert newer.pks == [ps[2].pk, ps[3].pk] and newer.state == VectorState(4, 4, 0)
        assert await s.delete_passage(agent.pk, ps[0].pk)
        assert await s.vector_state(PASSAGE, agent.pk) == VectorState(3, 5, 1)
        assert await s.vector_state(PASSAGE, other.pk) == VectorState(1, 1, 0)
        # the passages the vectors point to, in the order asked, the agent's only
        found = await s.passages_by_pks(agent.pk, [ps[3].pk, mine.pk, ps[0].pk, ps[1].pk])
        assert [p.pk for p in found] == [ps[3].pk, ps[1].pk]
        await s.delete_agent(agent.pk)
        assert await s.vector_state(PASSAGE, agent.pk) == VectorState()
        assert await vector_rows(s, other.pk) == {PASSAGE: 1, MESSAGE: 0}

    store_backend.run(body)


def test_message_hits_leave_out_hidden_and_superseded(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        first = await s.begin_turn(conv.pk, "t1", "h", None, [user("one"), user("two")])
        await s.begin_turn(conv.pk, "t2", "h2", None, [user("three")],
                           supersede_from_seq=first + 1)
        rows = await store_backend.sql(s, "SELECT pk FROM messages ORDER BY seq")
        pks = [r[0] for r in rows]
        hits = await s.message_hits_by_pks(agent.pk, list(reversed(pks)))
        assert [(pk, h.text, h.conversation_id) for pk, h in hits] == [
            (pks[2], "three", "default"), (pks[0], "one", "default")]
        other, _ = await setup(s, "bob")
        assert await s.message_hits_by_pks(other.pk, pks) == []

    store_backend.run(body)


# --- the cache -----------------------------------------------------------------------------
def test_the_cache_appends_new_rows_and_reloads_after_deletes(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        index = VectorIndex(s, MODEL, 1 << 30)
        assert await index.get(PASSAGE, agent.pk) is None
        ps = [await s.insert_passage(agent.pk, t, []) for t in ("dog", "cat", "car")]
        await s.put_vectors(PASSAGE, MODEL, [(p.pk, vec(p.text)) for p in ps[:2]])
        vectors = await index.get(PASSAGE, agent.pk)
        assert vectors.count == 2 and (index.loads, index.appends) == (1, 0)
        assert await index.get(PASSAGE, agent.pk) is vectors  # unchanged: no read at all
        # written by another store (another process): appended, not reloaded
        other = store_backend.store()
        await other.open()
        try:
            await other.put_vectors(PASSAGE, MODEL, [(ps[2].pk, vec("car"))])
        finally:
            await other.close()
        vectors = await index.get(PASSAGE, agent.pk)
        assert vectors.count == 3 and (index.loads, index.appends) == (1, 1)
        assert vectors.top(vec("automobile"), 1)[0][0] == ps[2].pk
        await s.delete_passage(agent.pk, ps[2].pk)
        vectors = await index.get(PASSAGE, agent.pk)
        assert vectors.count == 2 and index.loads == 2
        assert ps[2].pk not in [pk for pk, _ in vectors.top(vec("automobile"), 5)]

    store_backend.run(body)


def test_the_cache_evicts_least_recently_used(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agents = [(await setup(s, name))[0] for name in ("a", "b", "c")]
        for agent in agents:
            p = await s.insert_passage(agent.pk, "dog", [])
            await s.put_vectors(PASSAGE, MODEL, [(p.pk, vec("dog"))])
        one = AgentVectors(PASSAGE)
        one.extend(await s.load_vectors(PASSAGE, agents[0].pk, MODEL))
        index = VectorIndex(s, MODEL, 2 * one.nbytes)
        for agent in agents:
            await index.get(PASSAGE, agent.pk)
        assert [key[1] for key in index._cache] == [agents[1].pk, agents[2].pk]

    store_backend.run(body)


# --- the background worker ---------------------------------------------------------------
def test_the_worker_embeds_every_pending_row(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("my dog"), user("my cat")])
        for i in range(7):
            await s.insert_passage(agent.pk, f"passage {i}", [])
        calls: list[int] = []

        async def counted(texts: Sequence[str]) -> np.ndarray:
            calls.append(len(texts))
            return await embed(texts)

        worker = EmbeddingWorker(s, counted, MODEL, batch_size=3, max_queue=4)
        assert await worker.drain() == 9
        assert calls and max(calls) <= 3
        assert await vector_rows(s, agent.pk) == {PASSAGE: 7, MESSAGE: 2}
        assert await worker.drain() == 0  # nothing left, nothing re-embedded
        await s.insert_passage(agent.pk, "one more", [])
        assert await worker.drain() == 1

    store_backend.run(body)


def test_a_failed_batch_is_retried_and_a_refused_text_skipped(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, _ = await setup(s)
        for text in ("alpha", "REFUSED", "gamma", "delta"):
            await s.insert_passage(agent.pk, text, [])
        down = True

        async def flaky(texts: Sequence[str]) -> np.ndarray:
            if down:
                raise EmbeddingError("down", status=503, code="server_error")
            if "REFUSED" in texts:
                raise EmbeddingError("too long", status=400, code="invalid_request_error")
            return await embed(texts)

        worker = EmbeddingWorker(s, flaky, MODEL, batch_size=4)
        with pytest.raises(EmbeddingError):
            await worker.drain()
        worker._failed(EmbeddingError("down", status=503))  # what the loop does: rewind
        assert worker.failures == 1 and worker.queued == 0
        assert await vector_rows(s, agent.pk) == {PASSAGE: 0, MESSAGE: 0}
        down = False
        assert await worker.drain() == 3  # the batch is split until the refused text is alone
        assert len(worker.skipped) == 1 and worker.failures == 2
        texts = {p.text for p in await s.passages_by_pks(
            agent.pk, (await s.load_vectors(PASSAGE, agent.pk, MODEL)).pks)}
        assert texts == {"alpha", "gamma", "delta"}

    store_backend.run(body)


# --- pgvector (not installed here: its absence is detected; its SQL is checked as text) -----
postgres_url = store_backends.postgres_url


def test_pgvector_is_not_used_when_the_extension_is_missing(postgres_url: str) -> None:
    from proxy.store import open_store
    from tests.store_backends import run_with_store

    async def body(s: Any) -> Any:
        available = await s.pool.fetchval(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        return available, await s.detect_pgvector(), s.pgvector

    available, detected, used = run_with_store(open_store(postgres_url), body)
    if available:
        pytest.skip("pgvector is installed on this server: the absence cannot be tested")
    assert detected is None and used is None


def test_pgvector_statements_number_their_parameters() -> None:
    import re

    from proxy.store.postgres.vectors import (
        hnsw_index_sql,
        insert_sql,
        pgvector_top_sql,
        vector_literal,
    )

    def highest(sql: str) -> int:
        return max(int(n) for n in re.findall(r"\$(\d+)", sql))

    assert highest(pgvector_top_sql(MESSAGE, 8)) == 4
    assert highest(pgvector_top_sql(MESSAGE, 8, roles=True, start=True, end=True)) == 7
    assert highest(pgvector_top_sql(MESSAGE, 8, end=True)) == 5
    assert highest(pgvector_top_sql(PASSAGE, 8, tags=True)) == 5
    assert "vector(8)" in pgvector_top_sql(PASSAGE, 8) and "dim = 8" in hnsw_index_sql(PASSAGE, 8)
    assert highest(insert_sql(PASSAGE, False)) == 5 and highest(insert_sql(MESSAGE, True)) == 6
    values = np.array([0.1, -1e-30, 3.4e38, 1 / 3], dtype=np.float32)
    parsed = np.array([float(x) for x in vector_literal(values)[1:-1].split(",")],
                      dtype=np.float32)
    assert np.array_equal(parsed, values)
