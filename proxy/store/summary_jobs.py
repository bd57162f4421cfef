"""The durable queue of background summaries: its data types and the store role that keeps it
(migration 10, docs/paging.md).

A turn that pages messages out writes, in the same transaction as the eviction, a job to
summarize them (`SummaryWork`); a worker in any process claims the job with a lease
(`SummaryJob`), asks the summarizer, and completes it. One row per conversation, so a
conversation's summaries are written one at a time and in order; a later eviction while the
job waits only extends its range. Times are the claiming process's `time.time()`: the
processes sharing one database are expected to keep their clocks in step (as NTP does); a
skew only delays or hastens a retry or a lease's expiry by that much.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


@dataclass(frozen=True)
class SummaryWork:
    """What an eviction asks to be summarized later: the evicted messages from `from_seq` on
    (to the eviction's `through_seq`), folded into `base_summary`, as `model` on a
    `context_window`-token window would."""

    from_seq: int
    base_summary: str
    model: str
    context_window: int


@dataclass(frozen=True)
class SummaryJob:
    """A claimed job: the messages `from_seq`..`through_seq` to fold into `base_summary`;
    `pending_summary` is what the conversation shows until the job is done."""

    conversation_pk: int
    from_seq: int
    through_seq: int
    base_summary: str
    pending_summary: str
    model: str
    context_window: int
    attempts: int  # this claim included
    owner: str
    last_error: str | None = None


class Completion(Enum):
    DONE = "done"  # the summary replaced the pending one; the job is gone
    MORE = "more"  # more was evicted meanwhile: the job goes on from the new summary
    LOST = "lost"  # the lease was lost (another process took the job): nothing written


class SummaryChanged(Exception):
    """An eviction found the conversation's summary changed since the turn read it (a
    background summary completed in between): nothing was written; page out again from
    `current`."""

    def __init__(self, current: str) -> None:
        super().__init__("the conversation's summary changed")
        self.current = current


class SummaryJobStore(Protocol):
    """The queue's store role (both backends; `evict_messages(..., job=...)` enqueues)."""

    async def claim_summary_job(self, owner: str, lease_s: float, now: float
                                ) -> SummaryJob | None:
        """Lease the due job waiting longest (not leased, or its lease ran out), counting
        the attempt; None when no job is due."""

    async def complete_summary_job(self, job: SummaryJob, summary: str, now: float
                                   ) -> Completion:
        """Store the job's summary atomically: as the conversation's summary if it still
        shows the job's pending one, on the message `through_seq`, and remove the job — or,
        when more was evicted meanwhile, keep the job with `summary` as its base."""

    async def fail_summary_job(self, job: SummaryJob, error: str, retry_at: float) -> None:
        """Give the lease back with the job due again at `retry_at`."""

    async def release_summary_job(self, job: SummaryJob) -> None:
        """Give the lease back, due at once (a shutdown mid-job); the attempt is not counted."""

    async def get_summary_job(self, conversation_pk: int) -> SummaryJob | None:
        """The conversation's job, claimed or not (owner '' when not): reports and tests."""


# The columns a job row is read back as (`SummaryJob` in order), on both backends.
JOB_COLUMNS = ("conversation_pk, from_seq, through_seq, base_summary, pending_summary, model,"
               " context_window, attempts, coalesce(owner, ''), last_error")


def enqueue_sql(values: str, same: str, larger: str) -> str:
    """The upsert of a conversation's job, in a backend's dialect: `values` the VALUES list
    (conversation_pk, from_seq, through_seq, base_summary, pending_summary, model,
    context_window, now, now), `same` the test that the stored job is for the path the
    conversation still shows (its pending summary is the one expected), `larger` the SQL
    function of two values' maximum (SQLite `max`, Postgres `greatest`).

    Same path: the job's range grows, its claim, attempts and wait are kept. Another path
    (the user moved to another branch since): the job starts over from this eviction and
    this path's summary; the old branch keeps its gap note, and a worker still writing the
    old job loses it (its owner is cleared)."""
    return (
        "INSERT INTO summary_jobs (conversation_pk, from_seq, through_seq, base_summary,"
        " pending_summary, model, context_window, not_before, created_at)"
        f" VALUES ({values})"
        " ON CONFLICT (conversation_pk) DO UPDATE SET"
        f" from_seq = CASE WHEN {same} THEN summary_jobs.from_seq ELSE excluded.from_seq END,"
        f" base_summary = CASE WHEN {same} THEN summary_jobs.base_summary"
        " ELSE excluded.base_summary END,"
        f" through_seq = CASE WHEN {same}"
        f" THEN {larger}(summary_jobs.through_seq, excluded.through_seq)"
        " ELSE excluded.through_seq END,"
        f" owner = CASE WHEN {same} THEN summary_jobs.owner END,"
        f" lease_until = CASE WHEN {same} THEN summary_jobs.lease_until END,"
        f" attempts = CASE WHEN {same} THEN summary_jobs.attempts ELSE 0 END,"
        f" not_before = CASE WHEN {same} THEN summary_jobs.not_before"
        " ELSE excluded.not_before END,"
        " model = excluded.model, context_window = excluded.context_window,"
        " pending_summary = excluded.pending_summary"
    )
