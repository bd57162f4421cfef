"""Postgres takes a turn's lease in the statement that reads the turn's state (issue 19;
proxy/store/postgres/turn_state.py): one round trip for both, and never a state older than the
lease it came with, even when another process releases the lease while the read waits for it.

The races are made deterministic with a second connection holding an open transaction (the
"other process" mid-commit): the read is started, seen waiting on a lock in `pg_locks`, and
only then is the other transaction committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from proxy.store import open_store
from proxy.store.leases import LeaseBusy, LeaseClaim
from proxy.turn.locks import ConversationLocks
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


def _run(url: str, body) -> Any:
    return run_with_store(open_store(url), body)


def test_the_read_takes_the_lease_and_another_owner_is_busy(postgres_url):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        state = await s.load_turn_state(agent.pk, conv.pk, lease=LeaseClaim("me", 30))
        assert state.conversation.pk == conv.pk
        with pytest.raises(LeaseBusy):
            await s.load_turn_state(agent.pk, conv.pk, lease=LeaseClaim("other", 30))
        assert not await s.acquire_lease(conv.pk, "other", 30)
        # the same owner renews it; the turn's finish releases it, as after acquire_lease
        await s.load_turn_state(agent.pk, conv.pk, lease=LeaseClaim("me", 30))
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("hello")))
        state = await s.load_turn_state(agent.pk, conv.pk, lease=LeaseClaim("other", 30))
        assert [m.data["content"] for m in state.context] == ["hi", "hello"]
        await s.release_lease(conv.pk, "other")
        assert await s.acquire_lease(conv.pk, "third", 30)

    _run(postgres_url, body)


def test_an_expired_lease_is_taken_over_by_the_read(postgres_url):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        assert await s.acquire_lease(conv.pk, "dead-process", 0.05)
        await asyncio.sleep(0.1)
        state = await s.load_turn_state(agent.pk, conv.pk, lease=LeaseClaim("me", 30))
        assert state.conversation.pk == conv.pk
        assert not await s.acquire_lease(conv.pk, "dead-process", 30)

    _run(postgres_url, body)


def test_the_lease_of_a_deleted_conversation_is_a_lookup_error(postgres_url):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.pool.execute("DELETE FROM conversations WHERE pk = $1", conv.pk)
        with pytest.raises(LookupError):
            await s.load_turn_state(agent.pk, conv.pk, lease=LeaseClaim("me", 30))

    _run(postgres_url, body)


@pytest.mark.parametrize("release", ["counted", "deleted by an older release"])
@pytest.mark.parametrize("known", [False, True])
def test_a_release_committed_during_the_read_is_never_missed(postgres_url, release,  # noqa: F811
                                                             known):
    """The other process's turn commits its writes and frees the lease while the read waits
    for the lease row: the read's snapshot predates that commit, so the state must be read
    again (the count of releases moved, or an older release's row vanished)."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        await s.begin_turn(conv.pk, "t0", "h0", None, [user("before")])
        await s.finish_turn("t0", conv.pk, agent.pk, result(assistant("reply")))
        cached = await s.load_turn_state(agent.pk, conv.pk)
        from proxy.core.types import KnownContext
        known_context = (KnownContext(cached.epoch, cached.conversation.created_at,
                                      tuple(cached.context)) if known else None)
        assert await s.acquire_lease(conv.pk, "other", 30)
        other = await asyncpg.connect(s.dsn)
        try:
            tx = other.transaction()
            await tx.start()
            await other.execute("UPDATE conversations SET summary = 'written by the other'"
                                " WHERE pk = $1", conv.pk)
            if release == "counted":
                await other.execute("UPDATE leases SET owner = '', expires_at = 0,"
                                    " releases = releases + 1 WHERE conversation_pk = $1",
                                    conv.pk)
            else:
                await other.execute("DELETE FROM leases WHERE conversation_pk = $1", conv.pk)
            read = asyncio.create_task(s.load_turn_state(
                agent.pk, conv.pk, known_context, lease=LeaseClaim("me", 30)))
            await waiting_on_a_lock(s, "the lease row")
            await tx.commit()
            state = await read
        finally:
            await other.close()
        assert state.conversation.summary == "written by the other"
        assert not await s.acquire_lease(conv.pk, "third", 30)  # and the lease is ours

    _run(postgres_url, body)


def test_two_processes_turns_on_one_conversation_read_each_others_writes(postgres_url):  # noqa: F811
    """Two stores (two processes) take turns on one conversation through ConversationLocks,
    whose first read takes the lease: every turn sees every turn before it."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        second = open_store(postgres_url)
        await second.open()
        try:
            stores = [s, second]
            locks = [ConversationLocks(st.turn_leases(), 5.0) for st in stores]
            seen: list[int] = []

            async def turn(i: int) -> None:
                store = stores[i % 2]

                async def first(lease: LeaseClaim | None) -> Any:
                    assert lease is not None  # Postgres: the read takes the lease
                    return await store.load_turn_state(agent.pk, conv.pk, lease=lease)

                async with locks[i % 2].hold(conv.pk, 10.0, first=first) as state:
                    seen.append(len(state.context))
                    await store.begin_turn(conv.pk, f"t{i}", f"h{i}", None, [user(f"q{i}")])
                    await asyncio.sleep(0.005)
                    await store.finish_turn(f"t{i}", conv.pk, agent.pk,
                                            result(assistant(f"a{i}")))

            await asyncio.gather(*(turn(i) for i in range(12)))
            assert sorted(seen) == [2 * i for i in range(12)]
            final = await s.load_turn_state(agent.pk, conv.pk)
            assert len(final.context) == 24
        finally:
            await second.close()

    _run(postgres_url, body)
