"""`ConversationLocks.hold(first=...)` over a lease store that takes leases in reads (as
Postgres does, proxy/store/postgres/turn_state.py): the first read is each attempt, LeaseBusy
means "poll again", its result is what the hold yields, and the lease is released on every way
out. The lease store here is a dictionary standing in for the lease rows of other processes;
the Postgres store itself is tested in tests/store/test_pg_lease_in_read.py."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import ProxyError
from proxy.store.leases import LeaseBusy, LeaseClaim
from proxy.turn.locks import ConversationLocks


class RowLeases:
    """Leases as rows `conversation -> owner`, taken only through reads."""

    leases_in_read = True
    expires = False  # nothing to renew in these tests

    def __init__(self) -> None:
        self.rows: dict[int, str] = {}
        self.released: list[tuple[int, str]] = []

    def read(self, key: int, claim: LeaseClaim, value: str = "state") -> str:
        holder = self.rows.get(key)
        if holder is not None and holder != claim.owner:
            raise LeaseBusy(key)
        self.rows[key] = claim.owner
        return value

    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool:
        raise AssertionError("a store that takes leases in reads is never asked separately")

    async def release_lease(self, conversation_pk: int, owner: str) -> None:
        self.released.append((conversation_pk, owner))
        if self.rows.get(conversation_pk) == owner:
            del self.rows[conversation_pk]


def test_the_read_takes_the_lease_and_its_result_is_yielded_then_released() -> None:
    async def scenario() -> None:
        store = RowLeases()
        locks = ConversationLocks(store, 30.0)
        claims: list[LeaseClaim | None] = []

        async def first(claim: LeaseClaim | None) -> str:
            claims.append(claim)
            assert claim is not None
            return store.read(7, claim)

        async with locks.hold(7, 1.0, first=first) as state:
            assert state == "state"
            assert store.rows == {7: locks.owner}
        assert claims == [LeaseClaim(locks.owner, 30.0)]
        assert store.rows == {} and store.released == [(7, locks.owner)]

    asyncio.run(scenario())


def test_a_busy_read_is_retried_until_the_other_owner_lets_go() -> None:
    async def scenario() -> None:
        store = RowLeases()
        store.rows[7] = "another process"
        locks = ConversationLocks(store, 30.0)
        attempts = 0

        async def first(claim: LeaseClaim | None) -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 3:  # the other process finished meanwhile
                store.rows.pop(7)
            assert claim is not None
            return store.read(7, claim, f"read on attempt {attempts}")

        async with locks.hold(7, 5.0, first=first) as state:
            assert state == "read on attempt 3"

    asyncio.run(scenario())


def test_a_read_busy_past_the_timeout_is_409_and_releases_nothing_it_never_had() -> None:
    async def scenario() -> None:
        store = RowLeases()
        store.rows[7] = "another process"
        locks = ConversationLocks(store, 30.0)

        async def first(claim: LeaseClaim | None) -> str:
            assert claim is not None
            return store.read(7, claim)

        with pytest.raises(ProxyError) as error:
            async with locks.hold(7, 0.05, first=first):
                raise AssertionError("never held")
        assert (error.value.status, error.value.code) == (409, "conversation_busy")
        assert store.rows == {7: "another process"}
        assert locks._locks == {}  # the in-process lock is gone too

    asyncio.run(scenario())


def test_a_read_that_fails_after_taking_the_lease_releases_it() -> None:
    async def scenario() -> None:
        store = RowLeases()
        locks = ConversationLocks(store, 30.0)

        async def first(claim: LeaseClaim | None) -> str:
            assert claim is not None
            store.read(7, claim)
            raise LookupError("the conversation is gone")

        with pytest.raises(LookupError):
            async with locks.hold(7, 1.0, first=first):
                raise AssertionError("never held")
        assert store.rows == {} and store.released == [(7, locks.owner)]

        # and the conversation can be held again at once
        async def again(claim: LeaseClaim | None) -> str:
            assert claim is not None
            return store.read(7, claim)

        async with locks.hold(7, 1.0, first=again) as state:
            assert state == "state"

    asyncio.run(scenario())


def test_without_lease_in_read_the_read_comes_after_the_lease() -> None:
    """A lease store without `leases_in_read` (SQLite's file locks, the lease table) is
    asked for the lease first; the read then gets no claim."""
    class SeparateLeases:
        def __init__(self) -> None:
            self.events: list[str] = []

        async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool:
            self.events.append("acquire")
            return True

        async def release_lease(self, conversation_pk: int, owner: str) -> None:
            self.events.append("release")

    async def scenario() -> None:
        store = SeparateLeases()
        locks = ConversationLocks(store, 30.0)

        async def first(claim: LeaseClaim | None) -> str:
            assert claim is None
            store.events.append("read")
            return "state"

        async with locks.hold(7, 1.0, first=first) as state:
            assert state == "state"
        assert store.events == ["acquire", "read", "release"]

    asyncio.run(scenario())
