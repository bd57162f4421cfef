"""The retention job: forgetting messages and responses past their days (docs/forgetting.md).

`[retention] messages_days` / `responses_days` (0 = forever), overridden per agent by its
settings `retention_messages_days` / `retention_responses_days`. Every `interval_s` the job
walks the agents by pk, a page at a time, and for each one with a cutoff:

- empties its messages written before the cutoff, `batch` per transaction, through the same
  store call as `POST .../forget` (text, index row, vector, covering summary), audited as
  kind `retention`;
- deletes its stored Responses API responses created before the cutoff.

Durable without a queue: what is left to do is the data itself (`messages.forgotten_at IS
NULL`, found by the `messages_retention` index), so a process killed mid-pass simply finds
the rest on its next pass, and several processes running it at once only repeat reads (a
message already forgotten is skipped inside the transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..config import RetentionSettings
from ..core.forgetting import cutoff, retention_days
from ..store.forget_types import RETENTION, ForgetStore, Removed

log = logging.getLogger("memproxy.retention")
AGENT_PAGE = 200
ACTOR = "retention"


async def retention_pass(store: ForgetStore, settings: RetentionSettings,
                         now: float | None = None) -> Removed:
    """One pass over every agent; what it removed, in total."""
    now = time.time() if now is None else now
    total, after = Removed(), 0
    while True:
        agents = await store.retention_agents(after, AGENT_PAGE)
        if not agents:
            return total
        for pk, tenant, agent_id, agent_settings in agents:
            before = cutoff(now, retention_days(settings.messages_days, agent_settings,
                                                "messages"))
            while before is not None:
                keys = await store.expired_messages(pk, before, settings.batch)
                if not keys:
                    break
                removed = await store.forget(tenant, agent_id, pk, keys, [], actor=ACTOR,
                                             kind=RETENTION)
                total.add(removed)
                if len(keys) < settings.batch:
                    break
                await asyncio.sleep(0)  # let turns in between batches
            before = cutoff(now, retention_days(settings.responses_days, agent_settings,
                                                "responses"))
            if before is not None:
                total.responses += await store.expire_agent_responses(tenant, agent_id, before)
        after = agents[-1][0]


class Retention:
    """The job's task in this process; `aclose` stops it between two transactions."""

    def __init__(self, store: ForgetStore, settings: RetentionSettings) -> None:
        self.store, self.settings = store, settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def _run(self) -> None:
        while True:
            try:
                removed = await retention_pass(self.store, self.settings)
                if not removed.empty:
                    log.info("retention: forgot %d messages, deleted %d responses",
                             removed.messages, removed.responses)
            except Exception:
                log.exception("retention pass failed; retried next interval")
            await asyncio.sleep(self.settings.interval_s)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
