"""Importing a Letta Agent File (`.af`, JSON) as a memproxy agent dump.

Two shapes exist (github.com/letta-ai/agent-file, letta/serialize_schemas):
- the current one, `{"agents": [{..., "block_ids", "messages", "in_context_message_ids"}],
  "blocks": [...], "tools": [...], ...}`, blocks referenced by id;
- the earlier one, a single agent object `{"agent_type", "core_memory": [blocks],
  "messages": [...], "in_context_message_indices": [...], "system", "llm_config", ...}`.

Taken: memory blocks (label, value, description, limit, read_only), messages in order as the
conversation `default`, and archival passages (not yet part of the .af standard; accepted as a
`passages` list of strings or `{"text", "tags"?, "created_at"?}`). Ignored: the system prompt,
tools, tool rules, LLM and embedding settings, files, groups.

Messages become OpenAI messages: user text (MemGPT's JSON-wrapped `user_message` unwrapped;
heartbeats, logins and system alerts dropped), the assistant's `send_message` argument or plain
text as the visible reply, memory tool calls that memproxy also has (core_memory_append, ...)
with their results as internal (invisible) steps; other tools and system messages are skipped.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

from ..core.messages import visible_hash
from ..core.tools import MEMORY_TOOL_NAMES
from ..core.types import Agent, Block, Conversation, Message, Passage, StoredMessage
from ..errors import bad_request
from ..store.admin_types import AgentDump, ConversationDump
from .rows import checked_blocks, synthesize_turns

_SKIPPED_USER_TYPES = frozenset({"heartbeat", "system_alert", "login"})


def is_letta(body: dict[str, Any]) -> bool:
    return isinstance(body.get("agents"), list) or (
        isinstance(body.get("core_memory"), list) and isinstance(body.get("messages"), list))


def _time(value: Any, default: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return default


def _text(content: Any) -> str:
    """Letta content: a string or parts; only `text` parts (not reasoning) count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content
                       if isinstance(p, dict) and p.get("type", "text") == "text")
    return ""


def _user_text(text: str) -> str | None:
    """MemGPT wraps user input as JSON {"type": "user_message", "message": ...}; None for the
    wrapped events that are not the user speaking."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        wrapped = json.loads(text)
    except ValueError:
        return text
    if not isinstance(wrapped, dict) or not isinstance(wrapped.get("type"), str):
        return text
    if wrapped["type"] == "user_message":
        return str(wrapped.get("message", ""))
    return None if wrapped["type"] in _SKIPPED_USER_TYPES else text


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class _Transcript:
    """Letta messages in, OpenAI messages out (with a turn per user message)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.out: list[StoredMessage] = []
        self.kept_calls: set[str] = set()
        self.pending: tuple[Message, float, bool] | None = None  # a reply waiting for results
        self.turn_id = f"letta-{uuid.uuid4().hex}"

    def add(self, data: Message, created_at: float, in_context: bool, visible: bool) -> None:
        self.out.append(StoredMessage(
            seq=len(self.out) + 1, data=data, turn_id=self.turn_id, created_at=created_at,
            in_context=in_context, visible=visible,
            visible_hash=visible_hash(data) if visible else None))

    def flush(self) -> None:
        if self.pending is not None:
            self.add(self.pending[0], self.pending[1], self.pending[2], True)
            self.pending = None

    def message(self, raw: dict[str, Any], in_context: bool) -> None:
        role = raw.get("role")
        created_at = _time(raw.get("created_at"), self.now)
        if role == "tool":
            call_id = raw.get("tool_call_id")
            returns = [r for r in raw.get("tool_returns") or [] if isinstance(r, dict)]
            if not call_id and returns:
                call_id = returns[0].get("tool_call_id")
            if call_id in self.kept_calls:
                result = _text(raw.get("content")) or str(
                    (returns[0].get("func_response") if returns else "") or "")
                self.add({"role": "tool", "tool_call_id": call_id, "content": result},
                         created_at, in_context, False)
            return
        self.flush()
        if role == "user":
            text = _user_text(_text(raw.get("content")))
            if text is not None:
                self.turn_id = f"letta-{uuid.uuid4().hex}"
                self.add({"role": "user", "content": text}, created_at, in_context, True)
        elif role == "assistant":
            self.assistant(raw, created_at, in_context)

    def assistant(self, raw: dict[str, Any], created_at: float, in_context: bool) -> None:
        calls = [c for c in raw.get("tool_calls") or [] if isinstance(c, dict)]
        reply: str | None = None if calls else (_text(raw.get("content")) or None)
        memory_calls = []
        for call in calls:
            fn = call.get("function") if isinstance(call.get("function"), dict) else {}
            name = fn.get("name")
            if name == "send_message":
                reply = str(_arguments(fn.get("arguments")).get("message", "")) or reply
            elif name in MEMORY_TOOL_NAMES:
                call_id = str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}")
                arguments = fn.get("arguments")
                memory_calls.append({"id": call_id, "type": "function", "function": {
                    "name": name, "arguments": arguments if isinstance(arguments, str)
                    else json.dumps(arguments or {})}})
                self.kept_calls.add(call_id)
        if memory_calls:
            self.add({"role": "assistant", "content": None, "tool_calls": memory_calls},
                     created_at, in_context, False)
        if reply:
            self.pending = ({"role": "assistant", "content": reply}, created_at, in_context)


def _agent_parts(body: dict[str, Any]) -> tuple[dict[str, Any], list[Any], list[Any],
                                                  set[int], Any]:
    """(agent, raw blocks, raw messages, indices of in-context messages, raw passages)."""
    if isinstance(body.get("agents"), list):
        agents = body["agents"]
        if len(agents) != 1 or not isinstance(agents[0], dict):
            raise bad_request(f"the file holds {len(agents)} agents; import takes exactly one",
                              param="agents", code="invalid_document")
        agent = agents[0]
        by_id = {b.get("id"): b for b in body.get("blocks") or [] if isinstance(b, dict)}
        blocks = [by_id[i] for i in agent.get("block_ids") or [] if i in by_id]
        blocks += [b for b in agent.get("memory_blocks") or [] if isinstance(b, dict)]
        messages = [m for m in agent.get("messages") or [] if isinstance(m, dict)]
        ids = agent.get("in_context_message_ids")
        wanted = set(ids) if isinstance(ids, list) else None
        in_context = (set(range(len(messages))) if wanted is None else
                      {i for i, m in enumerate(messages) if m.get("id") in wanted})
        passages = agent.get("passages", body.get("passages"))
    else:
        agent = body
        blocks = [b for b in body.get("core_memory") or [] if isinstance(b, dict)]
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        indices = body.get("in_context_message_indices")
        in_context = (set(range(len(messages))) if not isinstance(indices, list) else
                      {i for i in indices if isinstance(i, int)})
        passages = body.get("passages")
    return agent, blocks, messages, in_context, passages


def _blocks(raw: list[dict[str, Any]], now: float) -> list[Block]:
    blocks = []
    for i, b in enumerate(raw):
        value, label = b.get("value"), b.get("label")
        if not isinstance(label, str) or not isinstance(value, str):
            raise bad_request(f"blocks[{i}]: a block needs a string label and value",
                              param=f"blocks[{i}]", code="invalid_document")
        limit = b.get("limit") if isinstance(b.get("limit"), int) else 5000
        blocks.append(Block(label, value, str(b.get("description") or ""),
                            max(1, limit, len(value)), bool(b.get("read_only")),
                            _time(b.get("updated_at"), now)))
    return checked_blocks(blocks)


def _passages(raw: Any, now: float) -> list[Passage]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("passages must be a list", param="passages", code="invalid_document")
    out = []
    for i, p in enumerate(raw):
        text = p if isinstance(p, str) else (p.get("text") if isinstance(p, dict) else None)
        if not isinstance(text, str) or not text:
            raise bad_request(f"passages[{i}]: a passage needs text", param=f"passages[{i}]",
                              code="invalid_document")
        tags = p.get("tags") if isinstance(p, dict) else None
        tags = [str(t) for t in tags] if isinstance(tags, list) else []
        created = _time(p.get("created_at") if isinstance(p, dict) else None, now)
        out.append(Passage(0, text, tags, created))
    return out


def letta_dump(body: dict[str, Any], now: float | None = None) -> tuple[str | None, AgentDump]:
    """(the agent's name, if any, as the id to use; the dump)."""
    now = time.time() if now is None else now
    agent, raw_blocks, raw_messages, in_context, raw_passages = _agent_parts(body)
    transcript = _Transcript(now)
    for i, message in enumerate(raw_messages):
        transcript.message(message, i in in_context)
    transcript.flush()
    messages = transcript.out
    created = _time(agent.get("created_at"), now)
    conversations = []
    if messages:
        conversation = Conversation(0, 0, "default", min(created, messages[0].created_at))
        conversations.append(ConversationDump(conversation, None, messages,
                                              synthesize_turns(messages)))
    name = agent.get("name")
    dump = AgentDump(Agent(0, "", name if isinstance(name, str) else "", created, {}),
                     _blocks(raw_blocks, now), [], conversations, _passages(raw_passages, now))
    return (name if isinstance(name, str) and name else None), dump
