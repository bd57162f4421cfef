"""Each conversation counts the rows that left its context (migration 14), and a known context
whose count has not moved is loaded without reading its rows again (issue 19;
proxy/store/postgres/turn_state.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.core.types import KnownContext
from tests import store_backends
from tests.store_backends import assistant, result, user

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database


def _pg(url: str, body: Any, **store: Any) -> Any:
    from proxy.store.postgres.store import PostgresStore

    return store_backends.run_with_store(PostgresStore(url, **store), body)


async def _left(s: Any, conversation_pk: int) -> int:
    return await s.pool.fetchval("SELECT left_context FROM conversations WHERE pk = $1",
                                 conversation_pk)


async def _in_context(s: Any, conversation_pk: int) -> int:
    return await s.pool.fetchval(
        "SELECT count(*) FROM messages WHERE conversation_pk = $1 AND in_context"
        " AND NOT superseded", conversation_pk)


async def _exchange(s: Any, agent_pk: int, conv_pk: int, turn: str) -> None:
    await s.begin_turn(conv_pk, turn, f"h-{turn}", None, [user(f"question {turn}")])
    await s.finish_turn(turn, conv_pk, agent_pk, result(assistant(f"answer {turn}")))


def _known(state: Any) -> KnownContext:
    return KnownContext(state.epoch, state.conversation.created_at, tuple(state.context),
                        state.left_context)


def test_every_way_out_of_the_context_is_counted_and_nothing_else(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        agent = await s.ensure_agent("t", "a", [])
        conv = await s.ensure_conversation(agent.pk, "c")
        other = await s.ensure_conversation(agent.pk, "other")
        for k in range(4):
            await _exchange(s, agent.pk, conv.pk, f"t{k}")
        await _exchange(s, agent.pk, other.pk, "o0")
        total = await _in_context(s, conv.pk)
        assert total == 8 and await _left(s, conv.pk) == 0

        async def check() -> None:
            # every row counted once, wherever it went: in context + left = all ever in
            assert await _in_context(s, conv.pk) + await _left(s, conv.pk) == total
            assert await _left(s, other.pk) == 0

        await s.evict_messages(conv.pk, 2, "the first exchange")  # seqs 1-2 paged out
        assert await _left(s, conv.pk) == 2
        await s.evict_messages(conv.pk, 2, "again")  # nothing more leaves
        assert await _left(s, conv.pk) == 2
        await check()
        # a regenerate supersedes the last exchange (seqs 7-8) and adds its new input
        await s.begin_turn(conv.pk, "r", "h-r", None, [user("again")], supersede_from_seq=7)
        total += 1
        assert await _left(s, conv.pk) == 4
        await check()
        await s.discard_turn("r", {"status": 400})  # the regenerate's input goes too
        assert await _left(s, conv.pk) == 5
        await check()
        # updates of other columns, of rows in and out of context, count nothing
        await s.pool.execute("UPDATE messages SET tokens = 7 WHERE conversation_pk = $1",
                             conv.pk)
        await s.pool.execute("UPDATE conversations SET summary = 'x' WHERE pk = $1", conv.pk)
        assert await _left(s, conv.pk) == 5
        # a delete counts the rows it takes out of the context, not those already out
        await s.pool.execute("DELETE FROM messages WHERE conversation_pk = $1 AND seq IN (1, 3)",
                             conv.pk)
        assert await _left(s, conv.pk) == 6
        await check()

    _pg(postgres_url, body)


def test_a_known_context_whose_count_has_not_moved_reads_none_of_its_rows(
        postgres_url: str) -> None:
    """300 messages in context: loaded again with a current count of leavers, the read takes
    no row of `messages` up to the known newest; with a count that moved, all 300."""
    async def body(s: Any) -> list[int]:
        agent = await s.ensure_agent("t", "a", [])
        conv = await s.ensure_conversation(agent.pk, "c")
        for k in range(150):
            await _exchange(s, agent.pk, conv.pk, f"t{k}")
        await s.terms.settle()  # the search indexer reads messages too: done before counting
        await s.terms.drain()
        state = await s.load_turn_state(agent.pk, conv.pk)
        assert len(state.context) == 300
        current = _known(state)
        moved = KnownContext(current.epoch, current.created_at, current.messages,
                             current.left_context - 1)
        # entries read from any index of `messages`, and rows read by sequential scans
        counter = ("SELECT sum(idx_tup_read) + (SELECT seq_tup_read FROM pg_stat_user_tables"
                   " WHERE relname = 'messages') FROM pg_stat_user_indexes"
                   " WHERE relname = 'messages'")
        read: list[int] = []
        for known in (current, moved, current):
            await s.pool.execute("SELECT pg_stat_force_next_flush()")
            await asyncio.sleep(0)
            await s.pool.execute("SELECT pg_stat_clear_snapshot()")
            before = await s.pool.fetchval(counter)
            again = await s.load_turn_state(agent.pk, conv.pk, known)
            assert [m.seq for m in again.context] == [m.seq for m in state.context]
            await s.pool.execute("SELECT pg_stat_force_next_flush()")
            await s.pool.execute("SELECT pg_stat_clear_snapshot()")
            read.append(await s.pool.fetchval(counter) - before)
        return read

    # one connection: the statistics of its statements are flushed before they are read
    current, moved, current_again = _pg(postgres_url, body, min_size=1, max_size=1)
    assert current == 0 and current_again == 0
    assert moved >= 300


def test_rows_plain_sql_takes_out_are_dropped_from_a_known_context(postgres_url: str) -> None:
    """Whoever pages out or deletes rows (here plain SQL), a known context loads as a full
    read does."""
    async def body(s: Any) -> None:
        agent = await s.ensure_agent("t", "a", [])
        conv = await s.ensure_conversation(agent.pk, "c")
        for k in range(5):
            await _exchange(s, agent.pk, conv.pk, f"t{k}")
        for change in ("UPDATE messages SET in_context = false WHERE conversation_pk = $1"
                       " AND seq <= 2",
                       "UPDATE messages SET superseded = true WHERE conversation_pk = $1"
                       " AND seq = 10",
                       "DELETE FROM messages WHERE conversation_pk = $1 AND seq = 5"):
            known = _known(await s.load_turn_state(agent.pk, conv.pk))
            await s.pool.execute(change, conv.pk)
            await _exchange(s, agent.pk, conv.pk, f"after {change[:30]}")
            again = await s.load_turn_state(agent.pk, conv.pk, known)
            full = await s.load_turn_state(agent.pk, conv.pk)
            assert [m.seq for m in again.context] == [m.seq for m in full.context]
            assert again.left_context == full.left_context > known.left_context

    _pg(postgres_url, body)
