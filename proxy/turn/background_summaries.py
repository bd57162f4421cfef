"""Summaries of paged-out messages written in the background (docs/paging.md,
`[memory] summaries = "background"`): no user waits for a summarizer call.

A turn whose prompt is over `compact_at` pages out at once (`page_out`): the evicted messages
leave the context, the conversation's summary becomes the previous one plus a gap note ("N
earlier messages were moved out of context without a summary (their summary is being
written); use conversation_search"), and a job to write the real summary is queued — all in
the eviction's own transaction, so a page-out is never without its job. The workers of any
process claim jobs from the database with a lease (store/summary_jobs.py), one job per
conversation, so its summaries are written one at a time and in order; the next turn shows
the summary if it is ready, the gap note if not.

Why nothing is lost: the evicted messages stay in the database (recall memory, searchable)
whatever happens; the job survives a process killed mid-summary (its lease runs out and
another process, or the restarted one, claims it again); a failed summarizer is retried with
exponential backoff and meanwhile the gap note stays; and a completed summary replaces the
conversation's only while it still shows the job's gap note (a path moved to another branch
meanwhile keeps its own).

API keys are never stored: a job runs with the key of its conversation's latest turn in this
process, else with none (the upstream's configured key). A job claimed after a restart while
the upstream needs the client's own key fails and is retried; the conversation's next turn
brings the key back and wakes the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..config import MemorySettings
from ..core.loop import Upstream
from ..core.summary import pending_note
from ..core.types import Conversation, StoredMessage
from ..obs.metrics import Metrics
from ..store.summary_jobs import Completion, SummaryChanged, SummaryJob, SummaryWork
from .summarizer import Summarizer, max_summary_chars

log = logging.getLogger("memproxy.compaction")

RETRY_BASE_S = 5.0  # the first retry of a failed summary; doubled each time
SHUTDOWN_WAIT_S = 3.0  # how long shutdown waits for running summaries (then leaves them due)
PAGE = 500  # evicted messages read per store call
KEYS_KEPT = 10_000  # conversations whose latest API key is kept in memory


def backoff(attempts: int, max_s: float) -> float:
    """Seconds before retrying a job that failed `attempts` times."""
    return min(max_s, RETRY_BASE_S * 2 ** max(0, attempts - 1))


def transcript(messages: list[StoredMessage]) -> list[dict[str, Any]]:
    """Messages as the summarizer reads them (their dates included)."""
    return [{**m.data, "_created_at": m.created_at} for m in messages]


@dataclass
class SummaryQueue:
    """Both ends of the queue for one app: the turns' page-outs and this process's workers."""

    store: Any  # TurnStore + SummaryJobStore (the whole Store, or the test double)
    upstream: Upstream
    settings: MemorySettings
    metrics: Metrics | None = None
    owner: str = field(default_factory=lambda: (
        f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"))
    completed: int = 0  # jobs this process finished (a summary written)
    failed: int = 0  # summarizer attempts that failed (each retried later)
    _keys: dict[int, str | None] = field(default_factory=dict, repr=False)
    _wake: asyncio.Event | None = field(default=None, repr=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)
    _closing: bool = field(default=False, repr=False)

    # --- the turn's side ---------------------------------------------------------------------
    async def page_out(self, conversation: Conversation, evicted: list[StoredMessage], *,
                       window: int, model: str, api_key: str | None) -> str:
        """Evict `evicted` (the oldest in-context messages) and queue their summary; returns
        the summary the prompt shows now: the previous one with the gap note."""
        messages = transcript(evicted)
        max_chars = max_summary_chars(window) * 2
        shown = conversation.summary
        self.remember_key(conversation.pk, api_key)  # before a worker can claim the job
        for _ in range(3):
            pending = pending_note(shown, messages, max_chars=max_chars)
            work = SummaryWork(evicted[0].seq, shown, model, window)
            try:
                await self.store.evict_messages(conversation.pk, evicted[-1].seq, pending,
                                                job=work, expected=shown)
                break
            except SummaryChanged as changed:  # a summary was written since the turn read
                shown = changed.current
        else:  # cannot happen twice in a row (a completion needs a job, and none is left)
            raise RuntimeError("the conversation's summary kept changing during a page-out")
        self.kick()
        return pending

    def remember_key(self, conversation_pk: int, api_key: str | None) -> None:
        if len(self._keys) >= KEYS_KEPT and conversation_pk not in self._keys:
            self._keys.pop(next(iter(self._keys)))
        self._keys[conversation_pk] = api_key

    def kick(self) -> None:
        """A job may be due: wake the workers now rather than at their next poll."""
        if self._wake is not None:
            self._wake.set()

    # --- the workers --------------------------------------------------------------------------
    async def start(self) -> None:
        """Start this process's workers (the app's lifespan). They also take the jobs other
        processes left: due retries, and jobs whose owner died."""
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks = [asyncio.create_task(self._work(), name=f"summary-worker-{i}")
                       for i in range(self.settings.summary_workers)]

    async def aclose(self, wait_s: float = SHUTDOWN_WAIT_S) -> None:
        """Stop claiming; give running summaries `wait_s` to finish, then stop them and hand
        their jobs back to the queue, due at once (another process, or this one restarted,
        writes them)."""
        self._closing = True
        self.kick()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=wait_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def run_due(self) -> int:
        """Claim and run every due job now, one after the other; returns how many ran
        (tests, and a process without workers)."""
        ran = 0
        while (job := await self._claim()) is not None:
            await self._run(job)
            ran += 1
        return ran

    async def _claim(self) -> SummaryJob | None:
        return await self.store.claim_summary_job(self.owner, self.settings.summary_lease_s,
                                                  time.time())

    async def _work(self) -> None:
        assert self._wake is not None
        while not self._closing:
            self._wake.clear()
            try:
                job = await self._claim()
            except Exception:
                log.exception("could not claim a summary job; retrying")
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.summary_poll_s)
                continue
            try:
                await self._run(job)
            except asyncio.CancelledError:  # shutdown: due again at once, for any process
                with contextlib.suppress(Exception):
                    await self.store.release_summary_job(job)
                raise
            except Exception:  # the store failed: the lease runs out, the job is retried
                log.exception("summary job of conversation %s failed in the store",
                              job.conversation_pk)

    async def _run(self, job: SummaryJob) -> None:
        """Write one job's summary, or schedule its retry."""
        summarizer = Summarizer(self.upstream, self.settings,
                                self._keys.get(job.conversation_pk))
        try:
            messages = await self._evicted(job)
            summary = await summarizer.fold(job.base_summary, messages,
                                            window=job.context_window, model=job.model)
        except Exception as exc:
            self.failed += 1
            self._count("failed")
            delay = backoff(job.attempts, self.settings.summary_retry_max_s)
            log.warning("summary of conversation %s failed (%s, attempt %d); the gap note stays"
                        " and the messages stay searchable; retrying in %.0f s",
                        job.conversation_pk, type(exc).__name__, job.attempts, delay)
            await self.store.fail_summary_job(job, f"{type(exc).__name__}: {exc}"[:500],
                                              time.time() + delay)
            return
        outcome = await self.store.complete_summary_job(job, summary, time.time())
        if outcome is Completion.MORE:
            self.kick()  # more was paged out meanwhile: fold it in next
        if outcome is not Completion.LOST:
            self.completed += 1
        self._count(outcome.value)
        log.info("summary of conversation %s: %s (%d messages)", job.conversation_pk,
                 outcome.value, len(messages))

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.background_summaries.labels(outcome).inc()

    async def _evicted(self, job: SummaryJob) -> list[dict[str, Any]]:
        """The job's messages: those from `from_seq` to `through_seq` that are out of context
        (not superseded), oldest first, read a page at a time."""
        rows: list[StoredMessage] = []
        after = job.from_seq - 1
        while after < job.through_seq:
            page = await self.store.list_messages(job.conversation_pk, after_seq=after,
                                                  limit=PAGE)
            if not page:
                break
            rows += [m for m in page if m.seq <= job.through_seq and not m.in_context]
            after = page[-1].seq
        return transcript(rows)
