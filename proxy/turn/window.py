"""Keeping every prompt inside the model's window (DESIGN §4.1): budget, evict, summarize.

The pure decisions live in `core/paging.py` (what to evict) and `core/summary.py` (how to ask
for a summary); this module does the I/O around them: the summarizer calls, the store update,
and the guard the agent loop consults before every upstream call, so that no prompt larger than
the window is ever sent — also mid-turn, when tool results grow the prompt.

Failure rules: a failed summarizer still evicts (the summary keeps a gap note); an upstream
"context length exceeded" evicts more and retries (bounded); only an input that cannot fit
even alone is a 400 `context_length_exceeded`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from .. import tokens
from ..config import Settings
from ..core.context import assemble_prompt
from ..core.paging import Budget, Item, Plan, fits_alone, plan, under_threshold
from ..core.prompts import render_summary, system_parts
from ..core.summary import (
    chunk_transcript,
    clamp_summary,
    gap_note,
    summary_request,
    transcript_budget,
)
from ..core.types import Conversation, Message, StoredMessage
from ..errors import ProxyError
from ..models.catalog import ModelCatalog
from ..store.base import Store
from ..upstream import UpstreamClient

log = logging.getLogger("memproxy.compaction")

PRESSURE_NOTE = (
    "[Memory pressure: this conversation uses {pct}% of your context window. Older messages"
    " will soon be summarized and moved out of context (they stay searchable with"
    " conversation_search). Save anything important to core or archival memory now.]"
)
SUMMARY_SHARE = 0.15  # the summary may use at most this share of the window
TOOL_RESULT_SHARE = 0.1  # one tool result may use at most this share of the window
CHARS_PER_TOKEN = 4
REMOVED_RESULT = "(this tool result was removed to fit the context window)"
FORCE_STEPS = (0.5, 0.3, 0.15)  # shrink targets after "context length exceeded"


def context_length_error(needed: int, window: int) -> ProxyError:
    return ProxyError(
        400,
        f"This model's maximum context length is {window} tokens, but the new input alone"
        f" needs about {needed} tokens with memory and the reserved output. Send a shorter"
        " message or a smaller max_tokens.",
        param="messages",
        code="context_length_exceeded",
    )


@dataclass
class TurnContext:
    """The prompt of one turn and what is needed to keep it inside the window."""

    compactor: Compactor
    conversation: Conversation
    system_text: str
    context: list[StoredMessage]
    tools: list[dict[str, Any]]
    model: str
    api_key: str | None
    window: int
    reserve_output: int
    factor: float
    protect_from_seq: int | None
    summary_usage: dict[str, int] = field(default_factory=dict)
    summary_seconds: float = 0.0  # time waiting for the summarizer: upstream time, not ours
    pressure: int | None = None
    compactions: int = 0
    # Per-turn caches: the context only changes by dropping its oldest messages.
    _items: list[Item] | None = field(default=None, repr=False)  # built only to plan a page-out
    _scaled_tokens: list[int] | None = field(default=None, repr=False)  # per message, calibrated
    _items_tokens: int = field(default=0, repr=False)  # their sum
    _local_tokens: list[int] | None = field(default=None, repr=False)
    _fixed: tuple[tuple[str, int | None], int] | None = field(default=None, repr=False)

    @property
    def max_tool_result_chars(self) -> int:
        return max(500, int(self.window * TOOL_RESULT_SHARE * CHARS_PER_TOKEN))

    def base_prompt(self) -> list[Message]:
        prompt = assemble_prompt(
            self.system_text, self.conversation.summary, [m.data for m in self.context]
        )
        if self.pressure is not None:
            prompt.append({"role": "system", "content": PRESSURE_NOTE.format(pct=self.pressure)})
        return prompt

    def _fixed_local(self) -> int:
        key = (self.conversation.summary, self.pressure)
        if self._fixed is None or self._fixed[0] != key:
            self._fixed = (key, self._compute_fixed_local())
        return self._fixed[1]

    def _compute_fixed_local(self) -> int:
        stable, volatile = system_parts(self.system_text)
        fixed = (tokens.count_text(stable, self.model) + tokens.count_text(volatile, self.model)
                 + tokens.TOKENS_PER_MESSAGE + 1)
        if self.conversation.summary:
            fixed += tokens.count_message(render_summary(self.conversation.summary), self.model)
        if self.pressure is not None:
            fixed += tokens.count_text(PRESSURE_NOTE, self.model) + tokens.TOKENS_PER_MESSAGE + 2
        return fixed + tokens.count_tools(self.tools, self.model) + tokens.REPLY_PRIMING_TOKENS

    def _local_counts(self) -> list[int]:
        if self._local_tokens is None:
            self._local_tokens = [
                m.tokens if m.tokens is not None else tokens.count_message(m.data, self.model)
                for m in self.context
            ]
        return self._local_tokens

    def _local_messages(self) -> int:
        return sum(self._local_counts())

    def drop_oldest(self, count: int) -> list[StoredMessage]:
        """Remove the `count` oldest messages from the context (after they were evicted)."""
        evicted, self.context = self.context[:count], self.context[count:]
        if self._scaled_tokens is not None:
            self._items_tokens -= sum(self._scaled_tokens[:count])
            self._scaled_tokens = self._scaled_tokens[count:]
        if self._items is not None:
            self._items = self._items[count:]
        if self._local_tokens is not None:
            self._local_tokens = self._local_tokens[count:]
        return evicted

    def observe(self, extra: list[Message], usage: dict[str, Any] | None) -> None:
        """Teach the calibration how the upstream counts this model's prompts."""
        local = (self._fixed_local() + self._local_messages()
                 + sum(tokens.count_message(m, self.model) for m in extra))
        self.compactor.catalog.observe(self.model, local, usage)

    def _scaled(self, local: int) -> int:
        return math.ceil(local * self.factor)

    def budget(self, extra_tokens: int = 0) -> Budget:
        s = self.compactor.settings.memory
        return Budget(
            window=self.window,
            reserve_output=self.reserve_output,
            fixed=self._scaled(self._fixed_local() + extra_tokens),
            warn_at=s.warn_at,
            compact_at=s.compact_at,
            compact_to=s.compact_to,
        )

    def scaled_tokens(self) -> list[int]:
        """Each in-context message's calibrated tokens (their sum is `_items_tokens`)."""
        if self._scaled_tokens is None:
            factor, ceil = self.factor, math.ceil
            self._scaled_tokens = [ceil(local * factor) for local in self._local_counts()]
            self._items_tokens = sum(self._scaled_tokens)
        return self._scaled_tokens

    def items(self) -> list[Item]:
        """The context as paging `Item`s: built only when a page-out must be planned (one per
        message in context, so not on every turn)."""
        if self._items is None:
            self._items = [
                Item(m.seq, str(m.data.get("role", "")), scaled, bool(m.data.get("tool_calls")))
                for m, scaled in zip(self.context, self.scaled_tokens(), strict=True)
            ]
        return self._items

    def _protected_tokens(self) -> int:
        """Tokens of this turn's own messages (seq >= protect_from_seq), the newest ones."""
        if self.protect_from_seq is None:
            return 0
        total = 0
        # The context is in seq order, so the protected messages are its tail.
        for m, scaled in zip(reversed(self.context), reversed(self.scaled_tokens()), strict=True):
            if m.seq < self.protect_from_seq:
                break
            total += scaled
        return total

    def estimate(self, extra: list[Message] | None = None) -> int:
        """Calibrated tokens of base prompt + extra messages + tools + reserved output."""
        extra_tokens = sum(tokens.count_message(m, self.model) for m in extra or [])
        budget = self.budget(extra_tokens)
        self.scaled_tokens()
        return budget.fixed + self._items_tokens + budget.reserve_output

    async def fit(self, extra: list[Message] | None = None, force_to: float | None = None) -> Plan:
        """Evict (and summarize) until the prompt fits; raise 400 if the input cannot fit."""
        extra_tokens = sum(tokens.count_message(m, self.model) for m in extra or [])
        result: Plan | None = None
        for _ in range(3):  # a new summary can be longer than the old one: re-plan, bounded
            budget = self.budget(extra_tokens)
            protected = self._protected_tokens()
            if not fits_alone(budget, protected):
                raise context_length_error(budget.fixed + protected + budget.reserve_output,
                                           self.window)
            self.scaled_tokens()
            before = budget.fixed + self._items_tokens + budget.reserve_output
            result = under_threshold(budget, before, force_to) or plan(
                budget, self.items(), protect_from_seq=self.protect_from_seq, force_to=force_to)
            if not result.evicted:
                break
            await self.compactor.evict(self, result.evicted)
            force_to = None
            if result.fits and self.estimate(extra) <= self.window:
                break
        assert result is not None
        return result

    def fits(self, extra: list[Message]) -> bool:
        return self.estimate(extra) <= self.window

    async def guard(self, base: list[Message], extra: list[Message]) -> list[Message] | None:
        """Before an upstream call: the base prompt to use if it had to change, else None."""
        if self.fits(extra):
            return None
        before = len(self.context)
        await self.fit(extra)
        if self.estimate(extra) > self.window:
            _drop_tool_results(extra, self, self.window)
        if self.estimate(extra) > self.window:
            raise context_length_error(self.estimate(extra), self.window)
        return self.base_prompt() if len(self.context) != before else None

    async def shrink(self, extra: list[Message], attempt: int) -> list[Message] | None:
        """After the upstream said "context length exceeded": evict more, or None to give up."""
        if attempt >= len(FORCE_STEPS):
            return None
        before = len(self.context)
        await self.fit(extra, force_to=FORCE_STEPS[attempt])
        if len(self.context) == before:
            _drop_tool_results(extra, self, int(self.window * FORCE_STEPS[attempt]))
        return self.base_prompt()


def _since_previous_prompt(ctx: TurnContext) -> int:
    """Tokens added since the previous turn's prompt: that turn's reply and memory steps, and
    this turn's input (the in-context messages after the previous turn's last input)."""
    items, context = ctx.items(), ctx.context
    current = len(items)
    if ctx.protect_from_seq is not None:
        current = next((i for i, m in enumerate(items) if m.seq >= ctx.protect_from_seq),
                       len(items))
    if current == 0:
        return sum(i.tokens for i in items)
    previous_turn = context[current - 1].turn_id
    start = current
    while start > 0 and context[start - 1].turn_id == previous_turn:
        start -= 1
    while start < current and context[start].role in ("user", "tool", "system"):
        start += 1  # the previous turn's own input was part of its prompt
    return sum(i.tokens for i in items[start:])


def _drop_tool_results(extra: list[Message], ctx: TurnContext, target: int) -> None:
    """Last resort inside a turn: replace this turn's largest tool results by a placeholder."""
    results = sorted(
        (m for m in extra if m.get("role") == "tool" and m.get("content") != REMOVED_RESULT),
        key=lambda m: len(str(m.get("content") or "")),
        reverse=True,
    )
    for message in results:
        if ctx.estimate(extra) <= target:
            return
        message["content"] = REMOVED_RESULT


class Compactor:
    def __init__(
        self, settings: Settings, store: Store, upstream: UpstreamClient, catalog: ModelCatalog
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.catalog = catalog

    async def prepare(
        self,
        *,
        conversation: Conversation,
        context: list[StoredMessage],
        system_text: str,
        tools: list[dict[str, Any]],
        body: dict[str, Any],
        api_key: str | None,
        protect_from_seq: int | None,
    ) -> TurnContext:
        model = str(body.get("model", ""))
        window = await self.catalog.window(model, api_key)
        reserve = body.get("max_completion_tokens") or body.get("max_tokens")
        if not isinstance(reserve, int) or reserve <= 0:
            reserve = self.settings.memory.reserve_output_tokens
        reserve = min(reserve, window // 2)
        ctx = TurnContext(
            compactor=self,
            conversation=conversation,
            system_text=system_text,
            context=list(context),
            tools=tools,
            model=model,
            api_key=api_key,
            window=window,
            reserve_output=reserve,
            factor=await self.catalog.factor(model),
            protect_from_seq=protect_from_seq,
        )
        before = ctx.estimate()
        result = await ctx.fit()
        if result.warn and not result.evicted:
            # Warn once per climb: on the first turn whose prompt is over warn_at, i.e. when the
            # previous turn's prompt (without its reply and without this input) was under it.
            # The crossing may come from this input or from the previous reply.
            if before - _since_previous_prompt(ctx) < self.settings.memory.warn_at * window:
                ctx.pressure = round(100 * before / window)
        return ctx

    async def evict(self, ctx: TurnContext, count: int) -> None:
        evicted = ctx.context[:count]
        summary = await self.summarize(ctx, evicted)
        await self.store.evict_messages(ctx.conversation.pk, evicted[-1].seq, summary)
        ctx.conversation.summary = summary
        ctx.drop_oldest(count)
        ctx.compactions += 1

    async def summarize(self, ctx: TurnContext, evicted: list[StoredMessage]) -> str:
        max_chars = max(400, int(ctx.window * SUMMARY_SHARE * CHARS_PER_TOKEN))
        messages = [{**m.data, "_created_at": m.created_at} for m in evicted]
        previous = ctx.conversation.summary
        model = self.settings.memory.summarizer_model or ctx.model
        output_tokens = max(64, max_chars // CHARS_PER_TOKEN)
        budget_tokens = transcript_budget(
            ctx.window, output_tokens, max_chars=max_chars,
            count=lambda t: tokens.count_text(t, model),
        )
        try:
            summary = previous
            for chunk in chunk_transcript(messages, budget_tokens=budget_tokens,
                                          count=lambda t: tokens.count_text(t, model)):
                request = {
                    "model": model,
                    "messages": summary_request(summary, chunk, max_chars=max_chars),
                    "max_tokens": output_tokens,
                    "temperature": 0,
                }
                started = time.perf_counter()
                try:
                    response = await asyncio.wait_for(
                        self.upstream.chat(request, api_key=ctx.api_key),
                        self.settings.memory.summarizer_timeout_s,
                    )
                finally:
                    ctx.summary_seconds += time.perf_counter() - started
                _add_usage(ctx.summary_usage, response.get("usage"))
                text = ((response.get("choices") or [{}])[0].get("message") or {}).get("content")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("the summarizer returned no text")
                summary = clamp_summary(text.strip(), max_chars=max_chars)
            return summary
        except Exception as exc:
            log.warning("summarizer failed (%s); evicting with a gap note", type(exc).__name__)
            return gap_note(previous, messages, reason=f"summarizer failed: {type(exc).__name__}",
                            max_chars=max_chars * 2)


def _add_usage(total: dict[str, int], usage: dict[str, Any] | None) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = (usage or {}).get(key)
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
