"""One turn at a time per conversation (DESIGN §5), within this process and across processes.

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
import errno
import fcntl
import logging
import math
import os
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Protocol

from .errors import ProxyError

log = logging.getLogger("memproxy.locks")

POLL_START_S = 0.02
POLL_MAX_S = 0.25


class LeaseStore(Protocol):
    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool: ...

    async def release_lease(self, conversation_pk: int, owner: str) -> None: ...


_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)  # Linux >= 3.15
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux: type, whence, start, len, pid


class FileLeases:
    """Leases as open-file-description locks: byte `conversation_pk` of `path`, exclusive.

    An OFD lock belongs to the open file, not to the process, so each instance (it opens the
    file once) excludes every other instance — in another process or in this one — and the
    kernel releases the instance's locks when its file is closed or its process dies. Nothing
    expires, so nothing needs renewing (`expires = False`); `owner` and `ttl_s` are ignored.
    """

    expires = False

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @staticmethod
    def supported() -> bool:
        return _OFD_SETLK is not None

    def _lock(self, conversation_pk: int, kind: int) -> bool:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        request = _FLOCK.pack(kind, os.SEEK_SET, conversation_pk, 1, 0)
        try:
            fcntl.fcntl(self._fd, _OFD_SETLK, request)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool:
        return self._lock(conversation_pk, fcntl.F_WRLCK)

    async def release_lease(self, conversation_pk: int, owner: str) -> None:
        self._lock(conversation_pk, fcntl.F_UNLCK)

    def close(self) -> None:
        """Close the file, which releases every lock this instance holds."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
    async def hold(self, key: int, timeout: float) -> AsyncIterator[None]:
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
                    yield
                else:
                    async with self._lease(key, deadline, timeout):
                        yield
            finally:
                lock.release()
        finally:
            lock_now, count = self._locks[key]
            if count <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, count - 1)

    @asynccontextmanager
    async def _lease(self, key: int, deadline: float, timeout: float) -> AsyncIterator[None]:
        assert self.store is not None
        delay = POLL_START_S
        while not await self.store.acquire_lease(key, self.owner, self.lease_ttl_s):
            if time.monotonic() + delay > deadline:
                raise busy_error(timeout)
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)
        renewer = (asyncio.create_task(self._renew(key))
                   if getattr(self.store, "expires", True) else None)
        try:
            yield
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
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
