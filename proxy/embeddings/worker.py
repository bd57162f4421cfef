"""Background embedding: passages and messages get vectors off the response path.

One asyncio task per process. It finds rows that lack a vector for the configured model by
asking the store (`pending_texts`), not by being handed texts, so nothing is lost when the
process stops, when another process wrote the rows, or when embeddings are switched on for an
existing database: the database is the queue, the in-memory deque (at most
`[embeddings] max_queue` texts) only a window onto it.

- A cursor per kind (passage, message) moves forward over primary keys, so after the first
  pass each wake-up reads only new rows. `notify()` (after a turn is stored, after a passage
  is inserted) wakes the task at once; otherwise it looks every SWEEP_INTERVAL_S for rows other
  processes wrote, and rescans from the start every FULL_SWEEP_INTERVAL_S (a Postgres row can
  commit after rows with higher keys) and at start-up (the catch-up).
- Texts go to the endpoint in batches of `[embeddings] batch_size`. A failed batch is logged
  (status and error code only: never text, never keys), counted, and retried after a backoff
  (1 s doubling to 60 s); its rows are still pending in the database. A batch the endpoint
  rejects as bad input is split in halves until the offending text is alone; that text is
  skipped until the process restarts.
- Several processes sharing a database may embed the same new row twice; the second write is
  ignored (one vector per row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from ..store.vector_base import KINDS, PendingText, VectorStore
from .client import EmbeddingError

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 30.0
FULL_SWEEP_INTERVAL_S = 300.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` failed attempts in a row (1, 2, 4, ... 60)."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, failures - 1))


class EmbeddingWorker:
    """Embeds pending rows of a `VectorStore` with `embed(texts) -> matrix`."""

    def __init__(self, store: VectorStore, embed: Callable[[Sequence[str]], Awaitable[np.ndarray]],
                 model: str, *, batch_size: int = 64, max_queue: int = 10_000,
                 metrics: Any | None = None, context_turns: int = 0,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.embed = embed
        self.model = model
        self.batch_size = batch_size
        self.max_queue = max(max_queue, batch_size)
        self.metrics = metrics
        self.context_turns = context_turns  # messages embedded with their earlier turns
        self.sleep = sleep
        self.clock = clock
        self.cursors = {kind: 0 for kind in KINDS}
        self.embedded = 0
        self.failures = 0
        self.skipped: set[tuple[str, int]] = set()
        self._queue: deque[PendingText] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="memproxy-embeddings")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self, agent_pk: int | None = None) -> None:
        """New rows may be waiting (a turn was stored, a passage inserted): look now."""
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        last_full = self.clock()
        while True:
            self._wake.clear()
            try:
                await self.drain()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged and retried; never fatal
                failures += 1
                self._failed(exc)
                await self.sleep(backoff(failures))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SWEEP_INTERVAL_S)
            if self.clock() - last_full >= FULL_SWEEP_INTERVAL_S:
                self.cursors = {kind: 0 for kind in KINDS}
                last_full = self.clock()

    def _failed(self, exc: BaseException) -> None:
        """Log and count a failure; rewind so the unembedded rows are read again."""
        self.failures += 1
        if self.metrics is not None:
            self.metrics.embedding_failures.labels("background").inc()
        if isinstance(exc, EmbeddingError):
            log.warning("background embedding failed (%s, HTTP %s); will retry", exc.code,
                        exc.status)
        else:
            log.warning("background embedding failed (%s); will retry", type(exc).__name__)
        for kind in KINDS:
            pks = [item.pk for item in self._queue if item.kind == kind]
            if pks:
                self.cursors[kind] = min(self.cursors[kind], min(pks) - 1)
        self._queue.clear()
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.embedding_queue.set(len(self._queue))

    async def drain(self) -> int:
        """Embed everything pending now; returns how many texts were embedded. Raises on a
        failure, with the failed batch back at the head of the queue."""
        done = 0
        while True:
            if not self._queue:
                await self._refill()
                if not self._queue:
                    return done
            batch = [self._queue.popleft()
                     for _ in range(min(self.batch_size, len(self._queue)))]
            self._gauge()
            try:
                done += await self._embed(batch)
            except BaseException:
                self._queue.extendleft(reversed(batch))
                self._gauge()
                raise

    async def _refill(self) -> None:
        """Read pending rows from each kind's cursor until the deque is full or every kind's
        scan reached its table's end."""
        for kind in KINDS:
            while len(self._queue) < self.max_queue:
                page = await self.store.pending_texts(kind, self.model, self.cursors[kind],
                                                      self.max_queue - len(self._queue),
                                                      self.context_turns)
                self.cursors[kind] = page.cursor
                self._queue.extend(i for i in page.items if (i.kind, i.pk) not in self.skipped)
                if page.done:
                    break
        self._gauge()

    async def _embed(self, batch: list[PendingText]) -> int:
        try:
            matrix = await self.embed([item.text for item in batch])
        except EmbeddingError as exc:
            if not exc.bad_input:
                raise
            if len(batch) > 1:  # find the text the endpoint refuses
                half = len(batch) // 2
                return await self._embed(batch[:half]) + await self._embed(batch[half:])
            self.skipped.add((batch[0].kind, batch[0].pk))
            self.failures += 1
            if self.metrics is not None:
                self.metrics.embedding_failures.labels("background").inc()
            log.warning("the embeddings endpoint refused one %s (%s, HTTP %s); skipped",
                        batch[0].kind, exc.code, exc.status)
            return 0
        if matrix.shape[0] != len(batch):
            raise EmbeddingError("the endpoint returned the wrong number of vectors",
                                 code="bad_response")
        for kind in KINDS:
            rows = [(item.pk, matrix[i]) for i, item in enumerate(batch) if item.kind == kind]
            if rows:
                await self.store.put_vectors(kind, self.model, rows)
                if self.metrics is not None:
                    self.metrics.embedded.labels(kind).inc(len(rows))
        self.embedded += len(batch)
        return len(batch)
