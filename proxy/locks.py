"""One turn at a time per conversation (DESIGN §5), within this process.

A waiting request queues for up to `lock_timeout_s`, then gets 409 with `Retry-After`. Locks are
reference-counted so the table does not grow with the number of conversations ever seen.
(A database lease for several processes sharing one database builds on this.)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from .errors import ProxyError


class ConversationLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def busy(self, key: Hashable) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    @asynccontextmanager
    async def hold(self, key: Hashable, timeout: float) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            try:
                await asyncio.wait_for(lock.acquire(), timeout)
            except TimeoutError:
                raise ProxyError(
                    409,
                    "another request is still being answered in this conversation; retry"
                    " shortly",
                    type="invalid_request_error",
                    code="conversation_busy",
                    headers={"Retry-After": str(max(1, math.ceil(timeout / 4)))},
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock_now, count = self._locks[key]
            if count <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, count - 1)
