"""Migration 6 on a database made by the previous release, on every backend: the schema of
migrations 1-5, rows written as that release wrote them (no parents, no path hashes, some
visible hashes missing), then the store opens: every conversation becomes a tree with its
superseded messages as the branches they were (core/tree.py `rebuild`), the summary is put on
the last evicted row of the active path, and `tree_backfill` is empty. Plus, on Postgres, the
plans of the tree lookups.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from typing import Any

from proxy.core.messages import visible_hash
from proxy.core.tree import ROOT_HASH, chain, hang
from proxy.store.migrations import MIGRATIONS, apply_postgres, apply_sqlite
from tests import store_backends
from tests.store_backends import Backend, assistant, result, setup, user

store_backend = store_backends.store_backend  # fixture: one run per backend
postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database

OLD = [m for m in MIGRATIONS if m.version <= 5]  # the previous release's schema
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "c1", "type": "function", "function": {"name": "core_memory_append",
                                                  "arguments": "{}"}}]}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "OK"}
# conversation 1 as the old release left it: (seq, turn, message, visible, superseded,
# in_context, visible hash stored). u2 was edited (3-4 kept superseded), the reply to u2'
# (its memory step included) regenerated (6-8), rows 1-2 evicted, u3 waits for its reply.
U1, A1, U2, A2 = user("u1").data, assistant("a1").data, user("u2").data, assistant("a2").data
U2E, A2E, A2R, U3 = (user("u2'").data, assistant("a2'").data, assistant("a2''").data,
                     user("u3").data)
ROWS = [(1, "t1", U1, True, False, False, True), (2, "t1", A1, True, False, False, False),
        (3, "t2", U2, True, True, False, True), (4, "t2", A2, True, True, False, True),
        (5, "t3", U2E, True, False, True, False), (6, "t3", CALL, False, True, False, False),
        (7, "t3", RESULT, False, True, False, False), (8, "t3", A2E, True, True, False, True),
        (9, "t4", A2R, True, False, True, True), (10, "t5", U3, True, False, True, False)]
PARENTS = [0, 1, 2, 3, 2, 5, 6, 7, 5, 9]
MANY = 60  # conversations of one message: more than a backfill batch


def _old_rows() -> list[tuple[str, tuple]]:
    """The previous release's rows, as INSERT statements with `?` placeholders."""
    out: list[tuple[str, tuple]] = [
        ("INSERT INTO agents (pk, tenant, agent_id, created_at) VALUES (?, ?, ?, ?)",
         (1, "t1", "alice", 1.0)),
        ("INSERT INTO agents (pk, tenant, agent_id, created_at) VALUES (?, ?, ?, ?)",
         (2, "t1", "many", 1.0))]
    conv = ("INSERT INTO conversations (pk, agent_pk, conversation_id, created_at, summary)"
            " VALUES (?, ?, ?, ?, ?)")
    message = ("INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text,"
               " created_at, in_context, visible, superseded, visible_hash)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    out += [(conv, (1, 1, "old", 1.0, "old sum")), (conv, (2, 1, "empty", 1.0, ""))]
    for seq, turn, data, visible, superseded, in_context, hashed in ROWS:
        out.append((message, (1, 1, seq, turn, data["role"], json.dumps(data),
                              str(data["content"] or ""), 2.0, in_context, visible, superseded,
                              visible_hash(data) if hashed else None)))
    for t, first in [("t1", 1), ("t2", 3), ("t3", 5), ("t4", 9), ("t5", 10)]:
        out.append(("INSERT INTO turns (turn_id, conversation_pk, status, request_hash,"
                    " created_at, first_seq) VALUES (?, ?, ?, ?, ?, ?)",
                    (t, 1, "open" if t == "t5" else "done", "h", 2.0, first)))
    for k in range(MANY):
        data = user(f"hello {k}").data
        out += [(conv, (10 + k, 2, f"c{k}", 1.0, "")),
                (message, (10 + k, 2, 1, f"m{k}", "user", json.dumps(data), "", 2.0, True,
                           True, False, None))]
    return out


def _numbered(sql: str) -> str:
    """`?` placeholders as Postgres's `$1, $2, ...`."""
    counter = iter(range(1, 100))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def _make_old_database(backend: Backend) -> None:
    if backend.name == "sqlite":
        db = sqlite3.connect(backend.url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            apply_sqlite(db, OLD)
            db.execute("BEGIN")
            for sql, params in _old_rows():
                db.execute(sql, params)
            db.execute("COMMIT")
        finally:
            db.close()
        return
    import asyncpg

    conn = await asyncpg.connect(backend.url)
    try:
        await apply_postgres(conn, OLD)
        async with conn.transaction():
            for sql, params in _old_rows():
                await conn.execute(_numbered(sql), *params)
    finally:
        await conn.close()


def test_the_migration_builds_the_trees_of_older_conversations(store_backend: Backend) -> None:
    asyncio.run(_make_old_database(store_backend))
    hashes = [visible_hash(data) for _, _, data, *_ in ROWS]

    def path(*seqs: int) -> str:
        return chain(hashes[s - 1] for s in seqs)[-1]

    async def body(s: Any) -> None:
        assert await store_backend.sql(s, "SELECT count(*) FROM tree_backfill") == [(0,)]
        stored = await s.list_messages(1, include_superseded=True)
        assert [m.parent_seq for m in stored] == PARENTS
        assert [m.path_hash for m in stored] == [
            path(1), path(1, 2), path(1, 2, 3), path(1, 2, 3, 4), path(1, 2, 5), path(1, 2, 5),
            path(1, 2, 5), path(1, 2, 5, 8), path(1, 2, 5, 9), path(1, 2, 5, 9, 10)]
        # the missing visible hashes are computed; internal rows keep none
        assert [m.visible_hash for m in stored] == [
            None if seq in (6, 7) else hashes[seq - 1] for seq, *_ in ROWS]
        assert await store_backend.sql(
            s, "SELECT conversation_pk, seq, summary FROM messages WHERE summary IS NOT NULL"
        ) == [(1, 2, "old sum")]
        many = await s.list_messages(10 + MANY - 1)
        assert (many[0].parent_seq, many[0].path_hash) == (
            0, chain([visible_hash(user(f"hello {MANY - 1}").data)])[0])
        assert await store_backend.sql(
            s, "SELECT count(*) FROM messages WHERE path_hash IS NULL") == [(0,)]

        # the trees work: lookups, the open turn's reply, a move back to the edited branch
        found = await s.find_nodes(1, [path(1), path(1, 2), path(1, 2, 5), path(1, 2, 3)])
        assert sorted((n.seq, n.active) for n in found) == [(1, True), (2, True), (3, False),
                                                            (5, True)]
        anchor = await s.find_anchor(1, [hashes[1], hashes[4], hashes[8]])
        assert (anchor.seq, anchor.active) == (9, True)
        assert (await s.path_tip(1)).seq == 10
        await s.finish_turn("t5", 1, 1, result(assistant("a3")))
        assert (await s.list_messages(1))[-1].parent_seq == 10
        await s.begin_turn(1, "t6", "h", None, [user("back")], parent_seq=4, move=True)
        assert [(m.seq, m.parent_seq) for m in await s.list_messages(1)] == [
            (1, 0), (2, 1), (3, 2), (4, 3), (12, 4)]
        assert (await s.get_conversation(1, "old")).summary == "old sum"

    store_backend.run(body)
    assert store_backend.run(  # opening again has nothing left to build
        lambda s: store_backend.sql(s, "SELECT count(*) FROM tree_backfill")) == [(0,)]


def test_postgres_tree_lookups_use_their_indexes(postgres_url: str) -> None:
    """EXPLAIN on a conversation of 20,000 messages among others: find_nodes on
    `messages_path`, find_anchor's candidates on `messages_anchor`, its walk and the move's
    on the (conversation_pk, seq) key, never a sequential scan of messages."""
    from proxy.store.postgres import tree
    from proxy.store.postgres.store import PostgresStore

    n = 20_000

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        inputs = [user(f"message {i}") for i in range(n)]
        hang(inputs, ROOT_HASH)
        path = [m.path_hash for m in inputs]
        await s.begin_turn(conv.pk, "bulk", "h", None, inputs)
        for k in range(3):
            other = await s.ensure_conversation(agent.pk, f"other{k}")
            await s.begin_turn(other.pk, f"o{k}", "h", None,
                               [user(f"other {k} {i}") for i in range(n // 4)])
        await s.pool.execute("ANALYZE")

        async def plan(sql: str, *args: Any) -> str:
            return "\n".join(r[0] for r in await s.pool.fetch(f"EXPLAIN {sql}", *args))

        nodes = await plan(tree._NODE + " WHERE m.agent_pk = $1 AND m.visible"
                           " AND m.path_hash = ANY($2::text[])", agent.pk, path[-3:])
        assert "messages_path" in nodes and "Seq Scan on messages" not in nodes
        wanted = [visible_hash(m.data) for m in inputs[-3:]]
        anchor = await plan(tree._ANCHOR[False], agent.pk, wanted[-1], 3, wanted[::-1])
        assert "messages_anchor" in anchor and "Seq Scan on messages" not in anchor
        move = await plan(tree.MOVE, conv.pk, n - 5)
        assert "Seq Scan on messages" not in move
        found = await s.find_anchor(agent.pk, wanted)
        assert found.seq == n
        assert sorted(x.seq for x in await s.find_nodes(agent.pk, path[-3:])) == [n - 2, n - 1, n]

    store_backends.run_with_store(PostgresStore(postgres_url), body)
