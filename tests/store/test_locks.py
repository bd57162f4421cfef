"""Conversation locks: in-process queueing and database leases between processes."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import ProxyError
from proxy.store import open_store
from proxy.store.leases import FileLeases
from proxy.turn.locks import ConversationLocks


def run(coro):
    return asyncio.run(coro)


async def _store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/locks.db")
    await store.open()
    agent = await store.ensure_agent("t", "a", [])
    conv = await store.ensure_conversation(agent.pk, "c")
    return store, conv.pk


def test_a_second_process_waits_for_the_lease(tmp_path):
    async def main():
        store, conv = await _store(tmp_path)
        one, two = ConversationLocks(store, 5.0), ConversationLocks(store, 5.0)
        order = []

        async def turn(locks, name, hold):
            async with locks.hold(conv, timeout=3.0):
                order.append(f"{name} in")
                await asyncio.sleep(hold)
                order.append(f"{name} out")

        first = asyncio.create_task(turn(one, "one", 0.3))
        await asyncio.sleep(0.05)
        await turn(two, "two", 0)
        await first
        await store.close()
        return order

    assert run(main()) == ["one in", "one out", "two in", "two out"]


def test_an_expired_lease_of_a_dead_process_is_taken_over(tmp_path):
    async def main():
        store, conv = await _store(tmp_path)
        assert await store.acquire_lease(conv, "dead-process", 0.2)
        locks = ConversationLocks(store, 5.0)
        async with locks.hold(conv, timeout=2.0):
            taken = True
        await store.close()
        return taken

    assert run(main())


def test_busy_beyond_the_timeout_is_409(tmp_path):
    async def main():
        store, conv = await _store(tmp_path)
        assert await store.acquire_lease(conv, "other-process", 30)
        locks = ConversationLocks(store, 5.0)
        try:
            with pytest.raises(ProxyError) as err:
                async with locks.hold(conv, timeout=0.3):
                    pass
        finally:
            await store.close()
        return err.value

    error = run(main())
    assert error.status == 409 and error.headers["Retry-After"] == "1"


def test_the_lease_is_renewed_while_a_long_turn_runs(tmp_path):
    async def main():
        store, conv = await _store(tmp_path)
        holder, other = ConversationLocks(store, 0.3), ConversationLocks(store, 0.3)
        async with holder.hold(conv, timeout=1.0):
            await asyncio.sleep(0.8)  # well past the TTL: only renewal keeps it
            stolen = await store.acquire_lease(conv, other.owner, 0.3)
        await store.close()
        return stolen

    assert run(main()) is False


def test_lock_table_does_not_grow(tmp_path):
    async def main():
        locks = ConversationLocks()
        for key in range(100):
            async with locks.hold(key, timeout=1.0):
                pass
        return len(locks._locks)

    assert run(main()) == 0


# --- SQLite on Linux: open-file-description locks instead of lease rows -------------------
file_leases = pytest.mark.skipif(not FileLeases.supported(), reason="needs F_OFD_SETLK (Linux)")


@file_leases
def test_file_leases_exclude_each_other_per_conversation(tmp_path):
    async def main():
        one, two = FileLeases(str(tmp_path / "l")), FileLeases(str(tmp_path / "l"))
        results = [
            await one.acquire_lease(7, "", 30),
            await two.acquire_lease(7, "", 30),  # held by `one`, even in the same process
            await two.acquire_lease(8, "", 30),  # another conversation is independent
        ]
        await one.release_lease(7, "")
        results.append(await two.acquire_lease(7, "", 30))
        one.close()
        two.close()  # closing the file releases everything it holds
        three = FileLeases(str(tmp_path / "l"))
        results.append(await three.acquire_lease(8, "", 30))
        three.close()
        return results

    assert run(main()) == [True, False, True, True, True]


@file_leases
def test_a_killed_process_releases_its_file_lease_at_once(tmp_path):
    """No expiry to wait out: the kernel drops the lock with the process."""
    import subprocess
    import sys

    path = str(tmp_path / "l")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import asyncio, sys, time; from proxy.store.leases import FileLeases\n"
         f"leases = FileLeases({path!r})\n"
         "assert asyncio.run(leases.acquire_lease(3, '', 30))\n"
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        leases = FileLeases(path)
        assert not run(leases.acquire_lease(3, "", 30))
        holder.kill()
        holder.wait(10)
        assert run(leases.acquire_lease(3, "", 30))
        leases.close()
    finally:
        holder.kill()
        holder.stdout.close()


@file_leases
def test_conversation_locks_over_file_leases_queue_across_instances(tmp_path):
    async def main():
        one = ConversationLocks(FileLeases(str(tmp_path / "l")), 0.1)
        two = ConversationLocks(FileLeases(str(tmp_path / "l")), 0.1)
        order = []

        async def turn(locks, name, hold):
            async with locks.hold(5, timeout=3.0):
                order.append(f"{name} in")
                await asyncio.sleep(hold)  # past the TTL: file leases do not expire
                order.append(f"{name} out")

        first = asyncio.create_task(turn(one, "one", 0.4))
        await asyncio.sleep(0.05)
        await turn(two, "two", 0)
        await first
        return order

    assert run(main()) == ["one in", "one out", "two in", "two out"]


@file_leases
def test_the_sqlite_store_leases_conversations_with_files(tmp_path):
    async def main():
        store, _ = await _store(tmp_path)
        leases = store.turn_leases()
        await store.close()
        return leases

    leases = run(main())
    assert isinstance(leases, FileLeases) and leases.path.endswith("locks.db-leases")
