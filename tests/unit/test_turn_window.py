"""A turn inside a small context window (`proxy.turn.window`): page-outs with a summary written
by the turn (`[memory] summaries = "inline"`), and an input that cannot fit at all. In-memory store, in-process upstream; the window is set by
`[models."test-model"] context_window`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy import tokens
from proxy.errors import ProxyError
from proxy.turn.summarizer import log as summarizer_log
from tests.fakes.in_process_upstream import SUMMARY_TEXT
from tests.fakes.scripted_model import message_text
from tests.fakes.turns import MODEL, TurnHarness, turn_settings, user

WINDOW = 1000
RESERVE = 64  # the requests' max_tokens: the output reserve
FILLER = "lorem ipsum dolor " * 20  # ~60 tokens; with its echoed reply, ~150 a turn


def upstream_tokens(body: dict[str, Any]) -> int:
    return tokens.count_prompt(body["messages"], body.get("tools"), MODEL)


def small_window(summaries: str = "inline", **upstream: Any) -> TurnHarness:
    """A harness with WINDOW; summaries written by the turn itself unless `summaries` says
    "background" (test_turn_background_summaries.py)."""
    # No usage reported: the calibration factor stays 1, so the budget is the local count.
    settings = turn_settings(window=WINDOW)
    settings.memory.summaries = summaries  # type: ignore[assignment]
    return TurnHarness.create(settings, report_usage=False, **upstream)


def test_a_small_window_pages_out_with_a_summary_and_every_prompt_fits() -> None:
    async def scenario() -> None:
        h = small_window()
        for i in range(5):
            session = await h.turn([user(f"message {i}: {FILLER}")], max_tokens=RESERVE)
            assert session.window.estimate() <= WINDOW

        assert "evict_messages" in h.store.calls
        assert h.conversation().summary == SUMMARY_TEXT
        rows = h.rows()
        paged_out = [m for m in rows if not m.in_context]
        assert paged_out and paged_out == rows[:len(paged_out)]  # the oldest, in seq order
        assert all(m.visible and not m.superseded for m in paged_out)  # still recall memory
        # the summarizer was asked about what was paged out, starting with the first message
        assert h.upstream.summary_requests
        assert "message 0:" in message_text(h.upstream.summary_requests[0]["messages"][-1])
        for body in h.upstream.requests:
            assert upstream_tokens(body) + RESERVE <= WINDOW
        last = h.upstream.requests[-1]["messages"]
        assert any(SUMMARY_TEXT in message_text(m) for m in last)
        assert not any("message 0:" in message_text(m) for m in last)

    asyncio.run(scenario())


def test_a_failing_summarizer_still_pages_out_with_a_gap_note(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(body: dict[str, Any]) -> Any:
        raise RuntimeError("summarizer down")

    async def scenario() -> None:
        h = small_window(summarizer=broken)
        for i in range(4):
            await h.turn([user(f"message {i}: {FILLER}")], max_tokens=RESERVE)
        assert "evict_messages" in h.store.calls
        summary = h.conversation().summary
        assert summary and summary != SUMMARY_TEXT
        assert "conversation_search" in summary  # the gap note points at recall search
        for body in h.upstream.requests:
            assert upstream_tokens(body) + RESERVE <= WINDOW

    with caplog.at_level("WARNING", logger=summarizer_log.name):
        asyncio.run(scenario())
    assert "summarizer failed" in caplog.text


def test_an_input_that_cannot_fit_alone_is_a_400_and_the_turn_is_discarded() -> None:
    async def scenario() -> None:
        h = small_window()
        first = await h.turn([user("short")], max_tokens=RESERVE)
        before = [m.data for m in h.rows()]
        with pytest.raises(ProxyError) as error:
            await h.start([user("huge " * 2000)], max_tokens=RESERVE)
        assert (error.value.status, error.value.code) == (400, "context_length_exceeded")
        assert len(h.upstream.requests) == 1  # no upstream call for it
        turn = list(h.store.turns.values())[-1]
        assert turn.turn_id != first.turn_id and turn.status == "failed"
        assert [m.data for m in h.rows() if not m.superseded] == before
        assert "evict_messages" not in h.store.calls  # nothing was paged out for it
        # the lock was released and the conversation is as it was
        await h.turn([user("next")], max_tokens=RESERVE)
        assert len(h.upstream.requests[-1]["messages"]) == 4  # system, short, reply, next

    asyncio.run(scenario())
