"""One turn at a time per conversation, and a conversation deleted under a waiting turn:
`StatefulService.start` against an in-memory store (whose leases stand in for other processes).
No timing assertions: waiting is observed by what has or has not happened."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import ProxyError
from proxy.turn import StatefulService, TurnSession
from tests.fakes.turns import TurnHarness, drain, reply_text, turn_settings, user


async def settle() -> None:
    """Let every other ready task run as far as it can."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_two_starts_on_one_conversation_run_one_after_the_other() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        first = await h.start([user("one")])
        assert isinstance(first, TurnSession)
        second_start = asyncio.create_task(h.start([user("two")]))
        await settle()
        assert not second_start.done()  # waiting for the conversation
        assert h.store.calls.count("begin_turn") == 1

        await drain(first)  # the first turn ends and releases the conversation
        second = await second_start
        assert isinstance(second, TurnSession)
        await drain(second)
        # the second read the conversation after the first was stored
        prompt = [m.get("content") for m in h.upstream.requests[-1]["messages"][1:]]
        assert prompt == ["one", reply_text(first), "two"]
        assert [m.seq for m in h.rows()] == [1, 2, 3, 4]

    asyncio.run(scenario())


def test_a_start_that_waits_past_lock_timeout_is_409_conversation_busy() -> None:
    async def scenario() -> None:
        h = TurnHarness.create(turn_settings(lock_timeout_s=0.01))
        first = await h.start([user("one")])
        assert isinstance(first, TurnSession)
        with pytest.raises(ProxyError) as error:
            await h.start([user("two")])
        assert (error.value.status, error.value.code) == (409, "conversation_busy")
        assert "Retry-After" in error.value.headers
        assert h.store.calls.count("begin_turn") == 1  # the busy request stored nothing
        await drain(first)
        await h.turn([user("two")])  # free again

    asyncio.run(scenario())


def test_two_services_over_one_store_exclude_each_other_by_lease() -> None:
    """Two processes sharing a database: the in-process lock cannot see the other one, the
    conversation's lease does."""

    async def scenario() -> None:
        h = TurnHarness.create(turn_settings(lock_timeout_s=0.01))
        other = StatefulService(h.settings, h.store, h.upstream)
        first = await h.start([user("one")])
        assert isinstance(first, TurnSession)
        request = h.request([user("two")])
        with pytest.raises(ProxyError) as error:
            await other.start(request, api_key=None)
        assert (error.value.status, error.value.code) == (409, "conversation_busy")
        await drain(first)
        assert h.store.lease_holders == {}
        session = await other.start(h.request([user("two")]), api_key=None)
        assert isinstance(session, TurnSession)
        await drain(session)
        assert [m.get("content") for m in h.visible()][::2] == ["one", "two"]

    asyncio.run(scenario())


def test_a_conversation_deleted_meanwhile_is_409_conversation_deleted() -> None:
    async def scenario() -> None:
        h = TurnHarness.create()
        session = await h.turn([user("one")])
        # another process deletes the agent; this service still has its ids cached
        await h.store.delete_agent(session.agent.pk)
        with pytest.raises(ProxyError) as error:
            await h.start([user("two")])
        assert (error.value.status, error.value.code) == (409, "conversation_deleted")
        assert error.value.headers == {"Retry-After": "1"}
        assert h.store.calls.count("begin_turn") == 1  # nothing stored for it

        # the retry the 409 asks for starts over with a new agent and conversation
        again = await h.turn([user("two")])
        assert again.agent.pk != session.agent.pk
        assert [m.get("content") for m in h.visible()] == ["two", reply_text(again)]

    asyncio.run(scenario())
