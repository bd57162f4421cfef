"""Deleting stored responses past `[responses] ttl_days`, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ...store.base import ResponseStore

log = logging.getLogger("memproxy.responses")
SWEEP_EVERY_S = 3600.0


class Expiry:
    """A task sweeping expired responses hourly (none when responses never expire)."""

    def __init__(self, task: asyncio.Task[None] | None) -> None:
        self._task = task

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def expire_responses_every(store: ResponseStore, ttl_days: float,
                           interval_s: float = SWEEP_EVERY_S) -> Expiry:
    if not ttl_days:
        return Expiry(None)

    async def sweep() -> None:
        while True:
            try:
                removed = await store.expire_responses(time.time())
                if removed:
                    log.info("deleted %d expired responses", removed)
            except Exception:
                log.exception("could not delete expired responses")
            await asyncio.sleep(interval_s)

    return Expiry(asyncio.create_task(sweep(), name="responses expiry"))
