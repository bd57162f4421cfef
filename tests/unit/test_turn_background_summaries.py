"""Background summaries (`proxy.turn.background_summaries`, `[memory] summaries =
"background"`, the default): a turn that pages out never calls the summarizer; the next
prompt shows a gap note until the queued job has written the summary, then the summary.
In-memory store, in-process upstream; the jobs are run by `SummaryQueue.run_due`."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from proxy.core.summary import PENDING_REASON
from proxy.store.summary_jobs import Completion
from proxy.turn.background_summaries import backoff
from tests.fakes.in_process_upstream import SUMMARY_TEXT
from tests.fakes.scripted_model import Reply, message_text
from tests.unit.test_turn_window import FILLER, RESERVE, WINDOW, small_window, upstream_tokens


def background(**upstream: Any):
    return small_window("background", **upstream)


def counted(h, outcome: str) -> float:
    """memproxy_background_summaries{outcome} of the harness's service."""
    return h.service.metrics.background_summaries.labels(outcome)._value.get()


async def turns_until_paged_out(h, start: int = 0) -> int:
    """Turns until one pages out; returns the index after it."""
    i = start
    while "evict_messages" not in h.store.calls[-12:] or i == start:
        await h.turn([f_user(i)], max_tokens=RESERVE)
        i += 1
        if h.store.jobs:
            return i
        assert i < start + 20, "no page-out"
    return i


def f_user(i: int) -> dict[str, str]:
    return {"role": "user", "content": f"message {i}: {FILLER}"}


def last_prompt_text(h) -> str:
    return "\n".join(message_text(m) for m in h.upstream.requests[-1]["messages"])


def test_a_page_out_queues_the_summary_and_the_turn_never_calls_the_summarizer() -> None:
    async def scenario() -> None:
        h = background()
        i = await turns_until_paged_out(h)
        assert h.upstream.summary_requests == []  # nobody waited for a summary
        summary = h.conversation().summary
        assert PENDING_REASON in summary and "conversation_search" in summary
        job = await h.store.get_summary_job(h.conversation().pk)
        assert job is not None and job.owner == "" and job.from_seq == 1
        rows = h.rows()
        assert [m.seq for m in rows if not m.in_context] == list(range(1, job.through_seq + 1))
        # the next turn's prompt shows the gap note while the summary is pending
        await h.turn([f_user(i)], max_tokens=RESERVE)
        assert PENDING_REASON in last_prompt_text(h)
        job = await h.store.get_summary_job(h.conversation().pk)  # it may have grown

        assert await h.service.summaries.run_due() == 1
        assert h.store.jobs == {}
        assert h.conversation().summary == SUMMARY_TEXT
        assert counted(h, "done") == 1
        assert h.store.summaries[(h.conversation().pk, job.through_seq)] == SUMMARY_TEXT
        asked = message_text(h.upstream.summary_requests[0]["messages"][-1])
        assert "message 0:" in asked  # the evicted messages, from the first
        # the turn after uses the summary
        await h.turn([f_user(i + 1)], max_tokens=RESERVE)
        assert SUMMARY_TEXT in last_prompt_text(h)
        assert PENDING_REASON not in last_prompt_text(h)
        for body in h.upstream.requests:
            assert upstream_tokens(body) + RESERVE <= WINDOW

    asyncio.run(scenario())


def test_evictions_while_the_job_waits_extend_it_and_merge_their_gap_notes() -> None:
    async def scenario() -> None:
        h = background()
        i = await turns_until_paged_out(h)
        first = await h.store.get_summary_job(h.conversation().pk)
        assert first is not None
        while (job := await h.store.get_summary_job(h.conversation().pk)).through_seq \
                == first.through_seq:
            await h.turn([f_user(i)], max_tokens=RESERVE)
            i += 1
            assert i < 40
        assert job.from_seq == first.from_seq and job.base_summary == first.base_summary
        evicted = sum(1 for m in h.rows() if not m.in_context)
        summary = h.conversation().summary
        assert summary.count("[Note:") == 1 and f"[Note: {evicted} earlier" in summary
        assert await h.service.summaries.run_due() == 1
        assert h.conversation().summary == SUMMARY_TEXT
        asked = "\n".join(message_text(r["messages"][-1]) for r in h.upstream.summary_requests)
        last_evicted = max(m.seq for m in h.rows() if not m.in_context)
        assert "message 0:" in asked
        assert h.rows()[last_evicted - 1].data["content"][:12] in asked  # the newest evicted

    asyncio.run(scenario())


def test_a_failing_summarizer_keeps_the_gap_note_and_is_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = [RuntimeError("summarizer down")]

    def flaky(body: dict[str, Any]) -> Reply:
        if failures:
            raise failures.pop()
        return Reply(content=SUMMARY_TEXT)

    async def scenario() -> None:
        h = background(summarizer=flaky)
        h.settings.memory.summary_retry_max_s = 0.05
        await turns_until_paged_out(h)
        pending = h.conversation().summary
        job = await h.service.summaries._claim()
        assert job is not None
        await h.service.summaries._run(job)
        assert h.service.summaries.failed == 1 and counted(h, "failed") == 1
        left = await h.store.get_summary_job(h.conversation().pk)
        assert left is not None and left.owner == "" and "summarizer down" in left.last_error
        assert h.conversation().summary == pending  # the gap note stays, nothing wiped
        assert all(m.visible for m in h.rows() if not m.in_context)  # still recall memory
        await asyncio.sleep(0.06)  # the retry is due
        assert await h.service.summaries.run_due() == 1
        assert h.conversation().summary == SUMMARY_TEXT

    with caplog.at_level("WARNING", logger="memproxy.compaction"):
        asyncio.run(scenario())
    assert "retrying in" in caplog.text


def test_backoff_doubles_up_to_its_bound() -> None:
    assert [backoff(n, 600) for n in (1, 2, 3)] == [5, 10, 20]
    assert backoff(30, 600) == 600


def test_a_job_extended_while_it_ran_goes_on_from_the_new_summary() -> None:
    async def scenario() -> None:
        h = background()
        i = await turns_until_paged_out(h)
        queue = h.service.summaries
        job = await queue._claim()
        assert job is not None
        while (await h.store.get_summary_job(job.conversation_pk)).through_seq \
                == job.through_seq:  # another page-out while the summary is written
            await h.turn([f_user(i)], max_tokens=RESERVE)
            i += 1
            assert i < 40
        outcome = await h.store.complete_summary_job(job, "first part", 0.0)
        assert outcome is Completion.MORE  # (the store's own answer: nothing counted)
        rest = await h.store.get_summary_job(job.conversation_pk)
        assert rest.base_summary == "first part" and rest.from_seq == job.through_seq + 1
        assert PENDING_REASON in h.conversation().summary  # still pending the rest
        asked = len(h.upstream.summary_requests)
        assert await queue.run_due() == 1
        assert h.conversation().summary == SUMMARY_TEXT
        first = h.upstream.summary_requests[asked]  # the rest folded into "first part"
        assert "first part" in message_text(first["messages"][-1])

    asyncio.run(scenario())


def test_a_job_whose_lease_was_taken_over_writes_nothing() -> None:
    async def scenario() -> None:
        h = background()
        await turns_until_paged_out(h)
        pending = h.conversation().summary
        stale = await h.store.claim_summary_job("dead-process", 0.0, 0.0)
        assert stale is not None
        taken = await h.service.summaries._claim()  # the lease ran out: claimed again
        assert taken is not None and taken.attempts == 2
        assert await h.store.complete_summary_job(stale, "late", 1.0) is Completion.LOST
        assert h.conversation().summary == pending
        await h.service.summaries._run(taken)
        assert h.conversation().summary == SUMMARY_TEXT

    asyncio.run(scenario())


def test_workers_write_the_summary_without_being_asked_and_stop_cleanly() -> None:
    async def scenario() -> None:
        h = background()
        queue = h.service.summaries
        await queue.start()
        try:
            await turns_until_paged_out(h)
            for _ in range(200):
                if not h.store.jobs:
                    break
                await asyncio.sleep(0.01)
            assert h.conversation().summary == SUMMARY_TEXT
        finally:
            await queue.aclose(wait_s=1)
        assert queue._tasks == []

    asyncio.run(scenario())


def test_shutdown_mid_summary_hands_the_job_back() -> None:
    started = asyncio.Event()

    async def scenario() -> None:
        h = background()

        async def hang(body: dict[str, Any], *, api_key: str | None, route: Any = None):
            started.set()
            await asyncio.sleep(3600)

        queue = h.service.summaries
        await turns_until_paged_out(h)
        queue.upstream = type("Hanging", (), {"chat": staticmethod(hang)})()
        await queue.start()
        await asyncio.wait_for(started.wait(), 5)
        await queue.aclose(wait_s=0.05)
        job = await h.store.get_summary_job(h.conversation().pk)
        assert job is not None and job.owner == "" and job.attempts == 0  # due again at once
        assert PENDING_REASON in h.conversation().summary

    asyncio.run(scenario())


def test_a_page_out_that_read_the_summary_before_it_was_written_builds_on_the_new_one() -> None:
    async def scenario() -> None:
        h = background()
        await turns_until_paged_out(h)
        stale = replace(h.conversation())  # what a turn read while the job was pending
        assert PENDING_REASON in stale.summary
        assert await h.service.summaries.run_due() == 1  # the summary lands meanwhile
        in_context = [m for m in h.rows() if m.in_context]
        shown = await h.service.summaries.page_out(stale, in_context[:2], window=WINDOW,
                                                   model="test-model", api_key=None)
        assert shown.startswith(SUMMARY_TEXT) and PENDING_REASON in shown
        job = await h.store.get_summary_job(stale.pk)
        assert (job.base_summary, job.from_seq) == (SUMMARY_TEXT, in_context[0].seq)
        assert h.conversation().summary == shown

    asyncio.run(scenario())
