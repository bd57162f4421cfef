"""The background summary queue in Postgres (`SummaryJobStore`, store/summary_jobs.py), with
the same semantics as `sqlite/summary_jobs.py`; the contract tests run both.

A mixin of `PostgresStore` (its pool and `_transaction`). A claim is one statement: the due
row is locked `FOR UPDATE SKIP LOCKED`, so processes claiming at once take different jobs
and never wait on each other. A completion locks the job row first, so an eviction that
extends the job meanwhile (`evict_messages`, which upserts the same row) is seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..summary_jobs import (
    JOB_COLUMNS,
    Completion,
    SummaryChanged,
    SummaryJob,
    SummaryWork,
    enqueue_sql,
)
from .sql import EVICT, clean

if TYPE_CHECKING:
    import asyncpg

# The job's upsert (store/summary_jobs.py); $9 the expected pending summary (NULL-safe).
_ENQUEUE = enqueue_sql("$1, $2, $3, $4, $5, $6, $7, $8, $8",
                       "summary_jobs.pending_summary IS NOT DISTINCT FROM $9", "greatest")
# Every transaction that writes both a conversation's messages and its job locks the
# conversation row first, so they take their locks in one order.
_LOCK_CONVERSATION = (
    "SELECT c.summary, EXISTS (SELECT 1 FROM summary_jobs j WHERE j.conversation_pk = c.pk)"
    " FROM conversations c WHERE c.pk = $1 FOR UPDATE OF c"
)
_CLAIM = (
    "UPDATE summary_jobs SET owner = $1, lease_until = $2 + $3, attempts = attempts + 1"
    " WHERE conversation_pk = (SELECT conversation_pk FROM summary_jobs WHERE not_before <= $2"
    " AND (lease_until IS NULL OR lease_until < $2) ORDER BY not_before LIMIT 1"
    f" FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLUMNS}"
)


def _job(row: Any) -> SummaryJob:
    return SummaryJob(*row)


class PostgresSummaryJobs:
    pool: asyncpg.Pool
    _transaction: Callable[[], Any]  # PostgresStore's: a connection inside a transaction

    async def evict_messages(self, conversation_pk: int, through_seq: int, summary: str, *,
                             job: SummaryWork | None = None, expected: str | None = None
                             ) -> int:
        """Page out: take messages with seq <= through_seq out of the context window and store
        the new summary, as the conversation's and on the row through_seq (the summary of the
        path through it), atomically (one statement). Returns rows evicted.

        With `job`, `summary` is the pending one and the job is queued in the same
        transaction; `SummaryChanged` when the conversation has no job and no longer shows
        `expected` (see the SQLite store)."""
        summary = clean(summary)
        if job is None:
            return await self.pool.fetchval(EVICT, conversation_pk, through_seq, summary)
        async with self._transaction() as conn:
            # The conversation row first, as a completion takes it (`_LOCK_CONVERSATION`): the
            # two transactions then queue instead of deadlocking (this one on messages, then
            # the job row; a completion on the job row, then a message).
            locked = await conn.fetchrow(_LOCK_CONVERSATION, conversation_pk)
            current, has_job = locked if locked is not None else (None, False)
            if expected is not None and not has_job:
                if current is not None and current != clean(expected):
                    raise SummaryChanged(current)
            n = await conn.fetchval(EVICT, conversation_pk, through_seq, summary)
            await conn.execute(_ENQUEUE, conversation_pk, job.from_seq, through_seq,
                               clean(job.base_summary), summary, job.model,
                               job.context_window, time.time(),
                               None if expected is None else clean(expected))
            return n

    async def claim_summary_job(self, owner: str, lease_s: float, now: float
                                ) -> SummaryJob | None:
        row = await self.pool.fetchrow(_CLAIM, owner, now, float(lease_s))
        return None if row is None else _job(row)

    async def complete_summary_job(self, job: SummaryJob, summary: str, now: float
                                   ) -> Completion:
        summary = clean(summary)
        async with self._transaction() as conn:
            await conn.fetchrow(_LOCK_CONVERSATION, job.conversation_pk)  # lock order: see evict
            row = await conn.fetchrow(
                "SELECT through_seq, pending_summary FROM summary_jobs"
                " WHERE conversation_pk = $1 AND owner = $2 FOR UPDATE",
                job.conversation_pk, job.owner)
            if row is None:
                return Completion.LOST
            await conn.execute("UPDATE messages SET summary = $1 WHERE conversation_pk = $2"
                               " AND seq = $3", summary, job.conversation_pk, job.through_seq)
            if row["through_seq"] != job.through_seq:
                await conn.execute(
                    "UPDATE summary_jobs SET base_summary = $1, from_seq = $2, owner = NULL,"
                    " lease_until = NULL, attempts = 0, not_before = $3, last_error = NULL"
                    " WHERE conversation_pk = $4",
                    summary, job.through_seq + 1, now, job.conversation_pk)
                return Completion.MORE
            await conn.execute("UPDATE conversations SET summary = $1 WHERE pk = $2"
                               " AND summary = $3", summary, job.conversation_pk,
                               row["pending_summary"])
            await conn.execute("DELETE FROM summary_jobs WHERE conversation_pk = $1",
                               job.conversation_pk)
            return Completion.DONE

    async def fail_summary_job(self, job: SummaryJob, error: str, retry_at: float) -> None:
        await self.pool.execute(
            "UPDATE summary_jobs SET owner = NULL, lease_until = NULL, not_before = $1,"
            " last_error = $2 WHERE conversation_pk = $3 AND owner = $4",
            retry_at, clean(error[:500]), job.conversation_pk, job.owner)

    async def release_summary_job(self, job: SummaryJob) -> None:
        await self.pool.execute(
            "UPDATE summary_jobs SET owner = NULL, lease_until = NULL,"
            " attempts = greatest(0, attempts - 1) WHERE conversation_pk = $1 AND owner = $2",
            job.conversation_pk, job.owner)

    async def get_summary_job(self, conversation_pk: int) -> SummaryJob | None:
        row = await self.pool.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM summary_jobs WHERE conversation_pk = $1", conversation_pk)
        return None if row is None else _job(row)

