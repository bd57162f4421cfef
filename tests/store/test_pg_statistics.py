"""Postgres plans that stay cheap (issue 19): memproxy's sessions run with JIT off, and the
tables a turn reads have planner statistics after open and after a large import
(proxy/store/postgres/statistics.py).

Without statistics the planner took the one-row `conversation_epoch` for ~2,000 rows, the turn
state query's cost passed `jit_above_cost`, and every turn spent 20-350 ms JIT-compiling a
0.2 ms query. These tests look at what the server reports (SHOW, the catalogs, EXPLAIN), not
at timings.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from proxy.core.types import Agent, Conversation, StoredMessage
from proxy.store.admin_types import AgentDump, ConversationDump, TurnRecord
from proxy.store.migrations import apply_postgres
from proxy.store.postgres.statistics import TABLES, THRESHOLD_ROWS
from proxy.store.postgres.store import PostgresStore
from proxy.store.postgres.turn_state import load_sql
from tests import store_backends
from tests.store_backends import DEFAULT_BLOCKS

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database


def _pg(url: str, body: Any) -> Any:
    return store_backends.run_with_store(PostgresStore(url), body)


def test_every_pooled_session_runs_without_jit(postgres_url: str) -> None:
    async def body(s: PostgresStore) -> None:
        async with s.pool.acquire() as a, s.pool.acquire() as b:  # two connections
            for conn in (a, b):
                assert await conn.fetchval("SHOW jit") == "off"
                assert await conn.fetchval("SHOW application_name") == "memproxy"
            assert a is not b

    _pg(postgres_url, body)


def test_the_url_can_turn_jit_back_on(postgres_url: str) -> None:
    """A setting given in the URL's query wins over memproxy's default, as application_name
    always did."""
    async def body(s: PostgresStore) -> None:
        assert await s.pool.fetchval("SHOW jit") == "on"
        assert await s.pool.fetchval("SHOW application_name") == "mine"

    _pg(f"{postgres_url}?jit=on&application_name=mine", body)


async def _reltuples(s: PostgresStore) -> dict[str, float]:
    rows = await s.pool.fetch("SELECT relname::text, reltuples::float8 FROM pg_class"
                              " WHERE oid IN (SELECT to_regclass(t) FROM unnest($1::text[]) t)",
                              list(TABLES))
    return {r[0]: r[1] for r in rows}


def test_open_analyzes_a_freshly_migrated_database(postgres_url: str) -> None:
    async def body(s: PostgresStore) -> None:
        reltuples = await _reltuples(s)
        assert sorted(reltuples) == sorted(TABLES)
        assert all(n >= 0 for n in reltuples.values()), reltuples  # -1: never analyzed
        assert reltuples["conversation_epoch"] == 1
        plan = json.loads(await s.pool.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT * FROM conversation_epoch"))[0]["Plan"]
        assert plan["Plan Rows"] == 1  # was 2,040 before any ANALYZE
        # Opened again with nothing changed: nothing to analyze.
        async with s.pool.acquire() as conn:
            assert await s.statistics.open(conn, s.pool, migrated=False) == []

    _pg(postgres_url, body)


def test_open_analyzes_tables_a_migration_left_without_statistics(postgres_url: str) -> None:
    """A database migrated by a memproxy that never analyzed (every one before this change):
    the next open has no migration to run and still finds the tables without statistics."""
    async def migrate_only() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            assert await apply_postgres(conn) != []
            assert await conn.fetchval("SELECT reltuples FROM pg_class"
                                       " WHERE relname = 'conversation_epoch'") == -1
        finally:
            await conn.close()

    asyncio.run(migrate_only())

    async def body(s: PostgresStore) -> None:
        reltuples = await _reltuples(s)
        assert all(n >= 0 for n in reltuples.values()), reltuples
        assert reltuples["conversation_epoch"] == 1

    _pg(postgres_url, body)


def _dump(agent_id: str, messages: int, in_context_last: int) -> AgentDump:
    """An agent with one conversation of `messages` alternating user/assistant messages, the
    last `in_context_last` of them in context (a long chat after paging)."""
    rows, turns = [], []
    for i in range(messages):
        turn_id = f"{agent_id}-{i // 2}"
        data = {"role": "assistant" if i % 2 else "user", "content": f"message {i}"}
        rows.append(StoredMessage(seq=i + 1, data=data, turn_id=turn_id, created_at=1e9 + i,
                                  in_context=i >= messages - in_context_last, tokens=5))
        if i % 2 == 0:
            turns.append(TurnRecord(turn_id, "done", f"h{i}", None, 1e9 + i, 1e9 + i + 1,
                                    {"id": turn_id}, i + 1))
    conversation = Conversation(pk=0, agent_pk=0, conversation_id="default",
                                created_at=1e9, summary="earlier")
    return AgentDump(Agent(pk=0, tenant="t1", agent_id=agent_id, created_at=1e9),
                     list(DEFAULT_BLOCKS), conversations=[ConversationDump(
                         conversation, None, rows, turns)])


def _nodes(plan: dict) -> list[dict]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_a_large_import_is_analyzed_and_the_turn_state_plan_stays_cheap(
        postgres_url: str) -> None:
    async def body(s: PostgresStore) -> None:
        small = await s.import_agent("t1", "small", _dump("small", 20, 20))
        await s.statistics.settle()
        assert (await _reltuples(s))["messages"] == 0  # 20 rows: below the threshold
        agent = await s.import_agent("t1", "big", _dump("big", 6000, 40))
        await s.statistics.settle()
        reltuples = await _reltuples(s)
        assert reltuples["messages"] == 6020 and reltuples["turns"] == 3010
        conversation = await s.get_conversation(agent.pk, "default")
        assert small.pk != agent.pk and conversation is not None
        epoch = await s.pool.fetchval("SELECT value FROM conversation_epoch")
        jit_above_cost = float(await s.pool.fetchval("SHOW jit_above_cost"))
        left = await s.pool.fetchval("SELECT left_context FROM conversations WHERE pk = $1",
                                     conversation.pk)
        known_args = (epoch, conversation.created_at, 5990, 30)
        # no known context; one whose count of leavers moved (NULL never matches: the known
        # rows still in context are counted); one whose count is current (no count)
        for known, extra in ((False, ()), (True, (*known_args, None)),
                             (True, (*known_args, left))):
            plan = json.loads(await s.pool.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {load_sql(known)}", conversation.pk,
                agent.pk, *extra))[0]
            assert "JIT" not in plan
            # Cheap enough that even a session with JIT on would not compile it.
            assert plan["Plan"]["Total Cost"] < jit_above_cost
            nodes = _nodes(plan["Plan"])
            seq_scans = {n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"}
            assert not seq_scans & {"messages", "turns"}, seq_scans
            indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
            assert {"messages_context", "turns_conversation"} <= indexes, indexes

    _pg(postgres_url, body)


def test_passages_stored_one_by_one_are_analyzed_once_they_add_up(postgres_url: str) -> None:
    """`memproxy load` stores a file's passages one request each: past the threshold (50 rows
    on an empty table) the store analyzes the table in the background."""
    async def body(s: PostgresStore) -> None:
        agent = await s.ensure_agent("t1", "reader", DEFAULT_BLOCKS)
        for i in range(THRESHOLD_ROWS):
            await s.insert_passage(agent.pk, f"passage {i}", ["file:a.md"])
        await s.statistics.settle()
        assert (await _reltuples(s))["passages"] == 0
        await s.insert_passage(agent.pk, "one more", ["file:a.md"])
        await s.statistics.settle()
        assert (await _reltuples(s))["passages"] == THRESHOLD_ROWS + 1

    _pg(postgres_url, body)


def test_a_database_that_grows_only_by_turns_is_analyzed_as_it_grows(postgres_url: str) -> None:
    """With autovacuum off, nothing but memproxy analyzes: the rows turns write count too, so
    the messages and turns tables get statistics once they pass the threshold, and again once
    they have grown by a tenth, in the background."""
    from tests.store_backends import assistant, result, setup, user

    async def body(s: PostgresStore) -> None:
        await s.pool.execute("ALTER TABLE messages SET (autovacuum_enabled = off)")
        await s.pool.execute("ALTER TABLE turns SET (autovacuum_enabled = off)")
        agent, conv = await setup(s)
        turns = THRESHOLD_ROWS // 2 + 1  # two messages a turn: past the threshold
        for i in range(turns):
            await s.begin_turn(conv.pk, f"t{i}", f"h{i}", None, [user(f"question {i}")])
            await s.finish_turn(f"t{i}", conv.pk, agent.pk, result(assistant(f"answer {i}")))
        await s.statistics.settle()
        analyzed = (await _reltuples(s))["messages"]
        # the 51st row made it due; the ANALYZE ran beside the last finish
        assert THRESHOLD_ROWS < analyzed <= 2 * turns
        for i in range(turns, turns + 10):  # +20 rows: below 50 + 10% of 52, not again
            await s.begin_turn(conv.pk, f"t{i}", f"h{i}", None, [user(f"question {i}")])
            await s.finish_turn(f"t{i}", conv.pk, agent.pk, result(assistant(f"answer {i}")))
        await s.statistics.settle()
        assert (await _reltuples(s))["messages"] == analyzed

    _pg(postgres_url, body)
