"""Background responses (`background: true`): answered by a task of this process.

The response is stored as `queued` before the request returns, then `in_progress`, then its
outcome; a client polls `GET /v1/responses/{id}` (from any process sharing the database) and
may cancel it with `POST /v1/responses/{id}/cancel` (on the process running it, or on another
one, which marks it cancelled so that the runner does not overwrite it). A process that stops
marks what it was running `failed` rather than leaving it `in_progress` forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ...errors import ProxyError

log = logging.getLogger("memproxy.responses")

Work = Callable[[], Awaitable[dict[str, Any]]]
OnError = Callable[[BaseException], Awaitable[dict[str, Any]]]
Store = Callable[[dict[str, Any]], Awaitable[None]]


def interrupted() -> ProxyError:
    """The process stopped while the response ran."""
    return ProxyError(503, "the server stopped while this background response ran;"
                      " create it again", code="server_shutting_down")


class BackgroundResponses:
    """The background responses this process is running, by (tenant, response id)."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def running(self, tenant: str, response_id: str) -> bool:
        return (tenant, response_id) in self._tasks

    def start(self, tenant: str, response_id: str, work: Work, on_error: OnError,
              store: Store) -> None:
        key = (tenant, response_id)

        async def run() -> None:
            try:
                response = await work()
            except asyncio.CancelledError:
                if key in self._tasks:  # not a client's cancel: the process is stopping
                    with anyio.CancelScope(shield=True):
                        await _store_quietly(store, await on_error(interrupted()))
                raise
            except Exception as exc:
                response = await on_error(exc)
            if key in self._tasks:  # a cancel that came too late to stop the work wins
                await _store_quietly(store, response)
            self._tasks.pop(key, None)

        self._tasks[key] = asyncio.create_task(run(), name=f"response {response_id}")

    def cancel(self, tenant: str, response_id: str) -> bool:
        """Stop a response running here; False if this process is not running it."""
        task = self._tasks.pop((tenant, response_id), None)
        if task is None:
            return False
        task.cancel()
        return True

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


async def _store_quietly(store: Store, response: dict[str, Any]) -> None:
    try:
        await store(response)
    except Exception:
        log.exception("could not store background response %s", response.get("id"))
