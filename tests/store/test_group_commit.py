"""Group commit on the SQLite fast lane (proxy/store/sqlite/group_commit.py): the writes of one
pass of the event loop share one transaction, each under a savepoint, against a real database
file."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from proxy.store.sqlite.lanes import SQLiteLanes


def run(coro):
    return asyncio.run(coro)


def _schema(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)")


def put(db: sqlite3.Connection, key: str, value: str) -> str:
    db.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (key, value))
    return key


def put_then_fail(db: sqlite3.Connection, key: str) -> None:
    db.execute("INSERT INTO kv (k, v) VALUES (?, 'half')", (key,))
    raise ValueError(f"{key} changed its mind")


def rows(path) -> dict[str, str]:
    """What another connection sees: only what was committed."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT k, v FROM kv"))


async def _open(path) -> SQLiteLanes:
    lanes = SQLiteLanes(str(path))
    await lanes.open(_schema)
    return lanes


def test_writes_of_one_pass_share_one_commit(tmp_path):
    path = tmp_path / "batch.db"

    async def main():
        lanes = await _open(path)
        results = await asyncio.gather(*(lanes.write_fast(put, f"k{n}", f"v{n}")
                                         for n in range(10)))
        batches = lanes.batches
        one = await lanes.write_fast(put, "alone", "x")  # alone: a commit of its own
        await lanes.close()
        return results, batches, one, lanes.batches

    results, batches, one, after = run(main())
    assert results == [f"k{n}" for n in range(10)]
    assert batches == 1
    assert one == "alone" and after == 2
    assert rows(path) == {**{f"k{n}": f"v{n}" for n in range(10)}, "alone": "x"}


def test_a_failing_write_is_undone_alone_and_its_caller_gets_the_error(tmp_path):
    path = tmp_path / "fail.db"

    async def main():
        lanes = await _open(path)
        outcomes = await asyncio.gather(
            lanes.write_fast(put, "a", "1"),
            lanes.write_fast(put_then_fail, "b"),
            lanes.write_fast(put, "a", "duplicate"),  # an IntegrityError, also alone
            lanes.write_fast(put, "c", "3"),
            return_exceptions=True)
        await lanes.close()
        return outcomes, lanes.batches

    outcomes, batches = run(main())
    assert outcomes[0] == "a" and outcomes[3] == "c"
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], sqlite3.IntegrityError)
    assert batches == 1
    assert rows(path) == {"a": "1", "c": "3"}  # "b"'s half-write was rolled back


def test_a_caller_cancelled_before_the_commit_writes_nothing(tmp_path):
    path = tmp_path / "cancel.db"

    async def main():
        lanes = await _open(path)
        kept = asyncio.create_task(lanes.write_fast(put, "kept", "1"))
        dropped = asyncio.create_task(lanes.write_fast(put, "dropped", "2"))
        await asyncio.sleep(0)  # both queued; the commit runs after this coroutine resumes
        dropped.cancel()
        assert await kept == "kept"
        with pytest.raises(asyncio.CancelledError):
            await dropped
        await lanes.close()

    run(main())
    assert rows(path) == {"kept": "1"}


def test_a_result_arrives_only_once_the_write_is_committed(tmp_path):
    path = tmp_path / "durable.db"

    async def main():
        lanes = await _open(path)
        seen = []
        for n in range(3):
            await lanes.write_fast(put, f"k{n}", "v")
            seen.append(len(rows(path)))  # another connection already sees it
        await lanes.close()
        return seen

    assert run(main()) == [1, 2, 3]


def test_a_busy_batch_runs_again_write_by_write_on_the_thread_lane(tmp_path):
    """Another process holds the write lock: the whole batch is rolled back and each write
    runs again, in order, on the thread writer, which waits while the loop goes on."""
    path = tmp_path / "busy.db"

    async def main():
        lanes = await _open(path)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        writes = [asyncio.create_task(lanes.write_fast(put, f"k{n}", "v")) for n in range(3)]
        failing = asyncio.create_task(lanes.write_fast(put_then_fail, "bad"))
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert not any(w.done() for w in writes)
        assert lanes.fallbacks == 4
        other.execute("COMMIT")
        other.close()
        results = await asyncio.gather(*writes)
        with pytest.raises(ValueError):
            await failing
        await lanes.close()
        return results

    assert run(main()) == ["k0", "k1", "k2"]
    assert rows(path) == {"k0": "v", "k1": "v", "k2": "v"}


def test_writes_queued_behind_the_thread_lane_commit_when_it_is_done(tmp_path):
    path = tmp_path / "queued.db"

    async def main():
        lanes = await _open(path)
        async with lanes.lock:  # the thread lane (or upkeep) is writing
            writes = [asyncio.create_task(lanes.write_fast(put, f"k{n}", "v")) for n in range(4)]
            for _ in range(5):
                await asyncio.sleep(0)
            assert not any(w.done() for w in writes)
        results = await asyncio.gather(*writes)
        await lanes.close()
        return results, lanes.batches

    results, batches = run(main())
    assert results == [f"k{n}" for n in range(4)] and batches == 1


def test_close_commits_what_is_still_queued(tmp_path):
    path = tmp_path / "close.db"

    async def main():
        lanes = await _open(path)
        write = asyncio.create_task(lanes.write_fast(put, "last", "1"))
        await asyncio.sleep(0)  # queued, its commit not run yet
        batches = lanes.batches
        await lanes.close()  # takes the free lock without waiting: commits before the pass ends
        assert batches == 0 and lanes.batches == 1
        assert await write == "last"

    run(main())
    assert rows(path) == {"last": "1"}
