"""Postgres turn calls (proxy/store/postgres/turns.py): the one-query `load_turn_state` returns
exactly what the separate reads return, and a one-statement write that numbered its messages
from a snapshot older than its lock is redone under the lock (and numbered right)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from proxy.core.types import Block, BlockRevision, KnownContext, NewMessage, TurnResult
from tests import store_backends
from tests.store_backends import DEFAULT_BLOCKS, assistant, result, setup, user

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database


def _pg(url: str, body: Any, **store: Any) -> Any:
    """`body(store)` on a Postgres store of `url` (`store`: PostgresStore's options)."""
    from proxy.store.postgres.store import PostgresStore

    return store_backends.run_with_store(PostgresStore(url, **store), body)


async def _separate_reads(s: Any, agent_pk: int, conversation_pk: int) -> tuple:
    conversation = await s.pool.fetchrow("SELECT agent_pk, conversation_id FROM conversations"
                                         " WHERE pk = $1", conversation_pk)
    return (await s.get_conversation(conversation[0], conversation[1]),
            await s.last_turn(conversation_pk), await s.get_blocks(agent_pk),
            await s.count_messages(agent_pk), await s.count_passages(agent_pk),
            await s.context_messages(conversation_pk))


def _typed(value: Any) -> Any:
    """`value` with the type of every field, so that 1 == 1.0 does not hide a change."""
    if isinstance(value, list | tuple):
        return [_typed(v) for v in value]
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return (type(value).__name__, _typed(vars(value)))
    return (type(value).__name__, value)


def test_load_turn_state_is_the_separate_reads(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)

        async def check(agent_pk: int, conversation_pk: int) -> None:
            state = await s.load_turn_state(agent_pk, conversation_pk)
            got = (state.conversation, state.last_turn, state.blocks, state.recall_messages,
                   state.archival_passages, state.context)
            assert _typed(got) == _typed(await _separate_reads(s, agent_pk, conversation_pk))

        await check(agent.pk, conv.pk)  # no turn, no messages, no passages
        await s.begin_turn(conv.pk, "t1", "h", "key", [
            user("one", tokens=3, visible_hash="v1"),
            NewMessage({"role": "user", "content": [{"type": "text", "text": "x\x00"}]})])
        await s.update_conversation(conv.pk, resends_history=True, summary="sum")
        await check(agent.pk, conv.pk)  # an open turn (response None), NULL tokens and hash
        await s.finish_turn("t1", conv.pk, agent.pk, TurnResult(
            [NewMessage({"role": "assistant", "content": None, "tool_calls": []},
                        visible=False), assistant("done", tokens=7)],
            [Block("human", "Name: Ada", "who", 99, True), Block("notes", "n")],
            [("fact", ["a", "b"])], {"id": "r", "n": 1.5},
            [BlockRevision("human", "", "Name: Ada", "tool:core_memory_append")]))
        await s.pool.execute("UPDATE messages SET created_at = 1700000000 WHERE seq = 1")
        await s.evict_messages(conv.pk, 1, "evicted one")
        await check(agent.pk, conv.pk)
        await s.begin_turn(conv.pk, "t2", "h", None, [user("again")], supersede_from_seq=4)
        await check(agent.pk, conv.pk)
        state = await s.load_turn_state(agent.pk, conv.pk)
        assert [m.seq for m in state.context] == [2, 3, 5]
        assert isinstance(state.context[0].created_at, float)
        assert [b.label for b in state.blocks] == [b.label for b in DEFAULT_BLOCKS] + ["notes"]

    _pg(postgres_url, body)


async def _wait_for_lock(s: Any) -> None:
    """Until a statement of the store waits for a row lock."""
    for _ in range(500):
        waiting = await s.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'")
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the store's statement never waited for the lock")


@contextlib.contextmanager
def _transactions(s: Any) -> Iterator[list[int]]:
    """Counts the transactions the store opens (one statement needs none): `[n]`."""
    opened = [0]
    original = s._transaction

    def counting() -> Any:
        opened[0] += 1
        return original()

    s._transaction = counting
    try:
        yield opened
    finally:
        del s._transaction


async def _another_writer(s: Any, conversation_pk: int, agent_pk: int, write: Any) -> Any:
    """Run `write()` while another transaction holds the conversation's lock, and commit that
    transaction's message only once `write` waits for the lock (its snapshot is older)."""
    conn = await asyncpg.connect(s.dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM conversations WHERE pk = $1 FOR NO KEY UPDATE",
                               conversation_pk)
            await conn.execute(
                "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data,"
                " created_at) SELECT $1, $2, coalesce(max(seq), 0) + 1, 'other', 'user',"
                " '{\"role\":\"user\",\"content\":\"other\"}', 0 FROM messages"
                " WHERE conversation_pk = $1", conversation_pk, agent_pk)
            task = asyncio.create_task(write())
            await _wait_for_lock(s)
        return await task
    finally:
        await conn.close()


def test_a_write_that_waited_for_another_writer_is_redone_under_the_lock(
    postgres_url: str,
) -> None:
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("one")])
        # begin_turn: snapshot before the other writer's message 2, lock after its commit
        with _transactions(s) as opened:
            first = await _another_writer(s, conv.pk, agent.pk, lambda: s.begin_turn(
                conv.pk, "t2", "h", None, [user("two"), user("three")]))
        assert (first, opened) == (3, [1])
        # finish_turn likewise (its turn is marked done once, by the redone statement)
        with _transactions(s) as opened:
            await _another_writer(s, conv.pk, agent.pk, lambda: s.finish_turn(
                "t2", conv.pk, agent.pk, result(assistant("reply"),
                                                blocks=[Block("human", "x")])))
        assert opened == [1]
        msgs = await s.list_messages(conv.pk)
        assert [(m.seq, m.turn_id) for m in msgs] == [
            (1, "t1"), (2, "other"), (3, "t2"), (4, "t2"), (5, "other"), (6, "t2")]
        assert (await s.last_turn(conv.pk)).status == "done"
        assert (await s.get_blocks(agent.pk))[1].value == "x"
        assert await s.count_messages(agent.pk) == 6
        with pytest.raises(LookupError):
            await s.finish_turn("t2", conv.pk, agent.pk, result(assistant("again")))
        # without another writer: one statement each, no transaction
        with _transactions(s) as opened:
            assert await s.begin_turn(conv.pk, "t3", "h", None, [user("four")],
                                      supersede_from_seq=6) == 7
            await s.finish_turn("t3", conv.pk, agent.pk, result(assistant("five")))
        assert opened == [0]
        assert [m.seq for m in await s.context_messages(conv.pk)] == [1, 2, 3, 4, 5, 7, 8]

    _pg(postgres_url, body)


def test_tree_writes_are_one_statement_except_a_move(postgres_url: str) -> None:
    """begin_turn with parent_seq (truncating after it) and finish_turn stay one statement
    each; a move is one transaction; a begin that waited for another writer is redone under
    the lock, chaining its inputs under parent_seq and superseding what the other writer
    appended after it."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        with _transactions(s) as opened:
            await s.begin_turn(conv.pk, "t1", "h", None, [user("one")], parent_seq=0)
            await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("two")))
            await s.begin_turn(conv.pk, "t2", "h", None, [user("three")], parent_seq=1)
            await s.finish_turn("t2", conv.pk, agent.pk, result(assistant("four")))
        assert opened == [0]
        with _transactions(s) as opened:
            await s.begin_turn(conv.pk, "t3", "h", None, [user("back")], parent_seq=2,
                               move=True)
        assert opened == [1]
        with pytest.raises(LookupError):
            await s.begin_turn(conv.pk + 1000, "t4", "h", None, [], parent_seq=1, move=True)
        with _transactions(s) as opened:
            first = await _another_writer(s, conv.pk, agent.pk, lambda: s.begin_turn(
                conv.pk, "t5", "h", None, [user("five"), user("six")], parent_seq=5))
        assert (first, opened) == (7, [1])
        msgs = await s.list_messages(conv.pk, include_superseded=True)
        assert [(m.seq, m.parent_seq, m.superseded) for m in msgs] == [
            (1, 0, False), (2, 1, False), (3, 1, True), (4, 3, True), (5, 2, False),
            (6, None, True), (7, 5, False), (8, 7, False)]

    _pg(postgres_url, body)


@pytest.mark.parametrize("planned", [False, True])
def test_no_turn_scans_all_messages_of_a_one_conversation_database(postgres_url: str,
                                                                     planned: bool) -> None:
    """A database that holds one long conversation (a personal assistant's `default` chat):
    `conversation_pk = $1` is then every row of messages, so a plan that does not know a
    turn's other bounds scans the table. Each statement of 40 turns (past Postgres's five
    trial plans, when it may switch a statement to its generic plan) must use an index: the
    supersede of `begin_turn` (`seq > parent`) once had a generic plan that read all 10,000
    messages on every turn (5.4 ms). `planned`: each turn's input is stored by its read
    (turn/ahead.py), whose statement holds the same supersede."""
    from proxy.core.tree import hang
    from proxy.core.types import Assumed, PlannedBegin
    from proxy.store.leases import LeaseClaim

    def history() -> str:  # a long chat, paged out, written the way `bench` fills one
        from bench.populate import TENANT, populate
        from bench.scenarios import paragraph

        asyncio.run(populate(postgres_url, ["alice"], 10_000, in_context=False,
                             text=paragraph, in_context_last=40))
        return TENANT

    async def turns(s: Any) -> int:
        agent = await s.get_agent(tenant, "alice")
        conv = await s.get_conversation(agent.pk, "default")
        scans = ("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'messages'")
        await s.pool.execute("SELECT pg_stat_clear_snapshot()")
        before = await s.pool.fetchval(scans)
        known, tip, stored_by_reads = None, None, 0
        for k in range(40):
            inputs = [user(f"question {k}")]
            first = None
            if tip is not None:  # the input planned from the last turn, stored by the read
                hang(inputs, tip.tip_path_hash)
                state, first = await s.load_and_begin(
                    agent.pk, conv.pk, known, lease=LeaseClaim("me", 30.0),
                    planned=PlannedBegin(f"t{k}", f"h{k}", inputs, tip.tip_seq, tip))
                stored_by_reads += first is not None
            else:
                state = await s.load_turn_state(agent.pk, conv.pk, known,
                                                lease=LeaseClaim("me", 30.0))
            known = KnownContext(state.epoch, state.conversation.created_at,
                                 tuple(state.context), state.left_context)
            if first is None:
                hang(inputs, state.context[-1].path_hash or "")
                first = await s.begin_turn(conv.pk, f"t{k}", f"h{k}", None, inputs,
                                           parent_seq=state.context[-1].seq)
            reply = [assistant(f"answer {k}")]
            hang(reply, inputs[-1].path_hash or "")
            await s.finish_turn(f"t{k}", conv.pk, agent.pk, result(*reply))
            if planned:
                tip = Assumed(first + 1, reply[-1].path_hash or "", f"t{k}",
                              state.conversation.resends_history)
        assert stored_by_reads == (39 if planned else 0)
        await asyncio.sleep(0.6)  # the statistics collector's flush (PGSTAT_MIN_INTERVAL)
        await s.pool.execute("SELECT pg_stat_clear_snapshot()")
        return await s.pool.fetchval(scans) - before

    tenant = history()
    # one connection, so that every statement runs 40 times in one session: past the five
    # trial plans after which Postgres may switch it to its generic plan
    assert _pg(postgres_url, turns, min_size=1, max_size=1) == 0


def test_a_store_reached_through_the_servers_unix_socket(postgres_url: str) -> None:
    """docs/storage.md recommends the socket for a Postgres on the same machine:
    `postgresql://user@/db?host=<socket directory>` opens, migrates and runs a turn, and its
    connections really are on the socket (no client address)."""
    from pathlib import Path
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip("the test server is not on this machine")
    sockets = [d for d in ("/var/run/postgresql", "/run/postgresql", "/tmp")
               if Path(d, f".s.PGSQL.{parts.port or 5432}").exists()]
    if not sockets:
        pytest.skip("no Unix socket of the test server")
    login = f"{parts.username}@" if parts.username else ""
    url = urlunsplit(parts._replace(
        netloc=login, query=f"host={sockets[0]}&port={parts.port or 5432}"))

    async def body(s: Any) -> tuple[Any, int]:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t1", "h1", None, [user("over the socket")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("heard")))
        state = await s.load_turn_state(agent.pk, conv.pk)
        address = await s.pool.fetchval("SELECT client_addr FROM pg_stat_activity"
                                        " WHERE pid = pg_backend_pid()")
        return [m.data["content"] for m in state.context], address

    contents, address = _pg(url, body)
    assert contents == ["over the socket", "heard"]
    assert address is None  # a Unix-socket connection has no client address
