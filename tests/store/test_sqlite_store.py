"""SQLite-only tests of the store against a real database file: URLs, PRAGMAs, migrations,
FTS5 query building and integrity, query plans. The behaviour shared with Postgres is tested
for both backends in test_store_contract.py. (No pytest-asyncio: each test runs its own event
loop through `run_store`.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.store import open_store, sqlite_path
from proxy.store.migrations import MIGRATIONS, Migration, apply_sqlite
from proxy.store.query_terms import query_terms
from proxy.store.sqlite.fts import match_expression
from proxy.store.sqlite.store import SQL_CONTEXT, SQL_VISIBLE, SQLiteStore
from tests.store_backends import assistant, result, run_with_store, setup, user


def run_store(path: Path, body: Callable[[SQLiteStore], Awaitable[Any]]) -> Any:
    return run_with_store(SQLiteStore(str(path)), body)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "memproxy.db"






async def exec_sql(store: SQLiteStore, sql: str, params: tuple = ()) -> list[tuple]:
    return await store._read(lambda c: c.execute(sql, params).fetchall())


# --- URLs, connection, migrations ---------------------------------------------------------
def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///rel/x.db") == "rel/x.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("plain.db") == "plain.db"
    store = open_store("sqlite:///rel/x.db")
    assert isinstance(store, SQLiteStore)
    for bad in ("sqlite://host/x.db", "sqlite:///", "mysql://h/db", "sqlite:///:memory:"):
        with pytest.raises(ValueError):
            open_store(bad)
    # postgresql:// and postgres:// URLs: see test_store_contract.py

    async def body(s: SQLiteStore) -> None:
        await s.ping()

    run_store(Path("rel/x.db"), body)
    assert (tmp_path / "rel" / "x.db").exists()


def test_pragmas_and_parent_dir(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        assert (await exec_sql(s, "PRAGMA journal_mode"))[0][0] == "wal"
        for conn in (s._reader, s._writer):
            def pragmas(c: sqlite3.Connection) -> tuple:
                return tuple(c.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("foreign_keys", "synchronous", "busy_timeout"))
            assert await conn._execute(pragmas, conn._conn) == (1, 1, 5000)

    run_store(db, body)
    assert db.exists()


def test_migrations_idempotent_across_reopen(db: Path) -> None:
    async def versions(s: SQLiteStore) -> list[tuple]:
        return await exec_sql(s, "SELECT version, name FROM schema_migrations ORDER BY version")

    first = run_store(db, versions)
    assert first == [(m.version, m.name) for m in MIGRATIONS]
    assert run_store(db, versions) == first  # re-open applies nothing twice

    conn = sqlite3.connect(db, isolation_level=None)
    extra = Migration(99, "extra", {"sqlite": ["CREATE TABLE extra (x INTEGER)"]})
    assert apply_sqlite(conn, [*MIGRATIONS, extra]) == [99]
    assert apply_sqlite(conn, [*MIGRATIONS, extra]) == []
    broken = Migration(100, "broken", {"sqlite": ["CREATE TABLE half (x)", "NOT SQL"]})
    with pytest.raises(sqlite3.OperationalError):
        apply_sqlite(conn, [broken])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "extra" in tables and "half" not in tables  # the failed migration rolled back
    with pytest.raises(RuntimeError, match="no sqlite statements"):
        apply_sqlite(conn, [Migration(101, "pg only", {"postgres": ["SELECT 1"]})])
    conn.close()


# --- FTS5 ----------------------------------------------------------------------------------
def test_fts_query_building() -> None:
    assert query_terms('What did I say about "my" DOG?') == ["say", "dog"]
    assert query_terms("the who") == ["the", "who"]  # only stopwords: keep them
    assert query_terms('NEAR( * - "') == ["near"]
    assert query_terms("") == [] and match_expression("  -*  ", 1) is None
    assert match_expression("dog", 7) == 'fts_scope : "a7" AND text : ("dog")'


def test_fts5_index_stays_consistent(db: Path) -> None:
    """Batch indexing on insert, triggers on update and cascaded deletes: FTS5's own
    integrity check agrees with the content tables."""
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        keep, keep_conv = await setup(s, "bob")
        for a, c in ((agent, conv), (keep, keep_conv)):
            await s.begin_turn(c.pk, f"t{a.pk}", "h", None, [user("shared words here")])
            await s.finish_turn(f"t{a.pk}", c.pk, a.pk, result(
                assistant("reply"), passages=[("shared passage", ["x"])]))
        await s.begin_turn(keep_conv.pk, "t9", "h", None, [user("edited")], supersede_from_seq=2)
        await s._write(lambda c: c.execute("UPDATE messages SET text = 'changed' WHERE seq = 1"))
        await s.delete_agent(agent.pk)
        await s._write(lambda c: [c.execute(f"INSERT INTO {t}({t}) VALUES ('integrity-check')")
                                  for t in ("messages_fts", "passages_fts")])
        assert [h.seq for h in await s.search_messages(keep.pk, "changed")] == [1]

    run_store(db, body)


# --- scale: the hot queries use their indexes ---------------------------------------------
def _plan(conn: sqlite3.Connection, sql: str, params: tuple) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_100k_message_conversation_uses_indexes(db: Path) -> None:
    n = 100_000
    statements: list[str] = []

    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        inputs = [user(f"message {i}", in_context=i >= n - 40) for i in range(n)]
        await s.begin_turn(conv.pk, "bulk", "h", None, inputs)
        await s.finish_turn("bulk", conv.pk, agent.pk, result(assistant("done")))
        await s.evict_messages(conv.pk, n - 20, "summary")
        await s._read(lambda c: c.set_trace_callback(statements.append))  # the thread lane
        s.lanes.fast_reader.set_trace_callback(statements.append)  # and the fast lane
        ctx = await s.context_messages(conv.pk)
        assert [m.seq for m in ctx] == list(range(n - 19, n + 2))
        assert len(await s.visible_transcript(conv.pk)) == n + 1
        assert await s.count_messages(agent.pk) == n + 1
        await s.find_turn(conv.pk, idempotency_key="k")
        await s.find_turn(conv.pk, request_hash="h")
        await s.last_turn(conv.pk)
        await s.list_messages(conv.pk, after_seq=n - 5)
        await s.search_messages(agent.pk, "message 99999", roles=["user"], start=0, end=2e9)
        await s.search_messages(agent.pk, "", roles=["user"], start=0)
        await s.search_passages(agent.pk, "x", tags=["a"])
        await s.search_passages(agent.pk, "", tags=["a"])
        await s.list_passages_page(agent.pk)
        await s.count_passages(agent.pk)
        await s._read(lambda c: c.set_trace_callback(None))
        s.lanes.fast_reader.set_trace_callback(None)

    run_store(db, body)
    conn = sqlite3.connect(db)
    assert _plan(conn, SQL_CONTEXT, (1,)) == [
        "SEARCH messages USING INDEX messages_context (conversation_pk=?)"]
    assert _plan(conn, SQL_VISIBLE, (1,)) == [
        "SEARCH messages USING INDEX messages_visible (conversation_pk=?)"]
    conn.execute("ANALYZE")  # with statistics the partial index still wins
    assert "messages_context" in _plan(conn, SQL_CONTEXT, (1,))[0]
    # no statement the store ran scans a table (FTS5 and json_each are virtual tables)
    statements = [sql for sql in statements if sql not in ("BEGIN", "COMMIT")]
    # (13 reads, and each of the 2 full-text searches first checks for unindexed messages)
    assert len([sql for sql in statements if "'main'." not in sql]) == 15
    for sql in statements:
        if "'main'." in sql:  # FTS5's own reads of its shadow tables
            continue
        for step in _plan(conn, sql, ()):
            if step.startswith("SCAN"):  # a virtual table, or a SELECT of subqueries
                assert "VIRTUAL TABLE" in step or step == "SCAN CONSTANT ROW", (sql, step)
    conn.close()
