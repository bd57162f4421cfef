"""Postgres leases ride in the turn's statements (issue 19; docs/storage.md): `finish_turn`
releases the lease its store took, a finish that writes nothing keeps it, and the lease is
never left behind nor deleted twice, whatever order renewal, finish and release come in."""

from __future__ import annotations

from typing import Any

from tests.store_backends import assistant, postgres_url, result, run_with_store, setup, user

__all__ = ["postgres_url"]  # the fixture


def _run(url: str, body) -> Any:
    from proxy.store import open_store

    return run_with_store(open_store(url), body)


async def _lease_rows(store: Any, conversation_pk: int) -> list[str]:
    """The owners of the conversation's held leases (a released row stays, free: ownerless
    and expired, counting its releases; migration 12)."""
    return [r[0] for r in await store.pool.fetch(
        "SELECT owner FROM leases WHERE conversation_pk = $1 AND owner <> ''", conversation_pk)]


async def _releases(store: Any, conversation_pk: int) -> int:
    return await store.pool.fetchval(
        "SELECT coalesce(max(releases), 0) FROM leases WHERE conversation_pk = $1",
        conversation_pk)


def test_finish_turn_releases_the_lease_and_release_sends_nothing_more(postgres_url):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        assert await s.acquire_lease(conv.pk, "me", 30)
        assert not await s.acquire_lease(conv.pk, "other", 30)  # held
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("hello")))
        assert await _lease_rows(s, conv.pk) == []  # released in the same statement
        assert await _releases(s, conv.pk) == 1
        assert await s.acquire_lease(conv.pk, "other", 30)  # another process may go on
        await s.release_lease(conv.pk, "me")  # what locks.py does next: must not touch it
        assert await _lease_rows(s, conv.pk) == ["other"]
        assert await _releases(s, conv.pk) == 1

    _run(postgres_url, body)


def test_a_finish_that_writes_nothing_keeps_the_lease_until_released(postgres_url):  # noqa: F811
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        assert await s.acquire_lease(conv.pk, "me", 30)
        try:
            await s.finish_turn("unknown", conv.pk, agent.pk, result(assistant("x")))
        except LookupError:
            pass
        else:
            raise AssertionError("finishing an unknown turn must raise LookupError")
        assert await _lease_rows(s, conv.pk) == ["me"]
        assert await _releases(s, conv.pk) == 0
        await s.release_lease(conv.pk, "me")
        assert await _lease_rows(s, conv.pk) == []
        assert await _releases(s, conv.pk) == 1

    _run(postgres_url, body)


def test_a_renewal_after_the_finish_is_released_again(postgres_url):  # noqa: F811
    """locks.py's renewer may fire between finish_turn and release_lease: the row it
    re-creates must not outlive the turn."""
    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        assert await s.acquire_lease(conv.pk, "me", 30)
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("hello")))
        assert await s.acquire_lease(conv.pk, "me", 30)  # the renewal
        assert await _lease_rows(s, conv.pk) == ["me"]
        await s.release_lease(conv.pk, "me")
        assert await _lease_rows(s, conv.pk) == []

    _run(postgres_url, body)


def test_a_turn_without_a_lease_leaves_another_stores_lease_alone(postgres_url):  # noqa: F811
    from proxy.store import open_store

    async def body(s: Any) -> None:
        agent, conv = await setup(s)
        other = open_store(postgres_url)  # another process's store
        await other.open()
        try:
            assert await other.acquire_lease(conv.pk, "other", 30)
        finally:
            await other.close()
        await s.begin_turn(conv.pk, "t1", "h", None, [user("hi")])
        await s.finish_turn("t1", conv.pk, agent.pk, result(assistant("hello")))
        assert await _lease_rows(s, conv.pk) == ["other"]

    _run(postgres_url, body)
