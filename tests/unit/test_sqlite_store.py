"""The SQLite store against a real database file (no pytest-asyncio: each test runs its own
event loop through `run_store`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.core.types import Block, NewMessage, TurnResult
from proxy.store import SQLiteStore, open_store, sqlite_path
from proxy.store.fts import match_expression, query_terms
from proxy.store.migrations import MIGRATIONS, Migration, apply_sqlite
from proxy.store.sqlite import SQL_CONTEXT, SQL_VISIBLE

DEFAULT_BLOCKS = [Block("persona", "I am a helpful assistant."), Block("human", "")]


def run_store(path: Path, body: Callable[[SQLiteStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = SQLiteStore(str(path))
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "memproxy.db"


def user(text: str, **kw: Any) -> NewMessage:
    return NewMessage({"role": "user", "content": text}, **kw)


def assistant(text: str, **kw: Any) -> NewMessage:
    return NewMessage({"role": "assistant", "content": text}, **kw)


def result(*messages: NewMessage, blocks=(), passages=(), response=None) -> TurnResult:
    return TurnResult(list(messages), list(blocks), list(passages), response or {"id": "r"})


async def setup(store: SQLiteStore, agent_id: str = "alice", conversation_id: str = "default"):
    agent = await store.ensure_agent("t1", agent_id, DEFAULT_BLOCKS)
    conv = await store.ensure_conversation(agent.pk, conversation_id)
    return agent, conv


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
    for pg in ("postgresql://u:p@h/db", "postgres://h/db"):
        with pytest.raises(ValueError, match="Postgres support .*not available yet"):
            open_store(pg)

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


# --- agents, blocks, conversations ------------------------------------------------------
def test_ensure_agent_and_conversation_races(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agents = await asyncio.gather(*(s.ensure_agent("t", "a", DEFAULT_BLOCKS)
                                        for _ in range(20)))
        assert len({a.pk for a in agents}) == 1
        assert [b.label for b in await s.get_blocks(agents[0].pk)] == ["persona", "human"]
        assert len(await s.list_agents("t")) == 1
        convs = await asyncio.gather(*(s.ensure_conversation(agents[0].pk, "c")
                                       for _ in range(20)))
        assert len({c.pk for c in convs}) == 1
        assert len(await s.list_conversations(agents[0].pk)) == 1
        # an existing agent is returned as is: no second set of blocks
        again = await s.ensure_agent("t", "a", [Block("other")])
        assert again.pk == agents[0].pk
        assert [b.label for b in await s.get_blocks(again.pk)] == ["persona", "human"]

    run_store(db, body)


def test_tenant_separation_and_settings(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        a = await s.ensure_agent("A", "alice", DEFAULT_BLOCKS)
        b = await s.ensure_agent("B", "alice", [Block("persona", "B's")])
        assert a.pk != b.pk and (a.tenant, b.tenant) == ("A", "B")
        assert [x.pk for x in await s.list_agents("A")] == [a.pk]
        assert [x.pk for x in await s.list_agents(None)] == [a.pk, b.pk]
        assert (await s.get_agent("B", "alice")).pk == b.pk
        assert await s.get_agent("C", "alice") is None
        assert (await s.get_blocks(b.pk))[0].value == "B's"
        await s.update_agent_settings(a.pk, {"model": "gpt", "ünï": [1]})
        assert (await s.get_agent("A", "alice")).settings == {"model": "gpt", "ünï": [1]}

    run_store(db, body)


def test_blocks_order_and_upsert(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, _ = await setup(s)
        await s.put_block(agent.pk, Block("persona", "new", "desc", 100, True))
        await s.put_block(agent.pk, Block("notes", "n"))
        blocks = await s.get_blocks(agent.pk)
        assert [b.label for b in blocks] == ["persona", "human", "notes"]
        assert (blocks[0].value, blocks[0].description, blocks[0].limit,
                blocks[0].read_only) == ("new", "desc", 100, True)
        assert all(b.updated_at for b in blocks)

    run_store(db, body)


def test_conversation_updates_and_eviction(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        assert (conv.summary, conv.resends_history) == ("", None)
        await s.update_conversation(conv.pk, resends_history=True)
        await s.begin_turn(conv.pk, "t1", "h", None, [user(f"m{i}") for i in range(5)])
        assert await s.evict_messages(conv.pk, 3, "summary of 1-3") == 3
        conv = await s.get_conversation(agent.pk, "default")
        assert (conv.summary, conv.resends_history) == ("summary of 1-3", True)
        assert [m.seq for m in await s.context_messages(conv.pk)] == [4, 5]
        assert len(await s.visible_transcript(conv.pk)) == 5
        assert await s.get_conversation(agent.pk, "nope") is None

    run_store(db, body)


# --- turns and messages ------------------------------------------------------------------
def test_turn_lifecycle(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h1", "idem-1", [user("hi"), user("there")])
        turn = await s.last_turn(conv.pk)
        assert (turn.turn_id, turn.status, turn.first_seq, turn.response) == ("t1", "open", 1, None)
        step = NewMessage({"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "core_memory_append", "arguments": "{\"label\":\"human\"}"}}]},
            visible=False, tokens=12, visible_hash="vh")
        tool = NewMessage({"role": "tool", "tool_call_id": "c1", "content": "ok"}, visible=False)
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            step, tool, assistant("hello ✓"), blocks=[Block("human", "likes tea")],
            passages=[("fact", ["t"])], response={"id": "x", "choices": []}))
        turn = await s.find_turn(conv.pk, idempotency_key="idem-1")
        assert (turn.status, turn.response) == ("done", {"id": "x", "choices": []})
        msgs = await s.list_messages(conv.pk)
        assert [m.seq for m in msgs] == [1, 2, 3, 4, 5]
        assert msgs[2].data == step.data and msgs[2].tokens == 12 and not msgs[2].visible
        assert msgs[2].visible_hash == "vh" and msgs[2].role == "assistant"
        assert [m.seq for m in await s.visible_transcript(conv.pk)] == [1, 2, 5]
        assert [m.seq for m in await s.context_messages(conv.pk)] == [1, 2, 3, 4, 5]
        assert (await s.get_blocks(agent.pk))[1].value == "likes tea"
        assert [p.text for p in await s.list_passages(agent.pk)] == ["fact"]
        with pytest.raises(LookupError):  # finishing twice never stores output twice
            await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("again")))
        assert len(await s.list_messages(conv.pk)) == 5

        # no inputs: first_seq is the next free seq; fail and reopen
        await s.begin_turn(conv.pk, "t2", "h2", None, [])
        assert (await s.last_turn(conv.pk)).first_seq == 6
        await s.fail_turn("t2", {"message": "upstream down"})
        assert (await s.last_turn(conv.pk)).status == "failed"
        await s.reopen_turn("t2")
        assert (await s.last_turn(conv.pk)).status == "open"
        await s.fail_turn("t1", {"message": "late"})  # a done turn stays done
        assert (await s.find_turn(conv.pk, idempotency_key="idem-1")).status == "done"

        # find_turn: newest by key, else newest by hash
        await s.begin_turn(conv.pk, "t3", "h1", None, [user("again")])
        assert (await s.find_turn(conv.pk, request_hash="h1")).turn_id == "t3"
        assert (await s.find_turn(conv.pk, idempotency_key="idem-1",
                                  request_hash="h1")).turn_id == "t1"
        assert await s.find_turn(conv.pk, idempotency_key="nope") is None
        assert await s.find_turn(conv.pk) is None
        assert await s.last_turn(conv.pk + 1000) is None

    run_store(db, body)


def test_list_messages_paging_and_supersede(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("question one")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("answer one")))
        await s.begin_turn(conv.pk, "t2", "h", None, [user("question two")])
        await s.finish_turn("t2", conv.pk, agent.pk, result(assistant("answer two")))
        assert await s.count_messages(agent.pk) == 4
        page = await s.list_messages(conv.pk, after_seq=1, limit=2)
        assert [m.seq for m in page] == [2, 3]

        # regenerate the second reply after an edit: supersede from seq 3
        await s.begin_turn(conv.pk, "t3", "h", None, [user("question two, edited")],
                           supersede_from_seq=3)
        assert (await s.last_turn(conv.pk)).first_seq == 5
        assert [m.seq for m in await s.visible_transcript(conv.pk)] == [1, 2, 5]
        assert [m.seq for m in await s.context_messages(conv.pk)] == [1, 2, 5]
        assert [m.seq for m in await s.list_messages(conv.pk)] == [1, 2, 5]
        everything = await s.list_messages(conv.pk, include_superseded=True)
        assert [(m.seq, m.superseded, m.in_context) for m in everything][2:] == [
            (3, True, False), (4, True, False), (5, False, True)]
        assert await s.count_messages(agent.pk) == 3
        assert {h.seq for h in await s.search_messages(agent.pk, "answer two")} == {2, 5}

    run_store(db, body)


def test_concurrent_begin_turns_get_consecutive_seqs(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent = await s.ensure_agent("t", "a", DEFAULT_BLOCKS)
        convs = [await s.ensure_conversation(agent.pk, f"c{i}") for i in range(8)]

        async def turns(conv_pk: int, n: int, tag: str) -> None:
            for k in range(n):
                await s.begin_turn(conv_pk, f"{tag}-{k}", "h", None, [user("a"), user("b")])
                await s.finish_turn(f"{tag}-{k}", conv_pk, agent.pk, result(assistant("c")))

        await asyncio.gather(*(turns(c.pk, 5, f"{c.pk}-{w}") for c in convs for w in range(2)))
        for c in convs:
            msgs = await s.list_messages(c.pk, limit=1000)
            assert [m.seq for m in msgs] == list(range(1, 31))
            by_turn: dict[str, list[int]] = {}
            for m in msgs:
                by_turn.setdefault(m.turn_id, []).append(m.seq)
            assert len(by_turn) == 10
            for seqs in by_turn.values():  # a turn's inputs are consecutive, its reply later
                assert seqs[1] == seqs[0] + 1 and seqs[2] > seqs[1]
        assert await s.count_messages(agent.pk) == 8 * 30

    run_store(db, body)


def test_transactions_are_atomic(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        bad_message = NewMessage({"role": "assistant", "content": object()})
        with pytest.raises(TypeError):
            await s.finish_turn("t1", conv.pk, agent.pk,
                                result(assistant("first"), bad_message, assistant("third")))
        # fails after messages and blocks were written: bad passage tags
        with pytest.raises(TypeError):
            await s.finish_turn("t1", conv.pk, agent.pk, result(
                assistant("ok"), blocks=[Block("human", "changed")],
                passages=[("good", ["x"]), ("bad", [object()])]))
        assert [m.seq for m in await s.list_messages(conv.pk)] == [1]
        assert (await s.last_turn(conv.pk)).status == "open"
        assert (await s.get_blocks(agent.pk))[1].value == ""
        assert await s.count_passages(agent.pk) == 0
        assert await s.count_messages(agent.pk) == 1
        assert await s.search_messages(agent.pk, "first ok") == []
        # begin_turn: a duplicate turn id fails after the supersede; nothing is kept
        with pytest.raises(sqlite3.IntegrityError):
            await s.begin_turn(conv.pk, "t1", "h", None, [user("x")], supersede_from_seq=1)
        assert [(m.seq, m.superseded) for m in await s.list_messages(
            conv.pk, include_superseded=True)] == [(1, False)]
        # the writer is usable afterwards
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("fine")))
        assert len(await s.list_messages(conv.pk)) == 2

    run_store(db, body)


# --- search ----------------------------------------------------------------------------
def test_passage_search_ranking_tags_and_crud(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, _ = await setup(s)
        other, _ = await setup(s, "bob")
        p1 = await s.insert_passage(agent.pk, "The cat sat on the mat.", ["pets", "cat"])
        p2 = await s.insert_passage(agent.pk, "Dogs love bones; my dog buries bones.", ["pets"])
        p3 = await s.insert_passage(agent.pk, "A bone-dry summer.", ["weather"])
        await s.insert_passage(other.pk, "dog bones dog bones", ["pets"])
        hits = await s.search_passages(agent.pk, "dog bones")
        assert [h.pk for h in hits] == [p2.pk, p3.pk]
        assert hits[0].score > hits[1].score > 0
        assert [h.pk for h in await s.search_passages(agent.pk, "bones", tags=["weather"])] == [p3.pk]
        assert [h.pk for h in await s.search_passages(agent.pk, "", tags=["pets", "cat"])] == [p1.pk]
        assert await s.search_passages(agent.pk, "cat", tags=["pets", "nope"]) == []
        blank = await s.search_passages(agent.pk, "  ", top_k=2)
        assert [h.pk for h in blank] == [p3.pk, p2.pk] and {h.score for h in blank} == {0.0}
        assert await s.count_passages(agent.pk) == 3
        assert [p.pk for p in await s.list_passages(agent.pk, limit=2, offset=1)] == [p2.pk, p3.pk]
        assert await s.delete_passage(other.pk, p1.pk) is False  # not bob's
        assert await s.delete_passage(agent.pk, p1.pk) is True
        assert await s.delete_passage(agent.pk, p1.pk) is False
        assert await s.search_passages(agent.pk, "cat mat") == []
        assert await s.count_passages(agent.pk) == 2

    run_store(db, body)


def test_message_search_ranking_roles_dates_and_scope(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        conv2 = await s.ensure_conversation(agent.pk, "second")
        other, other_conv = await setup(s, "bob")
        await s.begin_turn(conv.pk, "t1", "h", None, [user("I adopted a puppy named Rex")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(
            NewMessage({"role": "assistant", "content": "secret internal puppy"}, visible=False),
            assistant("Congratulations on the puppy! Puppy training tips: be patient.")))
        await s.begin_turn(conv2.pk, "t2", "h", None, [user("What's the weather like?")])
        await s.begin_turn(other_conv.pk, "t3", "h", None, [user("puppy puppy puppy")])
        await s._write(lambda c: c.execute(
            "UPDATE messages SET created_at = 1000 + seq * 100 + conversation_pk"))

        hits = await s.search_messages(agent.pk, "puppy")
        assert [(h.conversation_id, h.seq, h.role) for h in hits] == [
            ("default", 3, "assistant"), ("default", 1, "user")]
        assert hits[0].score > hits[1].score > 0 and "training" in hits[0].text
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", roles=["user"])] == [1]
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", limit=1)] == [3]
        # created_at: default conv seq1=1101, seq3=1301; second conv seq1=1102
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", start=1301)] == [3]
        assert [h.seq for h in await s.search_messages(agent.pk, "puppy", end=1101)] == [1]
        assert await s.search_messages(agent.pk, "puppy", start=1102, end=1300) == []
        blank = await s.search_messages(agent.pk, "")
        assert [(h.conversation_id, h.seq) for h in blank] == [
            ("default", 3), ("second", 1), ("default", 1)]
        assert {h.score for h in blank} == {0.0}
        assert [h.seq for h in await s.search_messages(agent.pk, " ", roles=["assistant"])] == [3]
        assert [h.conversation_id for h in await s.search_messages(
            agent.pk, "", start=1102, end=1102)] == ["second"]
        assert await s.count_messages(agent.pk) == 3
        assert await s.count_messages(other.pk) == 1

    run_store(db, body)


HOSTILE = ['"', '""', '*', 'NEAR(', 'NEAR(a b', '-', '-puppy', 'a AND', 'OR', 'NOT', '^',
           '(', ')', ':', 'text:', 'fts_scope:a1', "puppy's \"rex\"", '{text}', '\\', "'",
           'ünïcödé 日本語 🐶', '', '   ', '\x00', 'a' * 5000, 'a1']


@pytest.mark.parametrize("query", HOSTILE)
def test_fts_hostile_input_never_errors(db: Path, query: str) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t", "h", None, [user("puppy rex ünïcödé 日本語 🐶")])
        await s.insert_passage(agent.pk, "puppy rex", ["x"])
        await s.search_messages(agent.pk, query, roles=["user"])
        await s.search_passages(agent.pk, query, tags=["x"])

    run_store(db, body)


def test_fts_query_building_and_unicode(db: Path) -> None:
    assert query_terms('What did I say about "my" DOG?') == ["say", "dog"]
    assert query_terms("the who") == ["the", "who"]  # only stopwords: keep them
    assert query_terms('NEAR( * - "') == ["near"]
    assert query_terms("") == [] and match_expression("  -*  ", 1) is None
    assert match_expression("dog", 7) == 'fts_scope : "a7" AND text : ("dog")'

    async def body(s: SQLiteStore) -> None:
        agent, _ = await setup(s)
        await s.insert_passage(agent.pk, "A naïve café in Zürich", [])
        await s.insert_passage(agent.pk, "running quickly", [])
        assert len(await s.search_passages(agent.pk, "naive cafe")) == 1
        assert len(await s.search_passages(agent.pk, "ZURICH")) == 1
        assert len(await s.search_passages(agent.pk, "runs")) == 1  # porter stemming
        # the agent scope token is not searchable text
        assert await s.search_passages(agent.pk, f"a{agent.pk}") == []

    run_store(db, body)


# --- deletion, keys, stats, leases, persistence -------------------------------------------
def test_delete_agent_cascades(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        keep, keep_conv = await setup(s, "bob")
        for a, c in ((agent, conv), (keep, keep_conv)):
            await s.begin_turn(c.pk, f"t{a.pk}", "h", None, [user("shared words here")])
            await s.finish_turn(f"t{a.pk}", c.pk, a.pk, result(
                assistant("reply"), passages=[("shared passage", ["x"])]))
            await s.acquire_lease(c.pk, "me", 30)
        await s.delete_agent(agent.pk)
        assert await s.get_agent("t1", "alice") is None
        assert await s.get_blocks(agent.pk) == []
        assert await s.list_conversations(agent.pk) == []
        for table in ("messages", "passages", "turns", "conversations", "blocks", "leases"):
            col = "agent_pk" if table in ("messages", "passages", "blocks") else None
            if col is None:
                rows = await exec_sql(s, f"SELECT count(*) FROM {table} WHERE "
                                      f"{'conversation_pk' if table != 'conversations' else 'pk'}"
                                      " = ?", (conv.pk,))
            else:
                rows = await exec_sql(s, f"SELECT count(*) FROM {table} WHERE {col} = ?",
                                      (agent.pk,))
            assert rows == [(0,)], table
        assert await s.search_messages(agent.pk, "shared") == []
        assert len(await s.search_messages(keep.pk, "shared")) == 1
        assert len(await s.search_passages(keep.pk, "shared")) == 1
        assert await s.count_messages(keep.pk) == 2
        await s._write(lambda c: [c.execute(f"INSERT INTO {t}({t}) VALUES ('integrity-check')")
                                  for t in ("messages_fts", "passages_fts")])

    run_store(db, body)


def test_api_keys_model_stats_ping(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        await s.ping()
        assert await s.count_api_keys() == 0
        await s.add_api_key("sha-a", "tenant-a")
        await s.add_api_key("sha-b", "tenant-b")
        assert await s.tenant_for_key_hash("sha-a") == "tenant-a"
        assert await s.tenant_for_key_hash("nope") is None
        await s.add_api_key("sha-a", "tenant-c")
        assert (await s.count_api_keys(), await s.tenant_for_key_hash("sha-a")) == (2, "tenant-c")
        assert await s.get_model_stats("gpt") is None
        await s.put_model_stats("gpt", {"ratio": 1.07, "n": 3})
        await s.put_model_stats("gpt", {"ratio": 1.1, "n": 4})
        assert await s.get_model_stats("gpt") == {"ratio": 1.1, "n": 4}

    run_store(db, body)


def test_leases(db: Path) -> None:
    async def body(s: SQLiteStore) -> None:
        _, conv = await setup(s)
        assert await s.acquire_lease(conv.pk, "p1", 30)
        assert not await s.acquire_lease(conv.pk, "p2", 30)
        assert await s.acquire_lease(conv.pk, "p1", 30)  # renew
        await s.release_lease(conv.pk, "p2")  # not the owner: no effect
        assert not await s.acquire_lease(conv.pk, "p2", 30)
        await s.release_lease(conv.pk, "p1")
        assert await s.acquire_lease(conv.pk, "p2", -1)  # already expired
        assert await s.acquire_lease(conv.pk, "p1", 30)  # takes over the expired lease

    run_store(db, body)


def test_data_survives_reopen(db: Path) -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "ünï 🐶"}], "name": "x",
               "extra": {"nested": [1, 2.5, None, True]}}

    async def write(s: SQLiteStore) -> None:
        _, conv = await setup(s)
        await s.begin_turn(conv.pk, "t", "h", None, [NewMessage(message)])

    async def read(s: SQLiteStore) -> None:
        agent, conv = await setup(s)
        assert (await s.context_messages(conv.pk))[0].data == message
        assert (await s.search_messages(agent.pk, "unï"))[0].text == "ünï 🐶"

    run_store(db, write)
    run_store(db, read)


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
        await s._read(lambda c: c.set_trace_callback(statements.append))
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
        await s.list_passages(agent.pk)
        await s.count_passages(agent.pk)
        await s._read(lambda c: c.set_trace_callback(None))

    run_store(db, body)
    conn = sqlite3.connect(db)
    assert _plan(conn, SQL_CONTEXT, (1,)) == [
        "SEARCH messages USING INDEX messages_context (conversation_pk=?)"]
    assert _plan(conn, SQL_VISIBLE, (1,)) == [
        "SEARCH messages USING INDEX messages_visible (conversation_pk=?)"]
    conn.execute("ANALYZE")  # with statistics the partial index still wins
    assert "messages_context" in _plan(conn, SQL_CONTEXT, (1,))[0]
    # no statement the store ran scans a table (FTS5 and json_each are virtual tables)
    assert len([sql for sql in statements if "'main'." not in sql]) == 13
    for sql in statements:
        if "'main'." in sql:  # FTS5's own reads of its shadow tables
            continue
        for step in _plan(conn, sql, ()):
            if step.startswith("SCAN"):
                assert "VIRTUAL TABLE" in step, (sql, step)
    conn.close()
