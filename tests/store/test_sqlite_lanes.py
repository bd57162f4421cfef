"""The SQLite store's two lanes (proxy/store/sqlite/lanes.py).

A turn's statements run on the event loop's thread on connections that never wait; whatever
would wait — another process holding the write lock — runs again on the thread lane, which
does wait, while the loop goes on. Checkpoints run in the background and keep the WAL short.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from proxy.core.types import NewMessage, TurnResult
from proxy.store.sqlite.store import SQLiteStore


def run(coro):
    return asyncio.run(coro)


def user(text: str) -> NewMessage:
    return NewMessage({"role": "user", "content": text}, visible=True, visible_hash=text)


async def _open(path) -> tuple[SQLiteStore, int, int]:
    store = SQLiteStore(str(path))
    await store.open()
    agent = await store.ensure_agent("t", "a", [])
    conversation = await store.ensure_conversation(agent.pk, "c")
    return store, agent.pk, conversation.pk


def test_fast_connections_never_wait_and_never_checkpoint(tmp_path):
    async def main():
        store, _, _ = await _open(tmp_path / "p.db")
        lanes = store.lanes
        pragmas = {
            name: tuple(db.execute(f"PRAGMA {p}").fetchone()[0]
                        for p in ("busy_timeout", "wal_autocheckpoint", "query_only"))
            for name, db in (("writer", lanes.fast_writer), ("reader", lanes.fast_reader))
        }
        await store.close()
        return pragmas

    assert run(main()) == {"writer": (0, 0, 0), "reader": (0, 1000, 1)}


def test_a_write_that_would_wait_runs_on_the_thread_lane_while_the_loop_goes_on(tmp_path):
    """Another process holds SQLite's write lock: the fast writer gets SQLITE_BUSY at once,
    rolls back and the transaction runs again on the thread writer, which waits for the lock.
    Releasing the lock is itself done by the event loop — if the wait blocked the loop, the
    write could never complete."""
    path = tmp_path / "busy.db"

    async def main():
        store, _, conv = await _open(path)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        write = asyncio.create_task(store.begin_turn(conv, "t1", "h", None, [user("hello")]))
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not write.done()  # waiting on the thread lane ...
        assert store.lanes.fallbacks == 1
        other.execute("COMMIT")  # ... and the loop is free to let the other writer finish
        first_seq = await write
        other.close()
        stored = await store.context_messages(conv)
        await store.close()
        return first_seq, [m.data["content"] for m in stored]

    assert run(main()) == (1, ["hello"])


def test_a_failing_fast_write_rolls_back_and_is_not_retried(tmp_path):
    async def main():
        store, _, conv = await _open(tmp_path / "fail.db")
        await store.begin_turn(conv, "t1", "h", None, [user("one")])
        with pytest.raises(sqlite3.IntegrityError):  # the same turn id twice
            await store.begin_turn(conv, "t1", "h", None, [user("two")])
        stored = [m.data["content"] for m in await store.context_messages(conv)]
        fallbacks = store.lanes.fallbacks
        await store.close()
        return stored, fallbacks

    assert run(main()) == (["one"], 0)


def test_background_checkpoints_keep_the_wal_short(tmp_path):
    """Fast commits never checkpoint; every `checkpoint_every` of them a checkpoint runs on the
    thread lane and completes, so later commits reuse the WAL from its start."""
    path = tmp_path / "wal.db"

    async def turn(store: SQLiteStore, agent: int, conv: int, n: int) -> None:
        await store.begin_turn(conv, f"t{n}", "h", None, [user(f"question {n} " * 50)])
        await store.finish_turn(f"t{n}", conv, agent, TurnResult(
            messages=[NewMessage({"role": "assistant", "content": f"answer {n} " * 50},
                                 visible=True)], blocks=[], passages=[], response={}))

    async def main():
        store, agent, conv = await _open(path)
        store.lanes.checkpoint_every = 10
        for n in range(5):  # 10 commits
            await turn(store, agent, conv, n)
        await store.lanes.wait_checkpoint()
        assert store.lanes.checkpoints == 1
        size = os.path.getsize(f"{path}-wal")
        for n in range(5, 9):  # 8 more commits: written over the checkpointed start of the WAL
            await turn(store, agent, conv, n)
        grown = os.path.getsize(f"{path}-wal")
        messages = len(await store.visible_transcript(conv))
        await store.close()
        return size, grown, messages

    size, grown, messages = run(main())
    assert messages == 18
    assert grown == size  # restarted, not appended to


def test_fast_reads_see_every_committed_write(tmp_path):
    """The fast reader reads in one snapshot per call, never an older one."""
    async def main():
        store, agent, conv = await _open(tmp_path / "read.db")
        seen = []
        for n in range(3):
            await store.begin_turn(conv, f"t{n}", f"h{n}", None, [user(f"m{n}")])
            state = await store.load_turn_state(agent, conv)
            seen.append((state.last_turn.turn_id, len(state.context)))
        await store.close()
        return seen

    assert run(main()) == [("t0", 1), ("t1", 2), ("t2", 3)]
