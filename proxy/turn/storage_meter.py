"""`[limits] storage_mb_per_tenant`: what each tenant stores, measured in the background.

Bytes cannot be counted in the write transaction without a per-tenant counter updated by every
write of every message (the turn's hot path). So a task measures each tenant's stored bytes
(messages, passages, blocks: `store.storage_by_tenant`, one grouped scan) every
`[limits] storage_check_s`, and a turn or a passage insert is refused with `403
quota_exceeded` once its tenant's last measurement is at or over the quota: no round trip on
the turn's path. A tenant can go over by what it writes within one interval; a turn that starts
under the quota finishes. Off (no task, no scan) when the quota is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from ..errors import quota_exceeded

log = logging.getLogger("memproxy.quotas")
MB = 1024 * 1024


class StorageSource(Protocol):
    async def storage_by_tenant(self) -> dict[str, int]: ...


class StorageMeter:
    def __init__(self, store: StorageSource, quota_mb: int, interval_s: float) -> None:
        self.store, self.quota_mb, self.interval_s = store, quota_mb, interval_s
        self.measured: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.quota_mb:
            await self.refresh()  # a restart must not forget who is over
            self._task = asyncio.create_task(self._run(), name="storage meter")

    async def refresh(self) -> None:
        self.measured = await self.store.storage_by_tenant()

    def check(self, tenant: str) -> None:
        """Raise 403 quota_exceeded when the tenant's last measurement is over the quota."""
        if self.quota_mb and self.measured.get(tenant, 0) >= self.quota_mb * MB:
            raise quota_exceeded("storage_mb_per_tenant", self.quota_mb)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("could not measure storage per tenant; retried next interval")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
