"""Assembling the prompt sent upstream from stored state (docs/design.md §4.1).

The stored context can legitimately contain things the upstream would reject: a client tool
call the client never answered (the user moved on), or a tool result whose call was superseded.
`well_formed` repairs that so a stored conversation can always be sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from .prompts import render_summary
from .types import Message

UNANSWERED_TOOL_RESULT = "(no result: the client did not return one for this call)"


def well_formed(messages: Sequence[Message]) -> list[Message]:
    """Pair every assistant tool call with a result and drop results without a call.

    Results are placed directly after their call (the order OpenAI requires); a call left
    without a result gets a placeholder result so the history stays valid.
    """
    out: list[Message] = []
    i = 0
    n = len(messages)
    while i < n:
        message = messages[i]
        role = message.get("role")
        if role == "tool":
            i += 1  # a result whose call is not directly before it: orphaned
            continue
        if role != "assistant" or not message.get("tool_calls"):
            out.append(message)
            i += 1
            continue
        out.append(message)
        ids = [c.get("id", "") for c in message["tool_calls"]]
        results: dict[str, Message] = {}
        j = i + 1
        while j < n and messages[j].get("role") == "tool":
            call_id = messages[j].get("tool_call_id", "")
            if call_id in ids and call_id not in results:
                results[call_id] = messages[j]
            j += 1
        for call_id in ids:
            out.append(
                results.get(call_id)
                or {"role": "tool", "tool_call_id": call_id, "content": UNANSWERED_TOOL_RESULT}
            )
        i = j
    return out


def assemble_prompt(system_text: str, summary: str, messages: Sequence[Message]) -> list[Message]:
    """System message, then the summary note if any, then the in-context messages."""
    prompt: list[Message] = [{"role": "system", "content": system_text}]
    if summary:
        prompt.append(render_summary(summary))
    prompt.extend(well_formed(messages))
    return prompt
