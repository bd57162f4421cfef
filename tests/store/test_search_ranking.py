"""Full-text ranking weighs words by how rare they are (BM25), on both backends.

SQLite ranks with FTS5's bm25; Postgres with BM25 computed in SQL from per-agent term
statistics (proxy/store/postgres/search.py). Before that, Postgres ranked by `ts_rank_cd`,
which counts occurrences and proximity but not rarity: a row repeating a common word beat the
one row holding the rare word the question was about (issue 18: 7 points of recall@10).
"""

from __future__ import annotations

from typing import Any

from proxy.core.types import NewMessage
from tests import store_backends
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend  # fixture: one run per backend
postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database

COMMON = [f"we talked about apples again, day {i}" for i in range(12)]


def test_a_rare_word_outranks_a_repeated_common_one(store_backend: Backend) -> None:
    """"apples zebra": the one row with "zebra" first, before the row saying "apples" four
    times (ts_rank_cd put that one first): passages, messages, one conversation's messages."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        for text in COMMON:
            await s.insert_passage(agent.pk, text, [])
        zebra = await s.insert_passage(agent.pk, "a zebra at the zoo", [])
        apples = await s.insert_passage(agent.pk, "apples apples apples apples", [])
        hits = await s.search_passages(agent.pk, "apples zebra", top_k=3)
        assert [h.pk for h in hits[:2]] == [zebra.pk, apples.pk]
        assert hits[0].score > hits[1].score > hits[2].score > 0

        await s.begin_turn(conv.pk, "t1", "h", None, [user(t) for t in COMMON])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            assistant("a zebra at the zoo"), assistant("apples apples apples apples")))
        hits = await s.search_messages(agent.pk, "apples zebra", limit=3)
        assert [h.seq for h in hits[:2]] == [13, 14]
        assert hits[0].score > hits[1].score > hits[2].score > 0
        in_conversation = await s.search_conversation(conv.pk, agent.pk, "apples zebra", limit=3)
        assert [m.seq for m, _ in in_conversation[:2]] == [13, 14]
        # `newest` (automatic recall) ranks only the newest matches, weighing rarity among them
        newest = await s.search_messages(agent.pk, "apples zebra", newest=4, limit=10)
        assert {h.seq for h in newest} == {11, 12, 13, 14}
        whole = await s.search_messages(agent.pk, "apples zebra", newest=14, limit=3)
        assert [(h.seq, h.score) for h in whole[:2]] == [(h.seq, h.score) for h in hits[:2]]

    store_backend.run(body)


def test_filters_choose_rows_without_changing_their_scores(store_backend: Backend) -> None:
    """Roles, dates and tags select among the ranked rows; the statistics stay the agent's."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        for i, text in enumerate(COMMON):
            await s.insert_passage(agent.pk, text, ["even" if i % 2 == 0 else "odd"])
        await s.insert_passage(agent.pk, "apples and a zebra", ["odd"])
        everything = {h.pk: h.score for h in await s.search_passages(
            agent.pk, "apples zebra", top_k=50)}
        odd = await s.search_passages(agent.pk, "apples zebra", tags=["odd"], top_k=50)
        assert len(odd) == 7 and all(everything[h.pk] == h.score for h in odd)

        await s.begin_turn(conv.pk, "t1", "h", None, [user(t) for t in COMMON])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("apples, said the zebra")))
        await store_backend.sql(s, "UPDATE messages SET created_at = 1000 + seq")
        every = {h.seq: h.score for h in await s.search_messages(agent.pk, "apples zebra",
                                                                   limit=50)}
        assert len(every) == 13
        for kw in ({"roles": ["assistant"]}, {"start": 1005.0, "end": 1009.0},
                   {"roles": ["user"], "start": 1010.0}):
            hits = await s.search_messages(agent.pk, "apples zebra", limit=50, **kw)
            assert hits and all(every[h.seq] == h.score for h in hits)
        assert [h.seq for h in await s.search_messages(
            agent.pk, "apples zebra", roles=["assistant"])] == [13]

    store_backend.run(body)


def test_postgres_statistics_are_the_agents_searchable_rows(postgres_url: str) -> None:
    """Postgres counts a word's rows per agent and over searchable rows only: another agent's
    rows, hidden and superseded messages, and deleted passages change no score. (FTS5 keeps
    one set of statistics per table, so on SQLite other agents' rows do count.)"""
    from proxy.store.postgres.store import PostgresStore

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other, other_conv = await setup(s, "bob")
        for text in COMMON:
            await s.insert_passage(agent.pk, text, [])
        await s.insert_passage(agent.pk, "apples and a zebra", [])
        await s.begin_turn(conv.pk, "t1", "h", None, [user(t) for t in COMMON])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("apples and a zebra")))

        async def scores() -> tuple[list, list]:
            return ([(h.pk, h.score) for h in await s.search_passages(
                        agent.pk, "apples zebra", top_k=50)],
                    [(h.seq, h.score) for h in await s.search_messages(
                        agent.pk, "apples zebra", limit=50)])

        before = await scores()
        assert len(before[0]) == 13 and len(before[1]) == 13
        for i in range(30):  # bob's zebras
            await s.insert_passage(other.pk, f"zebra {i}", [])
        await s.begin_turn(other_conv.pk, "t2", "h", None, [user(f"zebra {i}")
                                                             for i in range(30)])
        await s.begin_turn(conv.pk, "t3", "h", None, [user("ignored zebra zebra")])
        await s.finish_turn("t3", conv.pk, agent.pk, result(
            NewMessage({"role": "assistant", "content": "internal zebra"}, visible=False),
            assistant("zebra")))
        await s.pool.execute("UPDATE messages SET superseded = true WHERE turn_id = 't3'")
        gone = [await s.insert_passage(agent.pk, f"zebra {i}", []) for i in range(3)]
        for p in gone:
            assert await s.delete_passage(agent.pk, p.pk)
        assert await scores() == before
        # ...and the agent's own new rows do: "zebra" gets commoner, its rows score less
        await s.insert_passage(agent.pk, "zebra", [])
        after = dict((await scores())[0])
        assert after[before[0][0][0]] < before[0][0][1]

    store_backends.run_with_store(PostgresStore(postgres_url), body)


def test_postgres_newest_matches_come_from_the_gin_index_in_a_generic_plan(
    postgres_url: str,
) -> None:
    """Automatic recall (`newest`) runs the same prepared statement every turn; after five
    runs Postgres may plan it generically. That plan must still find the matches through the
    GIN index, not walk the primary key backwards testing every newer row (58 ms instead of
    0.5 ms for a rare word at 10k messages)."""
    from proxy.store.postgres.search import message_search_sql
    from proxy.store.postgres.store import PostgresStore

    N = 5000

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "bulk", "h", None,
                           [user(f"message {i} word{i % 3000}") for i in range(N)])
        await s.terms.drain()
        await s.pool.execute("ANALYZE")
        sql, args = message_search_sql(s.fts_config, agent.pk, "word7 zebra", None, 5, None,
                                       None, newest=50)
        literals = ", ".join(str(a) if isinstance(a, int) else "'" + a.replace("'", "''") + "'"
                             for a in args)
        async with s.pool.acquire() as conn:  # EXPLAIN with parameters would plan for them
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE recall AS {sql}")
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE recall({literals})"))
            await conn.execute("DEALLOCATE recall")
            await conn.execute("RESET plan_cache_mode")
        assert "Bitmap Index Scan on message_terms_tsv" in plan  # the words are rare
        assert "Index Scan Backward using messages" not in plan
        hits = await s.search_messages(agent.pk, "word7 zebra", newest=50)
        assert sorted(h.seq for h in hits) == list(range(8, N + 1, 3000))

    store_backends.run_with_store(PostgresStore(postgres_url), body)
