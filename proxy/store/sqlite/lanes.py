"""The SQLite store's connections, and the two lanes a store call runs on.

A turn's own store calls are a few indexed statements each, tens of microseconds of work.
Handing every one to a worker thread (aiosqlite) costs more than that: a queue hop, a wake-up
of the event loop and, under load, a wait for the GIL until the loop yields it (up to the 5 ms
switch interval) — at 16 concurrent turns that hand-over, not SQLite, bounded throughput and
made the tail latency. So those calls run on the **fast lane**: on the event loop's own thread,
on two connections that never wait (`busy_timeout = 0`, no automatic checkpoints). If one
would have to wait — another process holds SQLite's write lock, a rare busy reader — it rolls
back and runs again on the **thread lane**: aiosqlite connections with a 5 s busy timeout,
which also carry everything that can take long (search, listings, export and import, deleting
a whole agent), so the loop is never blocked by a slow statement or by another process.

Upkeep never runs inside a turn's commit: WAL checkpoints write and sync the database file,
and the store's `maintain` step (it indexes the messages turns wrote for full-text search, in
one batch) would make some commits slow. Every `checkpoint_every` fast commits a background
job runs them on the thread lane: a passive checkpoint while turns go on, `maintain` under the
write lock, and a last short checkpoint under the lock so that the WAL starts over.

Writes on both lanes are serialised by one asyncio.Lock, so this process has at most one write
transaction at a time; reads never wait for writes (WAL). The fast writes of one pass of the
event loop share one transaction (group commit, `group_commit.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

from . import group_commit
from .group_commit import QueuedWrite

log = logging.getLogger("memproxy.store")

T = TypeVar("T")

SYNCHRONOUS_MODES = ("NORMAL", "FULL")
BUSY_TIMEOUT_MS = 5000  # the thread lane's wait for another process's write lock
CHECKPOINT_EVERY = 100  # fast commits between background checkpoints (~ SQLite's 1000 pages)
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def configure(db: sqlite3.Connection, *, writer: bool, synchronous: str = "NORMAL",
              fast: bool = False) -> None:
    """WAL, and `synchronous` as configured (`[database] sqlite_synchronous`): in WAL mode,
    NORMAL loses nothing when the process dies, only possibly the last commits on a power loss
    or OS crash; FULL syncs the WAL on every commit so those survive too (docs/storage.md).

    A fast-lane connection never waits for a lock and never checkpoints (see the module)."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(
            f"sqlite synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    db.execute(f"PRAGMA busy_timeout = {0 if fast else BUSY_TIMEOUT_MS}")
    if writer and not fast:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not switch SQLite to WAL mode (got {mode!r})")
    if writer and fast:
        db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    db.execute("PRAGMA foreign_keys = ON")
    if not writer:
        db.execute("PRAGMA query_only = ON")


def transaction(db: sqlite3.Connection, fn: Callable[..., T], args: tuple) -> T:
    """`fn(db, *args)` as one IMMEDIATE transaction, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db, *args)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (extended codes included): waiting would have helped."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # pragma: no cover - Python < 3.11
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in _BUSY_CODES


def _checkpoint(db: sqlite3.Connection) -> tuple[int, int, int]:
    return db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _call(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """Run `fn(sqlite3_connection, *args)` on the aiosqlite worker thread in one hop.

    Uses aiosqlite's `_execute` / `_conn` (stable since 0.17, present in 0.22): its public API
    costs a thread round trip per statement and cannot run a transaction as one unit.
    """
    return conn._execute(fn, conn._conn, *args)


class SQLiteLanes:
    """Four connections to one database file: a writer and a reader on each lane."""

    def __init__(self, path: str, synchronous: str = "NORMAL",
                 maintain: Callable[[sqlite3.Connection], Any] | None = None) -> None:
        self.path = path
        self.synchronous = synchronous
        self.maintain = maintain  # the store's upkeep, run as a transaction in the background
        self.writer: aiosqlite.Connection | None = None  # thread lane
        self.reader: aiosqlite.Connection | None = None
        self.fast_writer: sqlite3.Connection | None = None  # fast lane (the loop's thread)
        self.fast_reader: sqlite3.Connection | None = None
        self.lock = asyncio.Lock()
        self.checkpoint_every = CHECKPOINT_EVERY
        self.checkpoints = 0  # background checkpoints run (observable for tests and metrics)
        self.fallbacks = 0  # fast-lane calls that had to run on the thread lane
        self.batches = 0  # fast-lane transactions committed (each one or more writes)
        self._commits = 0
        self._checkpoint: asyncio.Task[None] | None = None
        self._queued: list[QueuedWrite] = []  # fast writes waiting for this pass's commit
        self._flusher: asyncio.Task[None] | None = None
        self._fallback_tasks: set[asyncio.Task[None]] = set()

    async def open(self, migrate: Callable[[sqlite3.Connection], Any]) -> None:
        """Connect the thread writer first (it switches the file to WAL and migrates), then
        the others."""
        writer = await aiosqlite.connect(self.path, isolation_level=None)
        opened: list[Any] = [writer]
        try:
            await _call(writer, lambda db: configure(db, writer=True, synchronous=self.synchronous))
            await _call(writer, migrate)
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            opened.append(reader)
            await _call(reader, lambda db: configure(db, writer=False, synchronous=self.synchronous))
            fast_writer = self._connect_fast(writer=True)
            opened.append(fast_writer)
            fast_reader = self._connect_fast(writer=False)
        except BaseException:
            for conn in reversed(opened):
                result = conn.close()
                if asyncio.iscoroutine(result):
                    await result
            raise
        self.writer, self.reader = writer, reader
        self.fast_writer, self.fast_reader = fast_writer, fast_reader

    def _connect_fast(self, *, writer: bool) -> sqlite3.Connection:
        # check_same_thread=False: opened and used on the loop's thread, but closed from
        # wherever the application shuts down.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            configure(db, writer=writer, synchronous=self.synchronous, fast=True)
        except BaseException:
            db.close()
            raise
        return db

    @property
    def is_open(self) -> bool:
        return self.writer is not None

    async def close(self, on_writer: Callable[[sqlite3.Connection], Any] | None = None) -> None:
        """Close every connection; `on_writer(db)` runs last on the thread writer, under the
        write lock (the store refreshes planner statistics there)."""
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        async with self.lock:  # writes still queued are committed, not dropped
            self._commit_queued()
        if self._fallback_tasks:
            await asyncio.gather(*self._fallback_tasks, return_exceptions=True)
        writer, reader = self.writer, self.reader
        fast = (self.fast_reader, self.fast_writer)
        self.writer = self.reader = self.fast_writer = self.fast_reader = None
        async with self.lock:
            for db in fast:
                if db is not None:
                    db.close()
            if reader is not None:
                await reader.close()
            if writer is not None:
                try:
                    if on_writer is not None:
                        await _call(writer, on_writer)
                finally:
                    await writer.close()

    # --- the thread lane --------------------------------------------------------------------
    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        if self.reader is None:
            raise RuntimeError("store is not open")
        return await _call(self.reader, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(db, *args)` as one IMMEDIATE transaction on the thread writer."""
        if self.writer is None:
            raise RuntimeError("store is not open")
        async with self.lock:
            return await _call(self.writer, transaction, fn, args)

    # --- the fast lane ----------------------------------------------------------------------
    async def read_fast(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(db, *args)` on the loop's thread, in one read transaction (one snapshot); on
        the thread lane if SQLite reports the database busy."""
        db = self.fast_reader
        if db is None:
            raise RuntimeError("store is not open")
        try:
            db.execute("BEGIN")
            try:
                return fn(db, *args)
            finally:
                if db.in_transaction:
                    db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        self.fallbacks += 1
        return await self.read(fn, *args)

    async def write_fast(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(db, *args)` in an IMMEDIATE transaction on the loop's thread, committed together
        with the other fast writes of this pass of the event loop, each under its own savepoint
        (group commit, `group_commit.py`). If another process holds the write lock, the writes
        run again one by one on the thread writer, which waits for it (the loop goes on)."""
        if self.fast_writer is None or self.writer is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        write = QueuedWrite(fn, args, loop.create_future())
        self._queued.append(write)
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return await write.done

    def _flush(self) -> None:
        """Commit the queued writes now, or once the thread lane's write is over."""
        if not self._queued:
            return
        if self.lock.locked():
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_when_free())
            return
        self._commit_queued()

    async def _flush_when_free(self) -> None:
        try:
            async with self.lock:
                self._commit_queued()
        finally:
            self._flusher = None
            if self._queued:  # queued meanwhile (or this task was cancelled): not stranded
                asyncio.get_running_loop().call_soon(self._flush)

    def _commit_queued(self) -> None:
        queued, self._queued = self._queued, []
        writes = [w for w in queued if not w.done.cancelled()]
        if not writes:
            return
        if self.fast_writer is None:
            group_commit.fail(writes, RuntimeError("store is not open"))
            return
        try:
            outcomes = group_commit.run_batch(self.fast_writer, writes, is_busy)
        except group_commit.BusyBatch:
            self.fallbacks += len(writes)
            task = asyncio.get_running_loop().create_task(self._on_thread_lane(writes))
            self._fallback_tasks.add(task)
            task.add_done_callback(self._fallback_tasks.discard)
            return
        except Exception as exc:  # the COMMIT itself failed: nothing was written
            group_commit.fail(writes, exc)
            return
        self.batches += 1
        group_commit.settle(outcomes)
        self._commits += len(writes)
        if self._commits >= self.checkpoint_every and self._checkpoint is None:
            self._commits = 0
            self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())

    async def _on_thread_lane(self, writes: list[QueuedWrite]) -> None:
        """Busy writes, each again as its own transaction on the thread writer (which waits)."""
        try:
            for write in writes:
                if write.done.cancelled():
                    continue
                try:
                    async with self.lock:
                        if self.writer is None:
                            raise RuntimeError("store is not open")
                        result = await _call(self.writer, transaction, write.fn, write.args)
                except Exception as exc:
                    group_commit.fail([write], exc)
                else:
                    group_commit.settle([(write, result, None)])
        finally:  # cancelled (shutdown): the callers must not wait forever
            group_commit.fail(writes, RuntimeError("store is closing"))

    async def _run_checkpoint(self) -> None:
        """Two passive checkpoints on the thread writer with the store's `maintain` between
        them: the first copies what is in the WAL while turns go on writing; `maintain` runs
        as one transaction under the write lock; the last, under the lock, copies the few
        frames written meanwhile, so the checkpoint is complete and the next write restarts
        the WAL from its beginning instead of growing it (a long WAL slows every read)."""
        try:
            if self.writer is not None:
                await _call(self.writer, _checkpoint)
            if self.maintain is not None:
                async with self.lock:
                    if self.writer is not None:
                        await _call(self.writer, transaction, self.maintain, ())
            async with self.lock:
                if self.writer is not None:
                    await _call(self.writer, _checkpoint)
                    self.checkpoints += 1
        except Exception:  # the next one catches up; SQLite stays consistent either way
            log.exception("background WAL checkpoint failed")
        finally:
            self._checkpoint = None

    async def wait_checkpoint(self) -> None:
        """Wait for a background checkpoint in progress, if any (tests, shutdown)."""
        if self._checkpoint is not None:
            await asyncio.shield(self._checkpoint)
