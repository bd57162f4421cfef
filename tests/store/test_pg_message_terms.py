"""Search vectors written after the turn (migration 15, proxy/store/postgres/message_terms.py).

A turn's messages are queued, not indexed, by its own statements; the store's background
indexer moves them to `message_terms`. Searches must not depend on how far it has got: the
same hits with the same scores before, during and after its passes; a vector made stale by a
change (forgetting) must never be searched; a change still running must not be indexed from
the text it replaces; and nothing queued may be lost when a process stops."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from proxy.store.postgres.message_terms import TermsIndexer
from proxy.store.postgres.store import PostgresStore
from proxy.store.postgres.term_stats import counts_sql
from tests import store_backends
from tests.store_backends import assistant, result, setup, user, waiting_on_a_lock

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database

PAUSED = 3600.0  # an indexer delay no test waits out: the queue stays as the turns left it

TOPICS = ["hiking near the lake with a heron", "baking sourdough bread with rye flour",
          "the heron returned to the lake at dawn", "a zebra at the zoo", "rye whisky tasting",
          "Caroline adopted a puppy named Biscuit", "bread and butter pudding recipe"]
QUERIES = ["heron lake", "bread", "rye", "zebra puppy", "caroline biscuit", "dawn whisky",
           "unknownword", "the and of"]


def _paused(url: str) -> PostgresStore:
    store = PostgresStore(url)
    store.terms.delay_s = PAUSED
    return store


async def _turns(s: Any, conv: Any, agent: Any, prefix: str, n: int) -> None:
    for i in range(n):
        tid = f"{prefix}{i}"
        await s.begin_turn(conv.pk, tid, "h", None, [user(f"{TOPICS[i % len(TOPICS)]} {i}")])
        await s.finish_turn(tid, conv.pk, agent.pk,
                            result(assistant(f"noted: {TOPICS[(i + 3) % len(TOPICS)]}")))


async def _searches(s: Any, agent: Any, conv: Any) -> list[Any]:
    """What every search over messages answers now (hits with rounded scores)."""
    out: list[Any] = []
    for q in QUERIES:
        out.append([(h.seq, h.role, round(h.score, 9))
                    for h in await s.search_messages(agent.pk, q, limit=8)])
        out.append([(h.seq, round(h.score, 9))
                    for h in await s.search_messages(agent.pk, q, roles=["user"], newest=5)])
        out.append([(m.seq, round(score, 9))
                    for m, score in await s.search_conversation(conv.pk, agent.pk, q)])
        out.append(sorted(await s.forget_candidates(agent.pk, q, 100)))
    return out


async def _queued(s: Any) -> int:
    return await s.pool.fetchval("SELECT count(*) FROM message_terms_pending")


async def _indexed(s: Any) -> int:
    return await s.pool.fetchval("SELECT count(*) FROM message_terms")


def test_searches_find_the_same_before_during_and_after_indexing(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await _turns(s, conv, agent, "a", 12)
        assert await _queued(s) == 24 and await _indexed(s) == 0  # the turns wrote no vector
        before = await _searches(s, agent, conv)
        assert any(before) and before[0]  # "heron lake" finds something
        partial = TermsIndexer(batch=9)
        assert await partial.index_batch(s.pool) == 9
        assert await _queued(s) == 15 and await _indexed(s) == 9
        assert await _searches(s, agent, conv) == before
        assert await s.terms.drain() == 15
        assert await _queued(s) == 0 and await _indexed(s) == 24
        assert await _searches(s, agent, conv) == before
        # counts for the term budget see queued rows too
        await _turns(s, conv, agent, "b", 3)
        rows = await s.pool.fetch(counts_sql("messages"), agent.pk, ["heron"], ["'heron'"])
        indexed_and_queued = await s.pool.fetchval(
            "SELECT count(*) FROM messages WHERE agent_pk = $1 AND visible AND text LIKE"
            " '%heron%'", agent.pk)
        assert rows[0][1] == indexed_and_queued

    store_backends.run_with_store(_paused(postgres_url), body)


def test_a_forgotten_message_is_never_found_by_its_old_words(postgres_url: str) -> None:
    """Forgetting drops the vector in its own transaction and queues the row again; a stale
    vector left beside a queued row (the indexer's race) is never searched."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await _turns(s, conv, agent, "a", 7)
        await s.terms.drain()
        zebra = [h.seq for h in await s.search_messages(agent.pk, "zebra")]
        assert zebra
        await s.forget("t1", "alice", agent.pk, [(conv.conversation_id, q) for q in zebra], [],
                       actor="test")
        assert await s.search_messages(agent.pk, "zebra") == []
        assert await s.forget_candidates(agent.pk, "zebra", 10) == []
        assert await s.search_conversation(conv.pk, agent.pk, "zebra") == []
        assert await _queued(s) == len(zebra)
        # a vector that says "unicorn" for a queued row: the row counts as queued only
        seq = zebra[0]
        await s.pool.execute(
            "INSERT INTO message_terms (message_pk, agent_pk, tsv) SELECT pk, agent_pk,"
            " to_tsvector('unicorn') || array_to_tsvector(ARRAY[' a' || agent_pk::text])"
            " FROM messages"
            " WHERE conversation_pk = $1 AND seq = $2", conv.pk, seq)
        assert await s.search_messages(agent.pk, "unicorn") == []
        assert await s.search_messages(agent.pk, "unicorn", newest=5) == []  # in the window
        assert await s.search_messages(agent.pk, "unicorn", newest=1) == []  # older than it
        assert await s.forget_candidates(agent.pk, "unicorn", 10) == []
        assert await s.search_conversation(conv.pk, agent.pk, "unicorn") == []
        await s.terms.drain()  # replaces it
        assert await s.search_messages(agent.pk, "unicorn zebra") == []
        assert await _queued(s) == 0

    store_backends.run_with_store(_paused(postgres_url), body)


def test_a_change_still_running_is_not_indexed_from_the_text_it_replaces(
        postgres_url: str) -> None:
    """Both orders of the race between the indexer and a change of a message's text."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await _turns(s, conv, agent, "a", 2)
        await s.terms.drain()
        pk = await s.pool.fetchval("SELECT pk FROM messages WHERE seq = 1"
                                   " AND conversation_pk = $1", conv.pk)
        change = ("UPDATE messages SET text = $2, data = json_build_object('role', 'user',"
                  " 'content', $2::text) WHERE pk = $1")
        # 1. the change runs first, on a row already queued (by an earlier change): the
        # queue row stays locked until the change commits
        await s.pool.execute(change, pk, "a zebu")
        assert await _queued(s) == 1
        conn = await asyncpg.connect(postgres_url)
        try:
            tx = conn.transaction()
            await tx.start()
            await conn.execute(change, pk, "a giraffe")
            assert await s.terms.index_batch(s.pool) == 0  # skipped, not taken
            await tx.commit()
        finally:
            await conn.close()
        assert await s.terms.index_batch(s.pool) == 1
        assert [h.seq for h in await s.search_messages(agent.pk, "giraffe")] == [1]
        assert await s.search_messages(agent.pk, "zebu") == []
        # 2. the indexer takes the row first: the change waits for it, then queues the row
        # again (the indexer's function's two statements, with the change between them)
        await s.pool.execute(change, pk, "an okapi")
        indexer = await asyncpg.connect(postgres_url)
        try:
            tx = indexer.transaction()
            await tx.start()
            taken = [r[0] for r in await indexer.fetch(
                "DELETE FROM message_terms_pending q USING (SELECT agent_pk, message_pk"
                " FROM message_terms_pending LIMIT 10 FOR UPDATE SKIP LOCKED) k"
                " WHERE q.agent_pk = k.agent_pk AND q.message_pk = k.message_pk"
                " RETURNING q.message_pk")]
            assert taken == [pk]
            task = asyncio.ensure_future(s.pool.execute(change, pk, "a narwhal"))
            await waiting_on_a_lock(s, "the indexer's queue row")
            await indexer.execute(
                "INSERT INTO message_terms (message_pk, agent_pk, tsv) SELECT m.pk, m.agent_pk,"
                " memproxy_message_vector(m.agent_pk, m.text, m.data) FROM messages m"
                " WHERE m.pk = ANY($1::bigint[]) AND m.visible ON CONFLICT (message_pk)"
                " DO UPDATE SET agent_pk = excluded.agent_pk, tsv = excluded.tsv", taken)
            await tx.commit()
            await task
        finally:
            await indexer.close()
        assert await _queued(s) == 1  # queued again, after the indexer's commit
        assert await s.search_messages(agent.pk, "okapi") == []
        assert [h.seq for h in await s.search_messages(agent.pk, "narwhal")] == [1]
        await s.terms.drain()
        assert await s.search_messages(agent.pk, "okapi") == []
        assert [h.seq for h in await s.search_messages(agent.pk, "narwhal")] == [1]

    store_backends.run_with_store(_paused(postgres_url), body)


def test_deleted_messages_leave_no_vector_and_no_queue_behind(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        _, other = await setup(s, conversation_id="other")
        await _turns(s, conv, agent, "a", 3)
        await s.terms.drain()
        await _turns(s, other, agent, "b", 2)  # queued
        assert await _indexed(s) == 6 and await _queued(s) == 4
        assert await s.delete_conversation("t1", "alice", agent.pk, "default", "test")
        assert await _indexed(s) == 0  # with their messages
        assert await s.delete_conversation("t1", "alice", agent.pk, "other", "test")
        assert await _queued(s) == 4  # no key to cascade along: the indexer drops them
        assert await s.terms.drain() == 4
        assert await _queued(s) == 0 and await _indexed(s) == 0

    store_backends.run_with_store(_paused(postgres_url), body)


def test_turns_are_indexed_in_the_background_and_a_stopped_queue_by_the_next_open(
        postgres_url: str) -> None:
    async def stopped(s: Any) -> None:
        agent, conv = await setup(s)
        await _turns(s, conv, agent, "a", 3)
        assert await _queued(s) == 6  # closed before its indexer ran

    store_backends.run_with_store(_paused(postgres_url), stopped)

    async def reopened(s: Any) -> None:
        await asyncio.sleep(0.05)
        await s.terms.settle()
        assert await _queued(s) == 0 and await _indexed(s) == 6
        agent, conv = await setup(s)
        await _turns(s, conv, agent, "b", 4)
        for _ in range(100):
            await s.terms.settle()
            if await _queued(s) == 0:
                break
            await asyncio.sleep(0.05)
        assert await _queued(s) == 0 and await _indexed(s) == 14

    store_backends.run_with_store(PostgresStore(postgres_url), reopened)


def test_an_import_is_searchable_and_indexed_when_it_returns(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await _turns(s, conv, agent, "a", 7)
        before = await _searches(s, agent, conv)
        dump = await s.export_agent(agent.pk)
        copy = await s.import_agent("t1", "copy", dump)
        assert await s.pool.fetchval(
            "SELECT count(*) FROM message_terms_pending WHERE agent_pk = $1", copy.pk) == 0
        copy_conv = await s.get_conversation(copy.pk, conv.conversation_id)
        assert await _searches(s, copy, copy_conv) == before

    store_backends.run_with_store(_paused(postgres_url), body)


def test_the_queue_is_vacuumed_as_the_indexer_goes(postgres_url: str, monkeypatch: Any) -> None:
    """Autovacuum may be off: the indexer itself clears the queue's dead rows."""
    from proxy.store.postgres import message_terms

    monkeypatch.setattr(message_terms, "VACUUM_EVERY", 10)

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await _turns(s, conv, agent, "a", 6)
        await s.terms.drain()
        for _ in range(50):  # another backend's statistics reach us within a second or so
            if await s.pool.fetchval("SELECT vacuum_count FROM pg_stat_user_tables"
                                     " WHERE relname = 'message_terms_pending'"):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the indexer never vacuumed its queue")

    store_backends.run_with_store(_paused(postgres_url), body)


def test_the_newest_matches_are_exact_whether_the_window_holds_them_or_not(
        postgres_url: str) -> None:
    """Automatic recall ranks the agent's newest n matches, read from a window of its newest
    vectors when the query's words are common and through the GIN index when they are rare
    (message_terms.py): the same rows as testing every message, with superseded and queued
    rows inside the window, and another agent's rows interleaved."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other, other_conv = await setup(s, agent_id="bob")
        for i in range(60):
            words = "common talk" + (" rare" if i % 25 == 3 else "") + (" mid" if i % 4 == 0
                                                                         else "")
            for who, c in ((agent, conv), (other, other_conv)):
                tid = f"{who.agent_id}{i}"
                await s.begin_turn(c.pk, tid, "h", None, [user(f"{words} {i}")])
                await s.finish_turn(tid, c.pk, who.pk, result(assistant(f"{words} ok")))
        await s.terms.drain()
        # inside the window: a regenerated reply (superseded) and a forgotten message
        await s.begin_turn(conv.pk, "again", "h", None, [], supersede_from_seq=119)
        await s.finish_turn("again", conv.pk, agent.pk, result(assistant("common talk again")))
        await s.forget("t1", "alice", agent.pk, [(conv.conversation_id, 117)], [],
                       actor="test")
        await _turns(s, conv, agent, "late", 1)  # queued, newest

        async def reference(query: str, n: int) -> list[int]:
            return [r[0] for r in await s.pool.fetch(
                "SELECT m.seq FROM messages m WHERE m.agent_pk = $1 AND m.visible"
                " AND NOT m.superseded AND memproxy_message_vector(m.agent_pk, m.text, m.data)"
                " @@ websearch_to_tsquery('english', $2) ORDER BY m.pk DESC LIMIT $3",
                agent.pk, query, n)]

        for query in ("common", "mid", "rare", "rare or mid", "talk", "heron", "absent"):
            for n in (1, 3, 5, 20):
                hits = await s.search_messages(agent.pk, query, limit=n, newest=n)
                assert sorted(h.seq for h in hits) == sorted(await reference(query, n)), \
                    (query, n)

    store_backends.run_with_store(_paused(postgres_url), body)
