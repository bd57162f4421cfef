"""A deterministic, rule-based stand-in for a memory-using LLM.

`scripted_model(body)` looks at a Chat Completions request body and decides what a
MemGPT-style model would answer, so that end-to-end tests can prove statefulness without a
real model. Rules, on the last message of `body["messages"]`:

- a `tool` message → plain text about the result: after a memory edit
  "Got it, I'll remember that." (or "I could not update my memory: <result>" when the result
  mentions an error), after a search "Search results: <result>", after any other tool
  "Tool result: <result>";
- "My name is X"                → `core_memory_append(label="human", content="Name: X")`;
- "What is my name?"            → "Your name is X." from `Name: X` in the system message(s),
                                  else "I don't know your name.";
- "Remember in archive: T"      → `archival_memory_insert(content=T)`;
- "Search archive: Q"           → `archival_memory_search(query=Q)`;
- "Search history: Q"           → `conversation_search(query=Q)`;
- "Replace memory: OLD => NEW"  → `core_memory_replace(label="human", old_content=OLD,
                                  new_content=NEW)`;
- "Use tool NAME with ARGS"     → a call to NAME with ARGS (parsed JSON, or the raw string
                                  when it is not valid JSON, to test malformed arguments);
- anything else                 → "Echo: <text> (saw N user messages)".

A tool is only called when a tool of that name is offered in `body["tools"]` (and
`tool_choice` is not "none"); otherwise the answer is "Tool NAME is unavailable."
With `tool_choice` "required" or a forced function, an answer without a call becomes a call of
the forced function (or of the first offered tool that is not a memory tool), as OpenAI
guarantees.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MEMORY_EDIT_TOOLS = {"core_memory_append", "core_memory_replace", "archival_memory_insert"}
MEMORY_SEARCH_TOOLS = {"archival_memory_search", "conversation_search"}
MEMORY_TOOLS = MEMORY_EDIT_TOOLS | MEMORY_SEARCH_TOOLS


@dataclass
class Reply:
    """What the fake model answers: text, tool calls, or both.

    `tool_calls` holds `(name, arguments)` pairs; arguments is a dict (rendered as JSON) or a
    raw string sent verbatim. `call_ids`, when given, are the calls' ids in order (a replayed
    client expects the ids it recorded); otherwise each call gets a fresh `call_N`.
    `finish_reason` defaults to "tool_calls" when there are tool calls, else "stop". `usage`,
    when given, replaces the computed token counts. `fields` and `logprobs`: see rich.py.
    """

    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # extra message fields (rich.py)
    logprobs: bool = False  # send choice logprobs for the content (rich.py)

    @property
    def effective_finish_reason(self) -> str:
        if self.finish_reason:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


def message_text(message: dict[str, Any]) -> str:
    """The text of a message whose content is a string, a list of parts, or null."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


def offered_tools(body: dict[str, Any]) -> set[str]:
    """Names of the function tools the request offers (none when tool_choice is "none")."""
    if body.get("tool_choice") == "none":
        return set()
    names = set()
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            names.add(fn["name"])
    return names


def _tool_name_for(messages: list[dict[str, Any]], tool_call_id: str | None) -> str | None:
    """The name of the tool call (in an earlier assistant message) that a result answers."""
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call.get("id") == tool_call_id:
                return (call.get("function") or {}).get("name")
    return None


def _after_tool(messages: list[dict[str, Any]]) -> Reply:
    result = message_text(messages[-1])
    name = _tool_name_for(messages[:-1], messages[-1].get("tool_call_id"))
    if name in MEMORY_SEARCH_TOOLS:
        return Reply(content=f"Search results: {result}")
    if name in MEMORY_EDIT_TOOLS:
        if "error" in result.lower():
            return Reply(content=f"I could not update my memory: {result}")
        return Reply(content="Got it, I'll remember that.")
    return Reply(content=f"Tool result: {result}")


def _call(body: dict[str, Any], name: str, arguments: dict[str, Any] | str) -> Reply:
    if name not in offered_tools(body):
        return Reply(content=f"Tool {name} is unavailable.")
    return Reply(tool_calls=[(name, arguments)])


def _known_name(messages: list[dict[str, Any]]) -> str | None:
    system = "\n".join(
        message_text(m) for m in messages if m.get("role") in ("system", "developer")
    )
    found = re.findall(r"Name: ([^\n<]+)", system)
    return found[-1].strip() if found else None


_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^my name is ([^.!?\n]+)", re.I), "name"),
    (re.compile(r"\bwhat(?: is|'s) my name\b", re.I), "ask_name"),
    (re.compile(r"^remember in archive:\s*(.+)$", re.I | re.S), "archive_insert"),
    (re.compile(r"^search archive:\s*(.+)$", re.I | re.S), "archive_search"),
    (re.compile(r"^search history:\s*(.+)$", re.I | re.S), "history_search"),
    (re.compile(r"^replace memory:\s*(.*?)\s*=>\s*(.*)$", re.I | re.S), "replace"),
    (re.compile(r"^use tool (\S+) with (.*)$", re.I | re.S), "use_tool"),
]


def _from_user(body: dict[str, Any], text: str) -> Reply:
    messages = body.get("messages") or []
    stripped = text.strip()
    for pattern, rule in _RULES:
        match = pattern.search(stripped)
        if not match:
            continue
        if rule == "name":
            return _call(
                body,
                "core_memory_append",
                {"label": "human", "content": f"Name: {match.group(1).strip()}"},
            )
        if rule == "ask_name":
            name = _known_name(messages)
            return Reply(content=f"Your name is {name}." if name else "I don't know your name.")
        if rule == "archive_insert":
            return _call(body, "archival_memory_insert", {"content": match.group(1).strip()})
        if rule == "archive_search":
            return _call(body, "archival_memory_search", {"query": match.group(1).strip()})
        if rule == "history_search":
            return _call(body, "conversation_search", {"query": match.group(1).strip()})
        if rule == "replace":
            return _call(
                body,
                "core_memory_replace",
                {
                    "label": "human",
                    "old_content": match.group(1),
                    "new_content": match.group(2),
                },
            )
        if rule == "use_tool":
            raw = match.group(2).strip()
            try:
                arguments: dict[str, Any] | str = json.loads(raw)
            except json.JSONDecodeError:
                arguments = raw
            return _call(body, match.group(1), arguments)
    seen = sum(1 for m in messages if m.get("role") == "user")
    return Reply(content=f"Echo: {stripped} (saw {seen} user messages)")


def scripted_model(body: dict[str, Any]) -> Reply:
    """Decide the fake model's answer to a chat completion request body (see module doc)."""
    return _honour_tool_choice(body, _answer(body))


def _answer(body: dict[str, Any]) -> Reply:
    messages = body.get("messages") or []
    if not messages:
        return Reply(content="Echo:  (saw 0 user messages)")
    if messages[-1].get("role") == "tool":
        return _after_tool(messages)
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return _from_user(body, message_text(last_user) if last_user else "")


def _honour_tool_choice(body: dict[str, Any], reply: Reply) -> Reply:
    """As OpenAI guarantees: with `tool_choice` "required" or a forced function an answer is a
    tool call (the forced one, or the first offered non-memory tool, with `{}`)."""
    choice = body.get("tool_choice")
    if reply.tool_calls or not (choice == "required" or isinstance(choice, dict)):
        return reply
    offered = [(t.get("function") or {}).get("name") for t in body.get("tools") or []
               if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return Reply(tool_calls=[(name, {})]) if name in offered else reply
    names = [n for n in offered if n not in MEMORY_TOOLS] or offered
    return Reply(tool_calls=[(names[0], {})]) if names else reply
