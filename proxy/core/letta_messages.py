"""A stored turn's messages in Letta's message shapes (docs/agents-as-a-service.md), as a pure
function, so that a turn and its replay (an `otid` retry) answer with the very same messages.

Letta returns the messages a turn *produced*, internal steps included, never the user's input:

- an assistant message's text beside tool calls → `reasoning_message` (Letta's name for what a
  model says next to a call), then one `tool_call_message` per call;
- a tool result → `tool_return_message`, `status` "error" when memproxy's tool said so (its
  results start with "Error:", core/tools.py), else "success";
- an assistant message with no tool call → `assistant_message`.

Ids, dates and `otid`s are derived from the turn id, the message's position and the turn's
`created` time: nothing in them depends on when they are mapped, so a replay from the store is
byte-for-byte the first answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .loop import STEPS_EXHAUSTED
from .messages import content_text
from .types import Message

MESSAGE_TYPES = frozenset({
    "reasoning_message", "tool_call_message", "tool_return_message", "assistant_message"})
STOP_REASONS = ("end_turn", "max_steps", "requires_approval", "error", "cancelled")


@dataclass(frozen=True)
class TurnFacts:
    """What every message of one turn shares."""

    turn_id: str
    created: int  # the turn's response `created` (seconds): every message's `date`
    run_id: str | None = None


def iso_date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _arguments(raw: Any) -> str:
    """Letta's `arguments` is a JSON string; some models send an object."""
    if isinstance(raw, str):
        return raw
    return json.dumps(raw if raw is not None else {}, ensure_ascii=False)


def _base(facts: TurnFacts, index: int, message_type: str) -> dict[str, Any]:
    ident = f"{facts.turn_id}-{index}"
    return {"id": f"message-{ident}", "date": iso_date(facts.created), "message_type": message_type,
            "otid": f"otid-{ident}", "run_id": facts.run_id}


def is_error_result(text: str) -> bool:
    return text.startswith("Error:")


def to_letta(messages: Iterable[Message], facts: TurnFacts) -> list[dict[str, Any]]:
    """Every message of the turn's output (roles assistant and tool, in stored order) in
    Letta's shapes; anything else (an input row) is skipped. Tool-call names are looked up from
    the calls seen earlier in the turn."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}

    def add(message_type: str, **fields: Any) -> None:
        out.append({**_base(facts, len(out), message_type), **fields})

    for message in messages:
        role = message.get("role")
        if role == "assistant":
            text = content_text(message.get("content"))
            calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
            if not calls:
                add("assistant_message", content=text or str(message.get("refusal") or ""))
                continue
            if text:
                add("reasoning_message", reasoning=text, source="non_reasoner_model")
            for call in calls:
                fn = call.get("function") if isinstance(call.get("function"), dict) else {}
                name, call_id = str(fn.get("name") or ""), str(call.get("id") or "")
                names[call_id] = name
                add("tool_call_message", tool_call={
                    "name": name, "arguments": _arguments(fn.get("arguments")),
                    "tool_call_id": call_id})
        elif role == "tool":
            text = content_text(message.get("content"))
            call_id = str(message.get("tool_call_id") or "")
            add("tool_return_message", name=names.get(call_id), tool_return=text,
                status="error" if is_error_result(text) else "success",
                tool_call_id=call_id, stdout=None, stderr=None)
    return out


def assistant_chunk(facts: TurnFacts, index: int, text: str) -> dict[str, Any]:
    """A piece of the model's text as Letta's token stream (`stream_tokens`) sends it: an
    `assistant_message` with the id, otid and date of the whole message at `index`."""
    return {**_base(facts, index, "assistant_message"), "content": text}


def step_count(messages: Iterable[Message]) -> int:
    """One model call per assistant message: what Letta counts as steps."""
    return sum(1 for m in messages if m.get("role") == "assistant")


def stop_reason(messages: Sequence[Message]) -> str:
    """`max_steps` when the turn ran out of steps with no answer (the loop's last step was made
    to answer without tools and the model still called one: its answer is `STEPS_EXHAUSTED`,
    core/loop.py), else `end_turn`. memproxy's agents API offers no client tools, so a turn
    never stops for `requires_approval`; a failed turn is an HTTP error, not a reply."""
    last = next((m for m in reversed(messages) if m.get("role") == "assistant"), None)
    if last is not None and not last.get("tool_calls") and (
            content_text(last.get("content")) == STEPS_EXHAUSTED):
        return "max_steps"
    return "end_turn"


def only_types(letta: list[dict[str, Any]], wanted: Sequence[str] | None
               ) -> list[dict[str, Any]]:
    """`include_return_message_types`: keep those types (None: all)."""
    if wanted is None:
        return letta
    keep = set(wanted)
    return [m for m in letta if m["message_type"] in keep]


def usage_statistics(usage: dict[str, Any], steps: int) -> dict[str, Any]:
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {"message_type": "usage_statistics", "completion_tokens": completion,
            "prompt_tokens": prompt,
            "total_tokens": int(usage.get("total_tokens") or prompt + completion),
            "step_count": steps}


def letta_response(messages: Sequence[Message], facts: TurnFacts, *, usage: dict[str, Any],
                   include: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole `LettaResponse`: messages, `stop_reason` and `usage`."""
    return {
        "messages": only_types(to_letta(messages, facts), include),
        "stop_reason": {"message_type": "stop_reason",
                        "stop_reason": stop_reason(messages)},
        "usage": usage_statistics(usage, step_count(messages)),
    }
