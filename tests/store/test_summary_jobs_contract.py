"""The background summary queue (`SummaryJobStore`, proxy/store/summary_jobs.py) on both
backends: an eviction queues its job atomically, later ones extend it, a claim leases it, a
completion writes the summary only by its owner and only over the pending one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.store.summary_jobs import Completion, SummaryChanged, SummaryWork
from tests import store_backends
from tests.store_backends import Backend, setup, user

store_backend = store_backends.store_backend

WORK = SummaryWork(from_seq=1, base_summary="old", model="m", context_window=8192)


async def conversation_with(s: Any, n: int = 6):
    agent, conv = await setup(s)
    await s.begin_turn(conv.pk, "t1", "h", None, [user(f"m{i}") for i in range(n)])
    await s.update_conversation(conv.pk, summary="old")
    return agent, conv


def test_an_eviction_queues_its_job_and_later_ones_extend_it(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s)
        assert await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old") == 2
        job = await s.get_summary_job(conv.pk)
        assert (job.from_seq, job.through_seq, job.base_summary, job.pending_summary,
                job.model, job.context_window, job.attempts, job.owner) == (
            1, 2, "old", "old + note", "m", 8192, 0, "")
        assert (await s.get_conversation(agent.pk, "default")).summary == "old + note"
        # another page-out before the job ran: the range grows, the base stays
        other = SummaryWork(3, "old + note", "m", 8192)
        await s.evict_messages(conv.pk, 4, "old + note 2", job=other, expected="old + note")
        job = await s.get_summary_job(conv.pk)
        assert (job.from_seq, job.through_seq, job.base_summary, job.pending_summary) == (
            1, 4, "old", "old + note 2")
        assert [m.seq for m in await s.context_messages(conv.pk)] == [5, 6]

    store_backend.run(body)


def test_an_eviction_after_a_summary_was_written_meanwhile_writes_nothing(
        store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s)
        with pytest.raises(SummaryChanged) as changed:
            await s.evict_messages(conv.pk, 2, "stale + note", job=WORK, expected="stale")
        assert changed.value.current == "old"
        assert [m.seq for m in await s.context_messages(conv.pk)] == [1, 2, 3, 4, 5, 6]
        assert await s.get_summary_job(conv.pk) is None
        assert (await s.get_conversation(agent.pk, "default")).summary == "old"

    store_backend.run(body)


def test_a_claim_leases_the_due_job_once(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        _, conv = await conversation_with(s)
        assert await s.claim_summary_job("a", 60, 1e12) is None  # nothing queued
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        now = 2e12
        job = await s.claim_summary_job("a", 60, now)
        assert (job.owner, job.attempts, job.through_seq) == ("a", 1, 2)
        assert await s.claim_summary_job("b", 60, now + 30) is None  # leased
        again = await s.claim_summary_job("b", 60, now + 61)  # the lease ran out
        assert (again.owner, again.attempts) == ("b", 2)
        assert await s.complete_summary_job(job, "late", now) is Completion.LOST

    store_backend.run(body)


def test_concurrent_claims_take_a_job_once(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        _, conv = await conversation_with(s)
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        claims = await asyncio.gather(*(s.claim_summary_job(f"o{i}", 60, 2e12)
                                        for i in range(8)))
        assert sum(c is not None for c in claims) == 1

    store_backend.run(body)


def test_a_completion_writes_the_summary_and_removes_the_job(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s)
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        job = await s.claim_summary_job("a", 60, 2e12)
        assert await s.complete_summary_job(job, "new summary", 2e12) is Completion.DONE
        assert (await s.get_conversation(agent.pk, "default")).summary == "new summary"
        assert await s.get_summary_job(conv.pk) is None
        rows = await store_backend.sql(s, "SELECT summary FROM messages WHERE"
                                       " conversation_pk = ? AND seq = 2", conv.pk)
        assert rows == [("new summary",)]  # the path's summary through the job's last row

    store_backend.run(body)


def test_a_completion_after_more_was_evicted_keeps_the_job_going(
        store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s)
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        job = await s.claim_summary_job("a", 60, 2e12)
        await s.evict_messages(conv.pk, 4, "old + note 2", job=SummaryWork(3, "x", "m", 8192),
                               expected="old + note")
        assert await s.complete_summary_job(job, "first part", 2e12) is Completion.MORE
        rest = await s.get_summary_job(conv.pk)
        assert (rest.from_seq, rest.through_seq, rest.base_summary, rest.owner,
                rest.attempts) == (3, 4, "first part", "", 0)
        assert (await s.get_conversation(agent.pk, "default")).summary == "old + note 2"
        job = await s.claim_summary_job("a", 60, 2e12)
        assert await s.complete_summary_job(job, "all", 2e12) is Completion.DONE
        assert (await s.get_conversation(agent.pk, "default")).summary == "all"

    store_backend.run(body)


def test_a_completion_never_overwrites_a_summary_that_moved_on(
        store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s)
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        job = await s.claim_summary_job("a", 60, 2e12)
        await s.update_conversation(conv.pk, summary="another branch's")  # the path moved
        assert await s.complete_summary_job(job, "new", 2e12) is Completion.DONE
        assert (await s.get_conversation(agent.pk, "default")).summary == "another branch's"
        assert await s.get_summary_job(conv.pk) is None

    store_backend.run(body)


def test_a_failure_schedules_the_retry_and_a_release_makes_it_due(
        store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        _, conv = await conversation_with(s)
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        job = await s.claim_summary_job("a", 60, 2e12)
        await s.fail_summary_job(job, "TimeoutError: slow", 2e12 + 100)
        left = await s.get_summary_job(conv.pk)
        assert (left.owner, left.attempts, left.last_error) == ("", 1, "TimeoutError: slow")
        assert await s.claim_summary_job("a", 60, 2e12 + 50) is None  # backing off
        job = await s.claim_summary_job("a", 60, 2e12 + 101)
        assert job.attempts == 2
        await s.release_summary_job(job)  # shutdown mid-summary
        left = await s.get_summary_job(conv.pk)
        assert (left.owner, left.attempts) == ("", 1)
        assert await s.claim_summary_job("b", 60, 2e12 + 101) is not None

    store_backend.run(body)


def test_a_deleted_agent_takes_its_jobs_along(store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s)
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        await s.delete_agent(agent.pk)
        assert await s.get_summary_job(conv.pk) is None

    store_backend.run(body)


def test_an_eviction_on_another_path_starts_the_job_over_from_that_path(
        store_backend: Backend) -> None:
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s)
        await s.evict_messages(conv.pk, 2, "old + note", job=WORK, expected="old")
        stale = await s.claim_summary_job("a", 60, 2e12)
        await s.update_conversation(conv.pk, summary="branch")  # the path moved meanwhile
        await s.evict_messages(conv.pk, 4, "branch + note",
                               job=SummaryWork(3, "branch", "m2", 4096), expected="branch")
        job = await s.get_summary_job(conv.pk)
        assert (job.from_seq, job.through_seq, job.base_summary, job.pending_summary,
                job.model, job.context_window, job.owner, job.attempts) == (
            3, 4, "branch", "branch + note", "m2", 4096, "", 0)
        assert await s.complete_summary_job(stale, "old branch's", 2e12) is Completion.LOST
        job = await s.claim_summary_job("b", 60, 2e12)
        assert await s.complete_summary_job(job, "branch summary", 2e12) is Completion.DONE
        assert (await s.get_conversation(agent.pk, "default")).summary == "branch summary"

    store_backend.run(body)


def test_evictions_racing_completions_never_deadlock(store_backend: Backend) -> None:
    """A turn's eviction (messages, then the job row) and a worker's completion (the job row,
    then a message) of one conversation run at once, many times: both lock the conversation
    row first, so they queue (a Postgres deadlock surfaced as a 500 in a 2,000-turn chat)."""
    async def body(s: Any) -> None:
        agent, conv = await conversation_with(s, n=80)
        summary, now = "old", 2e12
        for step in range(1, 30):
            through = 2 * step
            note = f"{summary} + note {step}"
            work = SummaryWork(through - 1, summary, "m", 8192)
            await s.evict_messages(conv.pk, through, note, job=work, expected=summary)
            job = await s.claim_summary_job("w", 60, now)
            more = SummaryWork(through + 1, note, "m", 8192)
            done, evicted = await asyncio.gather(
                s.complete_summary_job(job, f"summary {step}", now),
                s.evict_messages(conv.pk, through + 1, note + "+", job=more, expected=note),
                return_exceptions=True)
            assert done in (Completion.DONE, Completion.MORE), done
            # the completion first: the eviction sees the new summary and writes nothing (the
            # turn retries on top of it); the eviction first: the job grows
            assert evicted == 1 or isinstance(evicted, SummaryChanged), evicted
            finished = await s.claim_summary_job("w", 60, now)
            if finished is not None:
                await s.complete_summary_job(finished, f"summary {step}b", now)
            summary = (await s.get_conversation(agent.pk, "default")).summary
        assert await s.get_summary_job(conv.pk) is None

    store_backend.run(body)
