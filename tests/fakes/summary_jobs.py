"""The background summary queue of the in-memory store double (`SummaryJobStore`,
proxy/store/summary_jobs.py), with the semantics of the real stores (tests/store pins them):
one job per conversation, extended by later evictions, claimed with a lease, completed only
by its owner, replacing the conversation's summary only while it shows the pending one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from proxy.store.summary_jobs import Completion, SummaryChanged, SummaryJob, SummaryWork


@dataclass
class JobRow:
    job: SummaryJob  # owner '' when not claimed
    not_before: float
    lease_until: float | None = None


@dataclass
class InMemorySummaryJobs:
    jobs: dict[int, JobRow] = field(default_factory=dict)  # conversation pk -> its job

    # provided by InMemoryTurnStore
    conversations: dict[int, Any] = field(default_factory=dict)
    summaries: dict[tuple[int, int], str] = field(default_factory=dict)

    def _called(self, name: str) -> None:
        raise NotImplementedError

    def _evict_rows(self, conversation_pk: int, through_seq: int) -> int:
        raise NotImplementedError

    async def evict_messages(self, conversation_pk: int, through_seq: int,
                             summary: str | None, *, job: SummaryWork | None = None,
                             expected: str | None = None) -> int:
        """Page out: messages up to `through_seq` leave the context; the summary is replaced;
        with `job`, the summary is the pending one and the job is queued (or extended)."""
        self._called("evict_messages")
        conversation = self.conversations[conversation_pk]
        if (job is not None and expected is not None and conversation_pk not in self.jobs
                and conversation.summary != expected):
            raise SummaryChanged(conversation.summary)
        evicted = self._evict_rows(conversation_pk, through_seq)
        if summary is not None:
            conversation.summary = summary
            self.summaries[(conversation_pk, through_seq)] = summary
        if job is not None:
            row = self.jobs.get(conversation_pk)
            if row is not None and row.job.pending_summary != expected:
                row = None  # another path: the job starts over from this eviction
            if row is None:
                self.jobs[conversation_pk] = JobRow(SummaryJob(
                    conversation_pk, job.from_seq, through_seq, job.base_summary,
                    summary or "", job.model, job.context_window, 0, ""), 0.0)
            else:
                row.job = replace(row.job, through_seq=max(row.job.through_seq, through_seq),
                                  pending_summary=summary or "")
        return evicted

    async def claim_summary_job(self, owner: str, lease_s: float, now: float
                                ) -> SummaryJob | None:
        self._called("claim_summary_job")
        due = [r for r in self.jobs.values() if r.not_before <= now
               and (r.lease_until is None or r.lease_until < now)]
        if not due:
            return None
        row = min(due, key=lambda r: r.not_before)
        row.job = replace(row.job, owner=owner, attempts=row.job.attempts + 1)
        row.lease_until = now + lease_s
        return row.job

    def _owned(self, job: SummaryJob) -> JobRow | None:
        row = self.jobs.get(job.conversation_pk)
        return row if row is not None and row.job.owner == job.owner else None

    async def complete_summary_job(self, job: SummaryJob, summary: str, now: float
                                   ) -> Completion:
        self._called("complete_summary_job")
        row = self._owned(job)
        if row is None:
            return Completion.LOST
        pk = job.conversation_pk
        self.summaries[(pk, job.through_seq)] = summary
        if row.job.through_seq != job.through_seq:
            row.job = replace(row.job, base_summary=summary, from_seq=job.through_seq + 1,
                              owner="", attempts=0, last_error=None)
            row.not_before, row.lease_until = now, None
            return Completion.MORE
        if self.conversations[pk].summary == row.job.pending_summary:
            self.conversations[pk].summary = summary
        del self.jobs[pk]
        return Completion.DONE

    async def fail_summary_job(self, job: SummaryJob, error: str, retry_at: float) -> None:
        self._called("fail_summary_job")
        row = self._owned(job)
        if row is not None:
            row.job = replace(row.job, owner="", last_error=error)
            row.not_before, row.lease_until = retry_at, None

    async def release_summary_job(self, job: SummaryJob) -> None:
        row = self._owned(job)
        if row is not None:
            row.job = replace(row.job, owner="", attempts=max(0, row.job.attempts - 1))
            row.lease_until = None

    async def get_summary_job(self, conversation_pk: int) -> SummaryJob | None:
        row = self.jobs.get(conversation_pk)
        return None if row is None else row.job
