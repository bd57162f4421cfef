"""Keeping every prompt of a turn inside the model's window (docs/design.md §4.1): budget,
page out, summarize.

A `TurnWindow` is one turn's prompt and its budget. The pure decisions live in `core/paging.py`
(what to page out) and `core/summary.py` (how to ask for a summary); the token counts live in
one `TokenLedger` (`ledger.py`). This module does the I/O around them — the summarizer calls
and the store update — and is the guard the agent loop consults before every upstream call,
so that no prompt larger than the window is ever sent, also mid-turn when tool results grow it.

Summaries are written in the background by default (background_summaries.py: the page-out
is immediate, the summary a durable job), or by the turn itself with `[memory] summaries =
"inline"`.

Failure rules: a failed summarizer still pages out (the summary keeps a gap note); an upstream
"context length exceeded" pages out more and retries (bounded); only an input that cannot fit
even alone is a 400 `context_length_exceeded`, which names what fills the window
(overflow.py: the client's tools, memory, the reserve, the messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .. import tokens
from ..config import MemorySettings
from ..core.context import assemble_prompt
from ..core.loop import Upstream
from ..core.paging import Budget, Item, Plan, fits_alone, plan, under_threshold
from ..core.types import Conversation, Message, StoredMessage
from ..errors import ProxyError
from ..store.base import TurnStore
from .ledger import PRESSURE_NOTE, TokenLedger
from .overflow import ContextCost, context_length_error
from .summarizer import CHARS_PER_TOKEN, Summarizer

TOOL_RESULT_SHARE = 0.1  # one tool result may use at most this share of the window
REMOVED_RESULT = "(this tool result was removed to fit the context window)"
FORCE_STEPS = (0.5, 0.3, 0.15)  # shrink targets after "context length exceeded"


class PageOut(Protocol):
    """Background summaries (background_summaries.SummaryQueue): evict at once, summarize
    later."""

    async def page_out(self, conversation: Conversation, evicted: list[StoredMessage], *,
                       window: int, model: str, api_key: str | None) -> str: ...


class Calibrations(Protocol):
    """What a window needs of the model catalog (`models/catalog.py`)."""

    async def window(self, model: str, api_key: str | None) -> int: ...

    async def factor(self, model: str) -> float: ...

    def observe(self, model: str, local_tokens: int, usage: dict[str, Any] | None) -> None: ...


def overflow_error(needed: int, window: int) -> ProxyError:
    """A request that asked not to be truncated (the Responses API's `truncation:
    "disabled"`) and does not fit: refused, as OpenAI does, instead of paged out."""
    return ProxyError(
        400,
        f"The conversation needs about {needed} tokens with memory and the reserved output,"
        f" more than this model's context window of {window} tokens, and truncation is"
        " disabled. Send truncation: \"auto\" to page the oldest messages out (they stay"
        " searchable in memory), or start a shorter conversation.",
        param="input",
        code="context_length_exceeded",
    )


def reserved_output(body: dict[str, Any], settings: MemorySettings, window: int) -> int:
    """Tokens kept free for the answer: the client's max tokens, else the configured reserve,
    never more than half the window."""
    reserve = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(reserve, int) or reserve <= 0:
        reserve = settings.reserve_output_tokens
    return min(reserve, window // 2)


@dataclass
class TurnWindow:
    """The prompt of one turn and what keeps it inside the window."""

    conversation: Conversation
    system_text: str
    context: list[StoredMessage]
    ledger: TokenLedger
    window: int
    reserve_output: int
    protect_from_seq: int | None  # this turn's own messages are never paged out
    settings: MemorySettings
    store: TurnStore
    catalog: Calibrations
    summarizer: Summarizer
    pressure: int | None = None  # percent of the window, when the pressure note is shown
    compactions: int = 0
    may_page: bool = True  # False: a prompt over the window is refused, not paged out
    background: PageOut | None = None  # None: this turn waits for its summaries (inline)
    api_key: str | None = None  # for the background summary's call

    @classmethod
    async def open(
        cls,
        *,
        conversation: Conversation,
        context: list[StoredMessage],
        system_text: str,
        tools: list[dict[str, Any]],
        body: dict[str, Any],
        api_key: str | None,
        client_tools: list[dict[str, Any]] | None = None,
        protect_from_seq: int | None,
        settings: MemorySettings,
        store: TurnStore,
        upstream: Upstream,
        catalog: Calibrations,
        may_page: bool = True,
        background: PageOut | None = None,
    ) -> TurnWindow:
        """The turn's window, paged out to fit, with the pressure note when it is due."""
        model = str(body.get("model", ""))
        window = await catalog.window(model, api_key)
        ledger = TokenLedger.count(model=model, factor=await catalog.factor(model),
                                   system_text=system_text, summary=conversation.summary,
                                   tools=tools, context=context,
                                   client_tools=client_tools or ())
        turn = cls(
            conversation=conversation, system_text=system_text, context=list(context),
            ledger=ledger, window=window,
            reserve_output=reserved_output(body, settings, window),
            protect_from_seq=protect_from_seq, settings=settings, store=store, catalog=catalog,
            summarizer=Summarizer(upstream, settings, api_key), may_page=may_page,
            background=background, api_key=api_key,
        )
        before = turn.estimate()
        result = await turn.fit()
        if result.warn and not result.evicted:
            # Warn once per climb: on the first turn whose prompt is over warn_at, i.e. when the
            # previous turn's prompt (without its reply and without this input) was under it.
            # The crossing may come from this input or from the previous reply.
            if before - turn._since_previous_prompt() < settings.warn_at * window:
                turn.pressure = round(100 * before / window)
                ledger.set_pressure(True)
        return turn

    # --- what the turn reports -------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.ledger.model

    @property
    def max_tool_result_chars(self) -> int:
        return max(500, int(self.window * TOOL_RESULT_SHARE * CHARS_PER_TOKEN))

    @property
    def summary_usage(self) -> dict[str, int]:
        return self.summarizer.usage

    @property
    def summary_seconds(self) -> float:
        return self.summarizer.seconds

    def base_prompt(self) -> list[Message]:
        prompt = assemble_prompt(
            self.system_text, self.conversation.summary, [m.data for m in self.context]
        )
        if self.pressure is not None:
            prompt.append({"role": "system", "content": PRESSURE_NOTE.format(pct=self.pressure)})
        return prompt

    # --- the budget ---------------------------------------------------------------------------
    def budget(self, extra_tokens: int = 0) -> Budget:
        s = self.settings
        return Budget(
            window=self.window,
            reserve_output=self.reserve_output,
            fixed=self.ledger.fixed(extra_tokens),
            warn_at=s.warn_at,
            compact_at=s.compact_at,
            compact_to=s.compact_to,
        )

    def cost(self, extra_tokens: int, messages: int) -> ContextCost:
        """The budget split by what the user can change: the client's tools, memory (every
        other fixed part), the reserve, and `messages` plus this turn's memory steps
        (`extra_tokens`). The parts add up to what the budget compares with the window."""
        ledger = self.ledger
        fixed = ledger.fixed()
        client = min(ledger.scale(ledger.client_tools), ledger.scale(ledger.tools))
        return ContextCost(
            model=self.model, window=self.window, client_tools=client,
            client_tool_count=ledger.client_tool_count, memory=fixed - client,
            reserve=self.reserve_output,
            messages=messages + ledger.fixed(extra_tokens) - fixed)

    def _extra_tokens(self, extra: list[Message] | None) -> int:
        return sum(tokens.count_message(m, self.model) for m in extra or [])

    def estimate(self, extra: list[Message] | None = None) -> int:
        """Calibrated tokens of base prompt + extra messages + tools + reserved output."""
        budget = self.budget(self._extra_tokens(extra))
        return budget.fixed + self.ledger.messages_total() + budget.reserve_output

    def fits(self, extra: list[Message]) -> bool:
        return self.estimate(extra) <= self.window

    def observe(self, extra: list[Message], usage: dict[str, Any] | None) -> None:
        """Teach the calibration how the upstream counts this model's prompts."""
        self.catalog.observe(self.model, self.ledger.local_total(extra), usage)

    def _items(self) -> list[Item]:
        """The context as paging `Item`s: built only when a page-out must be planned."""
        return [
            Item(m.seq, str(m.data.get("role", "")), scaled, bool(m.data.get("tool_calls")))
            for m, scaled in zip(self.context, self.ledger.scaled_messages(), strict=True)
        ]

    def _protected_tokens(self) -> int:
        """Tokens of this turn's own messages (seq >= protect_from_seq), the newest ones."""
        if self.protect_from_seq is None:
            return 0
        total = 0
        # The context is in seq order, so the protected messages are its tail.
        scaled = self.ledger.scaled_messages()
        for m, count in zip(reversed(self.context), reversed(scaled), strict=True):
            if m.seq < self.protect_from_seq:
                break
            total += count
        return total

    def _since_previous_prompt(self) -> int:
        """Tokens added since the previous turn's prompt: that turn's reply and memory steps,
        and this turn's input (the in-context messages after the previous turn's last input)."""
        context, scaled = self.context, self.ledger.scaled_messages()
        current = len(context)
        if self.protect_from_seq is not None:
            current = next((i for i, m in enumerate(context) if m.seq >= self.protect_from_seq),
                           len(context))
        if current == 0:
            return sum(scaled)
        previous_turn = context[current - 1].turn_id
        start = current
        while start > 0 and context[start - 1].turn_id == previous_turn:
            start -= 1
        while start < current and context[start].role in ("user", "tool", "system"):
            start += 1  # the previous turn's own input was part of its prompt
        return sum(scaled[start:])

    # --- paging out -----------------------------------------------------------------------------
    async def fit(self, extra: list[Message] | None = None, force_to: float | None = None) -> Plan:
        """Page out (and summarize) until the prompt fits; raise 400 if the input cannot fit."""
        extra_tokens = self._extra_tokens(extra)
        result: Plan | None = None
        for _ in range(3):  # a new summary can be longer than the old one: re-plan, bounded
            budget = self.budget(extra_tokens)
            protected = self._protected_tokens()
            if not fits_alone(budget, protected):
                raise context_length_error(self.cost(extra_tokens, protected))
            before = budget.fixed + self.ledger.messages_total() + budget.reserve_output
            result = under_threshold(budget, before, force_to) or plan(
                budget, self._items(), protect_from_seq=self.protect_from_seq,
                force_to=force_to)
            if not result.evicted:
                break
            if not self.may_page:  # compaction is paging too: only a real overflow is refused
                if before > self.window:
                    raise overflow_error(before, self.window)
                break
            await self._evict(result.evicted)
            force_to = None
            if result.fits and self.estimate(extra) <= self.window:
                break
        assert result is not None
        return result

    async def _evict(self, count: int) -> None:
        """Page out the `count` oldest messages: with background summaries, at once with a
        gap note (the summary is queued); else summarize them first, then mark them."""
        evicted = self.context[:count]
        if self.background is not None:
            summary = await self.background.page_out(
                self.conversation, evicted, window=self.window, model=self.model,
                api_key=self.api_key)
        else:
            summary = await self.summarizer.summarize(self.conversation.summary, evicted,
                                                      window=self.window, model=self.model)
            await self.store.evict_messages(self.conversation.pk, evicted[-1].seq, summary)
        self.conversation.summary = summary
        self.ledger.set_summary(summary)
        self.context = self.context[count:]
        self.ledger.drop_oldest(count)
        self.compactions += 1

    # --- the agent loop's guard (core/loop.ContextGuard) --------------------------------------
    async def guard(self, base: list[Message], extra: list[Message]) -> list[Message] | None:
        """Before an upstream call: the base prompt to use if it had to change, else None."""
        if self.fits(extra):
            return None
        before = len(self.context)
        await self.fit(extra)
        if self.estimate(extra) > self.window:
            self._drop_tool_results(extra, self.window)
        if self.estimate(extra) > self.window:
            raise context_length_error(self.cost(self._extra_tokens(extra),
                                                 self.ledger.messages_total()))
        return self.base_prompt() if len(self.context) != before else None

    async def shrink(self, extra: list[Message], attempt: int) -> list[Message] | None:
        """After the upstream said "context length exceeded": page out more, or None to give
        up."""
        if attempt >= len(FORCE_STEPS):
            return None
        before = len(self.context)
        await self.fit(extra, force_to=FORCE_STEPS[attempt])
        if len(self.context) == before:
            self._drop_tool_results(extra, int(self.window * FORCE_STEPS[attempt]))
        return self.base_prompt()

    def _drop_tool_results(self, extra: list[Message], target: int) -> None:
        """Last resort inside a turn: replace this turn's largest tool results by a
        placeholder."""
        results = sorted(
            (m for m in extra if m.get("role") == "tool" and m.get("content") != REMOVED_RESULT),
            key=lambda m: len(str(m.get("content") or "")),
            reverse=True,
        )
        for message in results:
            if self.estimate(extra) <= target:
                return
            message["content"] = REMOVED_RESULT
