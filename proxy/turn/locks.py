"""One turn at a time per conversation
(docs/design.md §5), within this process and across processes.

Two layers: an in-process `asyncio.Lock` per conversation (cheap, FIFO, no polling), then a
lease for other processes sharing the database — several `--workers`, the CLI beside a server,
or several machines on one Postgres:

- on Postgres (and SQLite where the OS lacks them, below), a lease row (owner, expiry),
  renewed while the turn runs, that expires by itself if the process dies, so a crashed holder
  never blocks a conversation for longer than `lease_ttl_s`;
- on SQLite on Linux, an open-file-description lock on byte `conversation_pk` of a sidecar
  file next to the database (`FileLeases`): one system call instead of two write transactions
  per turn, and the kernel drops it the moment its process dies, so there is nothing to renew
  and nothing to wait out.

A waiting request queues for up to `lock_timeout_s`, then gets 409 with `Retry-After`. Locks are
reference-counted so the table does not grow with the number of conversations ever seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import TypeVar

from ..errors import ProxyError
from ..store.leases import LeaseBusy, LeaseClaim, LeaseStore

log = logging.getLogger("memproxy.locks")

T = TypeVar("T")
# A turn's first read under its conversation's lock, given the lease to take with it (or None)
FirstRead = Callable[[LeaseClaim | None], Awaitable[T]]

POLL_START_S = 0.02
POLL_MAX_S = 0.25


def busy_error(timeout: float) -> ProxyError:
    return ProxyError(
        409,
        "another request is still being answered in this conversation; retry shortly",
        type="invalid_request_error",
        code="conversation_busy",
        headers={"Retry-After": str(max(1, math.ceil(timeout / 4)))},
    )


class ConversationLocks:
    def __init__(self, store: LeaseStore | None = None, lease_ttl_s: float = 30.0) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}
        self.store = store
        self.lease_ttl_s = lease_ttl_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def busy(self, key: Hashable) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    @asynccontextmanager
    async def hold(self, key: int, timeout: float,
                   first: FirstRead[T] | None = None) -> AsyncIterator[T | None]:
        """Hold conversation `key`; yields `first`'s result (None without `first`).

        `first` is the turn's first read under the lock: it gets a LeaseClaim when the
        lease store takes leases in reads (Postgres: one round trip for both), else None
        once the lease is held. Its errors end the hold (the lease is released)."""
        deadline = time.monotonic() + timeout
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            if users:  # held or awaited by another request of this process
                try:
                    await asyncio.wait_for(lock.acquire(), timeout)
                except TimeoutError:
                    raise busy_error(timeout) from None
            else:  # a new lock: taken at once (wait_for would cost a task and a loop pass)
                await lock.acquire()
            try:
                if self.store is None:
                    yield None if first is None else await first(None)
                else:
                    async with self._lease(key, deadline, timeout, first) as result:
                        yield result
            finally:
                lock.release()
        finally:
            lock_now, count = self._locks[key]
            if count <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, count - 1)

    @asynccontextmanager
    async def _lease(self, key: int, deadline: float, timeout: float,
                     first: FirstRead[T] | None) -> AsyncIterator[T | None]:
        assert self.store is not None
        result = await self._take(key, deadline, timeout, first)
        renewer = (asyncio.create_task(self._renew(key))
                   if getattr(self.store, "expires", True) else None)
        try:
            yield result
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            await self._release(key)

    async def _take(self, key: int, deadline: float, timeout: float,
                    first: FirstRead[T] | None) -> T | None:
        """Poll for the lease until `deadline`; then `first`'s result. With a store that
        takes leases in reads, each attempt is `first` itself (LeaseBusy: not taken)."""
        assert self.store is not None
        in_read = first is not None and getattr(self.store, "leases_in_read", False)
        delay = POLL_START_S
        while True:
            try:
                if in_read:
                    assert first is not None
                    return await first(LeaseClaim(self.owner, self.lease_ttl_s))
                if await self.store.acquire_lease(key, self.owner, self.lease_ttl_s):
                    break
            except LeaseBusy:
                pass
            except BaseException:  # the read failed, maybe after taking the lease
                await self._release(key)
                raise
            if time.monotonic() + delay > deadline:
                raise busy_error(timeout)
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)
        if first is None:
            return None
        try:
            return await first(None)
        except BaseException:
            await self._release(key)
            raise

    async def _release(self, key: int) -> None:
        assert self.store is not None
        try:
            await self.store.release_lease(key, self.owner)
        except Exception:  # it expires by itself; the turn's outcome matters more
            log.exception("could not release the lease of conversation %s", key)

    async def _renew(self, key: int) -> None:
        assert self.store is not None
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            try:
                if not await self.store.acquire_lease(key, self.owner, self.lease_ttl_s):
                    log.error("lost the lease of conversation %s to another process", key)
                    return
            except Exception:
                log.exception("could not renew the lease of conversation %s", key)
