"""Postgres stores an input planned ahead in the statement that reads the turn's state and
takes its lease (issue 19; turn_state.planned_ctes, turns.load_and_begin).

When the conversation is as the plan assumed, the rows are exactly those `begin_turn` writes
and the state is the one `load_turn_state` reads. When it differs in any one way, nothing is
written and the lease is taken all the same. A writer that holds no lease and commits while
the statement waits undoes it, and the state is read as usual.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from proxy.core.types import Assumed, KnownContext, PlannedBegin, TurnState
from proxy.store import open_store
from proxy.store.leases import LeaseBusy, LeaseClaim
from proxy.store.postgres.store import PostgresStore
from tests.store_backends import (
    assistant,
    postgres_url,
    result,
    run_with_store,
    setup,
    user,
    waiting_on_a_lock,
)

__all__ = ["postgres_url"]  # the fixture

ME = LeaseClaim("me", 30)
_ROWS = ("SELECT seq, role, data::text, text, in_context, visible, superseded, tokens,"
         " visible_hash, parent_seq, path_hash FROM messages"
         " WHERE conversation_pk = $1 ORDER BY seq")
_TURNS = ("SELECT status, request_hash, idempotency_key, first_seq, parent_seq FROM turns"
          " WHERE conversation_pk = $1 ORDER BY ord")


async def _with_history(s: Any, conversation_id: str) -> tuple[Any, Any]:
    """A conversation with one finished turn, its messages on a path (path hashes)."""
    agent, conv = await setup(s, conversation_id=conversation_id)
    await s.begin_turn(conv.pk, f"{conversation_id}-t0", "h0", None,
                       [user("where is the key?", path_hash="p1", visible_hash="v1")],
                       parent_seq=0)
    await s.finish_turn(f"{conversation_id}-t0", conv.pk, agent.pk, result(
        assistant("under the mat", path_hash="p2", visible_hash="v2")))
    return agent, conv


def _assumed(state: TurnState) -> Assumed:
    tip = state.context[-1]
    assert state.last_turn is not None and tip.path_hash
    return Assumed(tip.seq, tip.path_hash, state.last_turn.turn_id,
                   state.conversation.resends_history)


def _planned(turn_id: str, state: TurnState, **assumed: Any) -> PlannedBegin:
    mine = _assumed(state)
    return PlannedBegin(turn_id, "h1", [user("and the door?", path_hash="p3",
                                             visible_hash="v3", tokens=7)],
                        mine.tip_seq, Assumed(**{**vars(mine), **assumed}))


def _known(state: TurnState) -> KnownContext:
    return KnownContext(state.epoch, state.conversation.created_at, tuple(state.context),
                        state.left_context)


def _same_state(a: TurnState, b: TurnState) -> None:
    """Two conversations' states, equal but for their own ids."""
    assert [(m.seq, m.data, m.turn_id[-3:], m.path_hash, m.parent_seq) for m in a.context] == [
        (m.seq, m.data, m.turn_id[-3:], m.path_hash, m.parent_seq) for m in b.context]
    assert a.last_turn is not None and b.last_turn is not None
    assert (a.last_turn.status, a.last_turn.request_hash) == (
        b.last_turn.status, b.last_turn.request_hash)
    assert (a.blocks, a.archival_passages) == (b.blocks, b.archival_passages)


@pytest.mark.parametrize("known", [False, True])
@pytest.mark.parametrize("input_commit", ["durable", "fast"])
def test_the_planned_input_is_stored_as_begin_turn_stores_it(postgres_url, known,  # noqa: F811
                                                             input_commit):
    async def body(s: Any) -> None:
        agent, planned_conv = await _with_history(s, "planned")
        _, usual_conv = await _with_history(s, "usual")
        before = await s.load_turn_state(agent.pk, planned_conv.pk)
        cache = _known(before) if known else None
        # the usual way: read with the lease, then begin_turn
        usual = await s.load_turn_state(agent.pk, usual_conv.pk, lease=ME)
        plan = _planned("usual-t1", usual)
        usual_first = await s.begin_turn(usual_conv.pk, "usual-t1", "h1", None, plan.inputs,
                                          parent_seq=plan.parent_seq)
        # planned ahead: one statement
        state, first = await s.load_and_begin(agent.pk, planned_conv.pk, cache, lease=ME,
                                              planned=_planned("planned-t1", before))
        assert first == usual_first == 3
        _same_state(state, usual)  # the state before the input, as load_turn_state reads it
        # the agent's count (all its conversations): the usual input was stored before
        assert state.recall_messages == usual.recall_messages + 1
        assert (await s.pool.fetch(_ROWS, planned_conv.pk)
                == await s.pool.fetch(_ROWS, usual_conv.pk))
        assert (await s.pool.fetch(_TURNS, planned_conv.pk)
                == await s.pool.fetch(_TURNS, usual_conv.pk))
        assert not await s.acquire_lease(planned_conv.pk, "other", 30)  # the lease is ours
        # and the turn finishes as any other
        await s.finish_turn("planned-t1", planned_conv.pk, agent.pk,
                            result(assistant("next to it", path_hash="p4")))
        after = await s.load_turn_state(agent.pk, planned_conv.pk)
        assert [m.data["content"] for m in after.context] == [
            "where is the key?", "under the mat", "and the door?", "next to it"]
        assert after.recall_messages == 7  # the agent's rows in both conversations, counted

    run_with_store(PostgresStore(postgres_url, input_commit=input_commit), body)


async def _fail_last_turn(s: Any, conv: Any) -> None:
    await s.begin_turn(conv.pk, "failed", "hf", None, [user("lost?", path_hash="px")])
    await s.fail_turn("failed", {"type": "Timeout"})


async def _other_process_answers(s: Any, conv: Any, agent: Any) -> None:
    other = open_store(s.dsn)
    await other.open()
    try:
        await other.load_turn_state(agent.pk, conv.pk, lease=LeaseClaim("other", 30))
        await other.begin_turn(conv.pk, "theirs", "ht", None, [user("x", path_hash="p2")],
                               parent_seq=2)
        await other.finish_turn("theirs", conv.pk, agent.pk,
                                result(assistant("y", path_hash="p2")))
    finally:
        await other.close()


@pytest.mark.parametrize("differs", [
    "tip seq", "tip path", "last turn", "resends_history", "a failed turn since",
    "another process answered since", "the tip was paged out",
])
def test_a_conversation_not_as_assumed_gets_nothing_written(postgres_url, differs):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await _with_history(s, "c")
        before = await s.load_turn_state(agent.pk, conv.pk)
        mine = _assumed(before)
        planned = {
            "tip seq": lambda: _planned("t1", before, tip_seq=mine.tip_seq - 1),
            "tip path": lambda: _planned("t1", before, tip_path_hash="elsewhere"),
            "last turn": lambda: _planned("t1", before, last_turn_id="an-older-turn"),
            "resends_history": lambda: _planned("t1", before, resends_history=True),
        }.get(differs, lambda: _planned("t1", before))()
        if differs == "a failed turn since":
            await _fail_last_turn(s, conv)
        elif differs == "another process answered since":
            await _other_process_answers(s, conv, agent)
        elif differs == "the tip was paged out":
            await s.pool.execute("UPDATE messages SET in_context = false WHERE conversation_pk"
                                 " = $1 AND seq = $2", conv.pk, mine.tip_seq)
        rows, turns = await s.pool.fetch(_ROWS, conv.pk), await s.pool.fetch(_TURNS, conv.pk)
        state, first = await s.load_and_begin(agent.pk, conv.pk, _known(before), lease=ME,
                                              planned=planned)
        assert first is None
        assert await s.pool.fetch(_ROWS, conv.pk) == rows
        assert await s.pool.fetch(_TURNS, conv.pk) == turns
        assert not await s.acquire_lease(conv.pk, "other", 30)  # the lease is taken anyway
        read = await s.load_turn_state(agent.pk, conv.pk)
        assert [m.seq for m in state.context] == [m.seq for m in read.context]
        assert state.last_turn == read.last_turn

    run_with_store(open_store(postgres_url), body)


def test_a_lease_held_by_another_owner_is_busy_and_nothing_is_written(postgres_url):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await _with_history(s, "c")
        before = await s.load_turn_state(agent.pk, conv.pk)
        assert await s.acquire_lease(conv.pk, "other", 30)
        rows = await s.pool.fetch(_ROWS, conv.pk)
        with pytest.raises(LeaseBusy):
            await s.load_and_begin(agent.pk, conv.pk, None, lease=ME,
                                   planned=_planned("t1", before))
        assert await s.pool.fetch(_ROWS, conv.pk) == rows
        assert await s.pool.fetchval("SELECT count(*) FROM turns WHERE turn_id = 't1'") == 0

    run_with_store(open_store(postgres_url), body)


def test_a_deleted_conversation_is_a_lookup_error(postgres_url):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await _with_history(s, "c")
        before = await s.load_turn_state(agent.pk, conv.pk)
        await s.pool.execute("DELETE FROM conversations WHERE pk = $1", conv.pk)
        with pytest.raises(LookupError):
            await s.load_and_begin(agent.pk, conv.pk, None, lease=ME,
                                   planned=_planned("t1", before))

    run_with_store(open_store(postgres_url), body)


def test_a_writer_without_the_lease_committing_meanwhile_undoes_it(postgres_url):  # noqa: F811
    """A writer that takes no lease (an admin edit, an import) appends a row and commits
    while the statement waits for the conversation's lock: the statement's snapshot predates
    that row, so its numbering collides; it is undone, lease and all, and the state is read
    again with the lease. The writer's row is there, the planned input is not."""
    async def body(s: Any) -> None:
        agent, conv = await _with_history(s, "c")
        before = await s.load_turn_state(agent.pk, conv.pk)
        other = await asyncpg.connect(s.dsn)
        try:
            tx = other.transaction()
            await tx.start()
            await other.execute("SELECT 1 FROM conversations WHERE pk = $1 FOR NO KEY UPDATE",
                                conv.pk)
            await other.execute(
                "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data,"
                " text, created_at, in_context, visible) VALUES ($1, $2, 3, 'admin',"
                " 'user', '{\"role\": \"user\", \"content\": \"imported\"}', 'imported', 0,"
                " false, true)", conv.pk, agent.pk)
            call = asyncio.create_task(s.load_and_begin(
                agent.pk, conv.pk, _known(before), lease=ME, planned=_planned("t1", before)))
            await waiting_on_a_lock(s, "the conversation's lock")
            await tx.commit()
            state, first = await call
        finally:
            await other.close()
        assert first is None
        assert [r["text"] for r in await s.pool.fetch(_ROWS, conv.pk)] == [
            "where is the key?", "under the mat", "imported"]
        assert await s.pool.fetchval("SELECT count(*) FROM turns WHERE turn_id = 't1'") == 0
        assert [m.data["content"] for m in state.context] == ["where is the key?",
                                                              "under the mat"]
        assert not await s.acquire_lease(conv.pk, "other", 30)  # read again, with the lease

    run_with_store(open_store(postgres_url), body)
