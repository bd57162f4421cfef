"""A message's search vector, from migration 13's row trigger to migration 15's table of
vectors written after the turn (proxy/store/migrations/v13_message_tsv_by_trigger.py,
v15_message_terms_after_the_turn.py). Each must compute exactly what the generated column did,
for every kind of message; rows written before an upgrade keep their vectors; and only the
columns the vector is made of recompute it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from proxy.store.migrations import MIGRATIONS, apply_postgres
from proxy.store.postgres.message_terms import TermsIndexer
from tests import store_backends

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database

BEFORE = [m for m in MIGRATIONS if m.version <= 12]  # the schema with the generated column
BY_TRIGGER = [m for m in MIGRATIONS if m.version <= 14]  # the vector by row trigger
# The generation expression of migration 9, evaluated over a row's values ($1 visible,
# $2 text, $3 data, $4 agent_pk): what the trigger must reproduce.
GENERATED = """SELECT CASE WHEN $1::boolean
    THEN to_tsvector('english', memproxy_fold(left($2::text, 100000)))
        || coalesce(to_tsvector('english', memproxy_fold(memproxy_message_name($3::json))), '')
        || memproxy_scope($4::bigint) END"""

# (visible, text, data): plain words, stopwords only, diacritics, a speaker's name, a name
# that is not a string, a \u0000 escape in the data, text past the 100k indexed characters,
# an empty message and a hidden one.
CASES: list[tuple[bool, str, dict[str, Any]]] = [
    (True, "We hiked to the lake and saw a heron", {"role": "user", "content": "x"}),
    (True, "the and of", {"role": "user", "content": "x"}),
    (True, "Un café à Zürich, naïve façade", {"role": "user", "content": "x"}),
    (True, "Caroline: I adopted a puppy", {"role": "user", "name": "Caroline", "content": "x"}),
    (True, "numbers as names", {"role": "user", "name": 42, "content": "x"}),
    (True, "a folded name", {"role": "user", "name": "Zoë Ångström", "content": "x"}),
    (True, "a name beside a nul", {"role": "user", "name": "Nell", "content": "\u0000"}),
    (True, "nul inside", {"role": "user", "content": "a\u0000b"}),
    (True, "word " * 30_000 + "tail", {"role": "assistant", "content": "x"}),
    (True, "", {"role": "assistant", "content": None}),
    (False, "an internal step", {"role": "tool", "tool_call_id": "c1", "content": "x"}),
]

_INSERT = ("INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text,"
           " created_at, visible) VALUES (1, 1, $1, 't', $2, $3::json, $4, 1.0, $5)")


async def _setup(conn: asyncpg.Connection, migrations: list) -> None:
    await apply_postgres(conn, migrations)
    await conn.execute("INSERT INTO agents (pk, tenant, agent_id, created_at)"
                       " VALUES (1, 't', 'a', 1.0)")
    await conn.execute("INSERT INTO conversations (pk, agent_pk, conversation_id, created_at)"
                       " VALUES (1, 1, 'c', 1.0)")


async def _insert_cases(conn: asyncpg.Connection, first_seq: int) -> None:
    for k, (visible, text, data) in enumerate(CASES):
        await conn.execute(_INSERT, first_seq + k, data["role"], json.dumps(data), text,
                           visible)


async def _expected(conn: asyncpg.Connection, seq: int) -> Any:
    """What migration 9's expression makes of row `seq` now."""
    r = await conn.fetchrow("SELECT visible, text, data::text AS data, agent_pk FROM messages"
                            " WHERE seq = $1", seq)
    return await conn.fetchval(f"SELECT ({GENERATED})::text", r["visible"], r["text"],
                               r["data"], r["agent_pk"])


async def _stored(conn: asyncpg.Connection, seq: int) -> Any:
    """Row `seq`'s vector in message_terms (None: none stored)."""
    return await conn.fetchval("SELECT t.tsv::text FROM message_terms t JOIN messages m"
                               " ON m.pk = t.message_pk WHERE m.seq = $1", seq)


async def _queued(conn: asyncpg.Connection) -> list[int]:
    return [r[0] for r in await conn.fetch(
        "SELECT m.seq FROM message_terms_pending p JOIN messages m ON m.pk = p.message_pk"
        " ORDER BY m.seq")]


async def _index(url: str) -> int:
    """One indexer's passes over everything queued, as the store's background task runs them."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        indexer = TermsIndexer()
        return sum([await indexer.index_batch(pool) for _ in range(3)])
    finally:
        await pool.close()


def test_rows_keep_their_vectors_and_new_rows_get_the_same_ones(postgres_url: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await _setup(conn, BEFORE)
            await _insert_cases(conn, 1)  # through the generated column
            before = await conn.fetch("SELECT seq, tsv::text FROM messages ORDER BY seq")
            await apply_postgres(conn, BY_TRIGGER)  # migration 13
            generated = await conn.fetchval(
                "SELECT attgenerated::text FROM pg_attribute"
                " WHERE attrelid = 'messages'::regclass AND attname = 'tsv'")
            assert generated == ""  # a plain column now
            after = await conn.fetch("SELECT seq, tsv::text FROM messages ORDER BY seq")
            assert after == before  # DROP EXPRESSION kept every value
            await _insert_cases(conn, 100)  # through the trigger
            by_trigger = dict(await conn.fetch("SELECT seq, tsv::text FROM messages"))
            for k in range(len(CASES)):
                assert by_trigger[100 + k] == by_trigger[1 + k] == await _expected(conn, 100 + k)
            await apply_postgres(conn)  # migration 15: the vectors move to message_terms
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'messages'::regclass"
                " AND attname = 'tsv' AND NOT attisdropped") == 0
            for seq, vector in by_trigger.items():
                assert await _stored(conn, seq) == vector  # copied as they were
            assert await _queued(conn) == []
            await _insert_cases(conn, 200)  # queued, not indexed, by the insert
            hidden = 200 + len(CASES) - 1
            assert await _queued(conn) == list(range(200, hidden))  # the hidden one is not
            assert [await _stored(conn, 200 + k) for k in range(len(CASES))] == \
                [None] * len(CASES)
            assert await _index(postgres_url) == len(CASES) - 1
            assert await _queued(conn) == []
            for k in range(len(CASES) - 1):
                assert await _stored(conn, 200 + k) == await _expected(conn, 200 + k), \
                    CASES[k][1][:40]
            assert await _stored(conn, hidden) is None  # hidden: not indexed
            assert "'carolin'" in await _stored(conn, 203)
            assert "'zurich'" in await _stored(conn, 202)
            assert "'zoe'" in await _stored(conn, 205) and "'angstrom'" in await _stored(conn, 205)
            assert "'nell'" not in await _stored(conn, 206)  # a NUL escape in the data: no name
        finally:
            await conn.close()

    asyncio.run(body())


def test_only_the_watched_columns_recompute_the_vector(postgres_url: str) -> None:
    """Paging out, superseding and tree moves leave the vector alone; forgetting (text and
    data replaced) and a change of visibility drop it at once and queue the row again."""
    async def body() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await _setup(conn, MIGRATIONS)
            await _insert_cases(conn, 1)
            await _index(postgres_url)
            # A vector the indexer would never write: kept by updates of other columns.
            await conn.execute("UPDATE message_terms SET tsv = 'marker'"
                               " WHERE message_pk = (SELECT pk FROM messages WHERE seq = 1)")
            await conn.execute("UPDATE messages SET in_context = false, superseded = true,"
                               " summary = 's', parent_seq = 0, path_hash = 'p',"
                               " visible_hash = 'v' WHERE seq = 1")
            assert await _stored(conn, 1) == "'marker'" and await _queued(conn) == []
            await conn.execute("UPDATE messages SET text = '', data = $1::json WHERE seq = 1",
                               json.dumps({"role": "user", "content": "[forgotten]"}))
            assert await _stored(conn, 1) is None and await _queued(conn) == [1]
            await conn.execute("UPDATE messages SET visible = false WHERE seq = 4")
            assert await _stored(conn, 4) is None and await _queued(conn) == [1]
            await conn.execute("UPDATE messages SET visible = true WHERE seq = 4")
            assert await _queued(conn) == [1, 4]
            assert await _index(postgres_url) == 2
            assert await _stored(conn, 1) == "' a1'"  # only the agent's scope is left
            assert await _stored(conn, 4) == await _expected(conn, 4)
            assert "'carolin'" in await _stored(conn, 4)
        finally:
            await conn.close()

    asyncio.run(body())


@pytest.mark.parametrize("statement", ["INSERT", "UPDATE"])
def test_no_statement_on_messages_computes_a_vector(postgres_url: str, statement: str) -> None:
    """No column of messages is generated, and no trigger on them makes a vector: inserting
    queues the visible rows, updating other columns does nothing more."""
    async def body() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await _setup(conn, MIGRATIONS)
            generated = await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'messages'::regclass"
                " AND attgenerated::text <> ''")
            assert generated == []
            await _insert_cases(conn, 1)
            if statement == "UPDATE":
                await conn.execute("UPDATE messages SET in_context = false")
            assert await conn.fetchval("SELECT count(*) FROM message_terms") == 0
            assert len(await _queued(conn)) == len(CASES) - 1
        finally:
            await conn.close()

    asyncio.run(body())
