"""Every token of one prompt, counted once: the ledger a turn budgets with and the
`/context` report reads.

A prompt is the system message (its stable part — instructions, the client's system text,
memory blocks — and the per-turn metadata), the summary note, the memory-pressure note, the
tool schemas, the in-context messages and the output reserve. Counts are *local* (our own
tokenizer) and are turned into the upstream's count by the model's calibration factor
(`tokens/calibration.py`), rounding each part up so the estimate errs on the safe side.

The ledger changes only through its three mutators — `drop_oldest` (messages paged out),
`set_summary` and `set_pressure` — so no cached sum can go stale: each mutator updates the
parts it affects, and reading never has a side effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import tokens
from ..core.prompts import render_blocks, render_summary, system_parts
from ..core.types import Block, Message, StoredMessage

PRESSURE_NOTE = (
    "[Memory pressure: this conversation uses {pct}% of your context window. Older messages"
    " will soon be summarized and moved out of context (they stay searchable with"
    " conversation_search). Save anything important to core or archival memory now.]"
)
# The system message's own framing: its role and separators, and the end-of-message token.
SYSTEM_FRAMING = tokens.TOKENS_PER_MESSAGE + 1
PRESSURE_FRAMING = tokens.TOKENS_PER_MESSAGE + 2


def message_tokens(message: StoredMessage, model: str) -> int:
    """A stored message's local tokens: counted when it was stored, else now."""
    return message.tokens if message.tokens is not None else tokens.count_message(
        message.data, model)


@dataclass
class TokenLedger:
    """Local token counts of a prompt's parts, and their calibrated sums."""

    model: str
    factor: float  # upstream tokens per local token, learned per model
    system: int  # the system message's stable part (instructions, client text, blocks)
    metadata: int  # the system message's per-turn metadata
    tools: int
    messages: list[int]  # each in-context message, oldest first
    summary: int = 0
    pressure: int = 0
    # the client's own share of `tools` (the rest are memproxy's memory tools): counted apart
    # only so that a prompt that cannot fit can say whose tools fill the window (overflow.py)
    client_tools: int = 0
    client_tool_count: int = 0
    _scaled: list[int] | None = field(default=None, repr=False)  # per message, calibrated
    _scaled_sum: int = field(default=0, repr=False)

    @classmethod
    def count(
        cls,
        *,
        model: str,
        factor: float,
        system_text: str,
        summary: str | None,
        tools: Sequence[dict[str, Any]],
        context: Sequence[StoredMessage],
        client_tools: Sequence[dict[str, Any]] = (),
    ) -> TokenLedger:
        stable, volatile = system_parts(system_text)
        ledger = cls(
            model=model,
            factor=factor,
            system=tokens.count_text(stable, model),
            metadata=tokens.count_text(volatile, model),
            tools=tokens.count_tools(list(tools), model),
            messages=[message_tokens(m, model) for m in context],
            client_tools=tokens.count_tools(list(client_tools), model),
            client_tool_count=len(client_tools),
        )
        ledger.set_summary(summary)
        return ledger

    # --- mutators ---------------------------------------------------------------------------
    def set_summary(self, summary: str | None) -> None:
        self.summary = (tokens.count_message(render_summary(summary), self.model)
                        if summary else 0)

    def set_pressure(self, on: bool) -> None:
        """The memory-pressure note is in the prompt (counted by its template: its
        percentage is two or three digits either way)."""
        self.pressure = (tokens.count_text(PRESSURE_NOTE, self.model) + PRESSURE_FRAMING
                         if on else 0)

    def drop_oldest(self, count: int) -> None:
        """The `count` oldest messages left the context."""
        self.messages = self.messages[count:]
        if self._scaled is not None:
            self._scaled_sum -= sum(self._scaled[:count])
            self._scaled = self._scaled[count:]

    # --- reading ----------------------------------------------------------------------------
    def scale(self, local: int) -> int:
        return math.ceil(local * self.factor)

    def fixed_local(self) -> int:
        """Local tokens of everything that cannot be paged out."""
        return (self.system + self.metadata + SYSTEM_FRAMING + self.summary + self.pressure
                + self.tools + tokens.REPLY_PRIMING_TOKENS)

    def fixed(self, extra_local: int = 0) -> int:
        """Calibrated tokens of the fixed parts plus `extra_local` (this turn's memory steps)."""
        return self.scale(self.fixed_local() + extra_local)

    def scaled_messages(self) -> list[int]:
        """Each in-context message's calibrated tokens (computed once, then kept in step
        with `drop_oldest`)."""
        if self._scaled is None:
            factor, ceil = self.factor, math.ceil
            self._scaled = [ceil(local * factor) for local in self.messages]
            self._scaled_sum = sum(self._scaled)
        return self._scaled

    def messages_total(self) -> int:
        """Calibrated tokens of all in-context messages."""
        self.scaled_messages()
        return self._scaled_sum

    def local_total(self, extra: Sequence[Message] = ()) -> int:
        """Local tokens of the whole prompt with `extra` messages, as our tokenizer counts
        it (what calibration compares with the upstream's reported prompt tokens)."""
        return (self.fixed_local() + sum(self.messages)
                + sum(tokens.count_message(m, self.model) for m in extra))

    def parts(self, *, blocks: Sequence[Block], reserve_output: int) -> dict[str, int]:
        """The calibrated total split into the parts an operator reads (`/context`). The parts
        add up to exactly what a turn budgets with: the system message's framing counts as
        `system`, the blocks' share of the stable part is counted on its own."""
        fixed = self.fixed()
        blocks_local = tokens.count_text(render_blocks(blocks), self.model) if blocks else 0
        parts = {
            "blocks": self.scale(blocks_local),
            "metadata": self.scale(self.metadata),
            "summary": self.scale(self.summary),
            "pressure": self.scale(self.pressure),
            "tools": self.scale(self.tools),
        }
        # Whatever rounding leaves over belongs to the system message, so the parts add up.
        parts = {"system": max(0, fixed - sum(parts.values())), **parts}
        return {**parts, "messages": self.messages_total(), "reserved_output": reserve_output}
