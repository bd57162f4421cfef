"""Migration 13 (proxy/store/migrations/v13_message_tsv_by_trigger.py): a message's tsvector
comes from a row trigger instead of a generated column. The trigger must compute exactly what
the generated column did, for every kind of message; rows written before the upgrade keep
their vectors; and the columns the trigger watches are the only ones that recompute it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from proxy.store.migrations import MIGRATIONS, apply_postgres
from tests import store_backends

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database

BEFORE = [m for m in MIGRATIONS if m.version <= 12]  # the schema with the generated column
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


async def _vectors(conn: asyncpg.Connection) -> dict[int, tuple[Any, Any]]:
    """seq -> (the stored tsvector, what migration 9's expression makes of the row now)."""
    rows = await conn.fetch("SELECT seq, visible, text, data::text AS data, agent_pk,"
                            " tsv::text AS tsv FROM messages ORDER BY seq")
    return {r["seq"]: (r["tsv"], await conn.fetchval(
        f"SELECT ({GENERATED})::text", r["visible"], r["text"], r["data"], r["agent_pk"]))
        for r in rows}


def test_rows_keep_their_vectors_and_new_rows_get_the_same_ones(postgres_url: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await _setup(conn, BEFORE)
            await _insert_cases(conn, 1)  # through the generated column
            before = await conn.fetch("SELECT seq, tsv::text FROM messages ORDER BY seq")
            await apply_postgres(conn)  # migration 13
            generated = await conn.fetchval(
                "SELECT attgenerated::text FROM pg_attribute"
                " WHERE attrelid = 'messages'::regclass AND attname = 'tsv'")
            assert generated == ""  # a plain column now
            after = await conn.fetch("SELECT seq, tsv::text FROM messages ORDER BY seq")
            assert after == before  # DROP EXPRESSION kept every value
            await _insert_cases(conn, 100)  # through the trigger
            vectors = await _vectors(conn)
            for k in range(len(CASES)):
                old, new = vectors[1 + k], vectors[100 + k]
                assert new[0] == old[0] == new[1], CASES[k][1][:40]
            assert vectors[100 + len(CASES) - 1][0] is None  # hidden: not indexed
            assert "'carolin'" in vectors[103][0] and "'zurich'" in vectors[102][0]
            assert "'zoe'" in vectors[105][0] and "'angstrom'" in vectors[105][0]
            assert "'nell'" not in vectors[106][0]  # a document with a NUL escape: no name
        finally:
            await conn.close()

    asyncio.run(body())


def test_only_the_watched_columns_recompute_the_vector(postgres_url: str) -> None:
    """Paging out, superseding and tree moves leave the vector alone; forgetting (text and
    data replaced) and a change of visibility recompute it."""
    async def body() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await _setup(conn, MIGRATIONS)
            await _insert_cases(conn, 1)
            # A vector the trigger would never write: kept by updates of other columns.
            await conn.execute("ALTER TABLE messages DISABLE TRIGGER messages_tsv")
            await conn.execute("UPDATE messages SET tsv = 'marker' WHERE seq = 1")
            await conn.execute("ALTER TABLE messages ENABLE TRIGGER messages_tsv")
            await conn.execute("UPDATE messages SET in_context = false, superseded = true,"
                               " summary = 's', parent_seq = 0, path_hash = 'p',"
                               " visible_hash = 'v' WHERE seq = 1")
            assert await conn.fetchval("SELECT tsv::text FROM messages WHERE seq = 1") == \
                "'marker'"
            await conn.execute("UPDATE messages SET text = '', data = $1::json WHERE seq = 1",
                               json.dumps({"role": "user", "content": "[forgotten]"}))
            assert await conn.fetchval("SELECT tsv::text FROM messages WHERE seq = 1") == \
                "' a1'"  # only the agent's scope is left
            await conn.execute("UPDATE messages SET visible = false WHERE seq = 4")
            assert await conn.fetchval("SELECT tsv FROM messages WHERE seq = 4") is None
            await conn.execute("UPDATE messages SET visible = true WHERE seq = 4")
            vectors = await _vectors(conn)
            assert vectors[4][0] == vectors[4][1] and "'carolin'" in vectors[4][0]
        finally:
            await conn.close()

    asyncio.run(body())


@pytest.mark.parametrize("statement", ["INSERT", "UPDATE"])
def test_no_statement_on_messages_prepares_a_generation_expression(postgres_url: str,
                                                                   statement: str) -> None:
    """No column of messages is generated any more: nothing is re-planned per statement."""
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
            assert await conn.fetchval("SELECT count(*) FROM messages WHERE visible"
                                       " AND tsv IS NOT NULL") == len(CASES) - 1
        finally:
            await conn.close()

    asyncio.run(body())
