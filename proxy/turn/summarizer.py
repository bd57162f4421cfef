"""Asking the model for a summary of the messages a turn pages out (docs/paging.md).

The pure parts — how the transcript is cut into chunks that fit the summarizer's window, the
prompt, the clamp and the gap note — are `core/summary.py`; this module makes the calls.
A summarizer that fails or answers nothing never fails the turn: the messages are still paged
out, and the summary keeps a gap note that points the model at `conversation_search`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .. import tokens
from ..config import MemorySettings
from ..core.loop import Upstream, add_usage
from ..core.summary import (
    chunk_transcript,
    clamp_summary,
    gap_note,
    summary_request,
    transcript_budget,
)
from ..core.types import StoredMessage

log = logging.getLogger("memproxy.compaction")

SUMMARY_SHARE = 0.15  # the summary may use at most this share of the window
CHARS_PER_TOKEN = 4


def max_summary_chars(window: int) -> int:
    """The longest summary of a conversation on a `window`-token model."""
    return max(400, int(window * SUMMARY_SHARE * CHARS_PER_TOKEN))


@dataclass
class Summarizer:
    """Summarizes paged-out messages for one turn, adding up the time and usage it costs
    (upstream time and tokens, reported with the turn's own)."""

    upstream: Upstream
    settings: MemorySettings
    api_key: str | None
    usage: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # time waiting for the summarizer: upstream time, not memproxy's

    async def summarize(
        self, previous: str | None, evicted: list[StoredMessage], *, window: int, model: str,
    ) -> str:
        """The new summary: `previous` folded with `evicted`, at most ~15% of the window; a
        gap note instead when the summarizer fails (inline summaries: the turn goes on)."""
        messages = [{**m.data, "_created_at": m.created_at} for m in evicted]
        try:
            return await self.fold(previous, messages, window=window, model=model)
        except Exception as exc:
            log.warning("summarizer failed (%s); evicting with a gap note", type(exc).__name__)
            return gap_note(previous or "", messages,
                            reason=f"summarizer failed: {type(exc).__name__}",
                            max_chars=max_summary_chars(window) * 2)

    async def fold(
        self, previous: str | None, messages: list[dict[str, Any]], *, window: int, model: str,
    ) -> str:
        """`previous` folded with `messages` (message dicts with `_created_at`), chunk by
        chunk; raises when the summarizer fails (a background job retries it later)."""
        max_chars = max_summary_chars(window)
        model = self.settings.summarizer_model or model
        output_tokens = max(64, max_chars // CHARS_PER_TOKEN)

        def count(text: str) -> int:
            return tokens.count_text(text, model)

        budget_tokens = transcript_budget(window, output_tokens, max_chars=max_chars,
                                          count=count)
        summary = previous or ""
        for chunk in chunk_transcript(messages, budget_tokens=budget_tokens, count=count):
            request = {
                "model": model,
                "messages": summary_request(summary, chunk, max_chars=max_chars),
                "max_tokens": output_tokens,
                "temperature": 0,
            }
            summary = clamp_summary(await self._ask(request), max_chars=max_chars)
        return summary

    async def _ask(self, request: dict[str, Any]) -> str:
        started = time.perf_counter()
        try:
            response = await asyncio.wait_for(
                self.upstream.chat(request, api_key=self.api_key),
                self.settings.summarizer_timeout_s,
            )
        finally:
            self.seconds += time.perf_counter() - started
        add_usage(self.usage, response.get("usage"))
        text = ((response.get("choices") or [{}])[0].get("message") or {}).get("content")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the summarizer returned no text")
        return text.strip()
