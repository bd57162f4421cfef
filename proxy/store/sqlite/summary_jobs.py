"""The background summary queue in SQLite (`SummaryJobStore`, store/summary_jobs.py): one
row per conversation in `summary_jobs` (migration 10), claimed with a lease.

A mixin of `SQLiteStore`: each method is one write transaction on the writer (BEGIN
IMMEDIATE, so processes sharing the file claim a job one at a time). `enqueue` runs inside the
eviction's own transaction (`SQLiteStore.evict_messages`), so a page-out and its job are
written together or not at all.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from ..summary_jobs import JOB_COLUMNS, Completion, SummaryJob, SummaryWork, enqueue_sql

if TYPE_CHECKING:
    from .lanes import SQLiteLanes

# The job's upsert (store/summary_jobs.py): same path when the pending summary is the expected one.
_ENQUEUE = enqueue_sql(
    ":pk, :from_seq, :through_seq, :base, :pending, :model, :window, :now, :now",
    "summary_jobs.pending_summary = :expected", "max")


def _job(row: tuple) -> SummaryJob:
    return SummaryJob(*row)


def enqueue(db: sqlite3.Connection, conversation_pk: int, through_seq: int, pending: str,
            work: SummaryWork, expected: str | None) -> None:
    """Add the evicted range to the conversation's job (created if it has none); `expected`
    is the summary the turn read (see `_ENQUEUE`)."""
    db.execute(_ENQUEUE, {"pk": conversation_pk, "from_seq": work.from_seq,
                          "through_seq": through_seq, "base": work.base_summary,
                          "pending": pending, "model": work.model,
                          "window": work.context_window, "now": time.time(),
                          "expected": expected})


def has_job(db: sqlite3.Connection, conversation_pk: int) -> bool:
    return db.execute("SELECT 1 FROM summary_jobs WHERE conversation_pk = ?",
                      (conversation_pk,)).fetchone() is not None


class SQLiteSummaryJobs:
    lanes: SQLiteLanes

    async def claim_summary_job(self, owner: str, lease_s: float, now: float
                                ) -> SummaryJob | None:
        def run(db: sqlite3.Connection) -> SummaryJob | None:
            row = db.execute(
                "SELECT conversation_pk FROM summary_jobs WHERE not_before <= ?"
                " AND (lease_until IS NULL OR lease_until < ?) ORDER BY not_before LIMIT 1",
                (now, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE summary_jobs SET owner = ?, lease_until = ?,"
                       " attempts = attempts + 1 WHERE conversation_pk = ?",
                       (owner, now + lease_s, row[0]))
            return _job(db.execute(f"SELECT {JOB_COLUMNS} FROM summary_jobs"
                                   " WHERE conversation_pk = ?", (row[0],)).fetchone())

        return await self.lanes.write_fast(run)

    async def complete_summary_job(self, job: SummaryJob, summary: str, now: float
                                   ) -> Completion:
        def run(db: sqlite3.Connection) -> Completion:
            row = db.execute("SELECT through_seq, pending_summary FROM summary_jobs"
                             " WHERE conversation_pk = ? AND owner = ?",
                             (job.conversation_pk, job.owner)).fetchone()
            if row is None:
                return Completion.LOST
            through_seq, pending = row
            # the path summary through the job's last message (tree.move_path falls back
            # to it), then the conversation's, unless its path moved meanwhile
            db.execute("UPDATE messages SET summary = ? WHERE conversation_pk = ? AND seq = ?",
                       (summary, job.conversation_pk, job.through_seq))
            if through_seq != job.through_seq:
                db.execute("UPDATE summary_jobs SET base_summary = ?, from_seq = ?,"
                           " owner = NULL, lease_until = NULL, attempts = 0, not_before = ?,"
                           " last_error = NULL WHERE conversation_pk = ?",
                           (summary, job.through_seq + 1, now, job.conversation_pk))
                return Completion.MORE
            db.execute("UPDATE conversations SET summary = ? WHERE pk = ? AND summary = ?",
                       (summary, job.conversation_pk, pending))
            db.execute("DELETE FROM summary_jobs WHERE conversation_pk = ?",
                       (job.conversation_pk,))
            return Completion.DONE

        return await self.lanes.write_fast(run)

    async def fail_summary_job(self, job: SummaryJob, error: str, retry_at: float) -> None:
        await self.lanes.write_fast(lambda db: db.execute(
            "UPDATE summary_jobs SET owner = NULL, lease_until = NULL, not_before = ?,"
            " last_error = ? WHERE conversation_pk = ? AND owner = ?",
            (retry_at, error[:500], job.conversation_pk, job.owner)))

    async def release_summary_job(self, job: SummaryJob) -> None:
        await self.lanes.write_fast(lambda db: db.execute(
            "UPDATE summary_jobs SET owner = NULL, lease_until = NULL,"
            " attempts = max(0, attempts - 1) WHERE conversation_pk = ? AND owner = ?",
            (job.conversation_pk, job.owner)))

    async def get_summary_job(self, conversation_pk: int) -> SummaryJob | None:
        row = await self.lanes.read_fast(lambda db: db.execute(
            f"SELECT {JOB_COLUMNS} FROM summary_jobs WHERE conversation_pk = ?",
            (conversation_pk,)).fetchone())
        return None if row is None else _job(row)
