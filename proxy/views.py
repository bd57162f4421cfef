"""Stored rows as the JSON objects memproxy shows: the agents REST API's (docs/api.md,
api/schemas.py), whose blocks and block revisions the agent document (portable/document.py)
embeds as they are. Here, outside both, so that neither imports the other.

Plain dicts, built field by field: cheap, and the shapes are checked by the tests against the
served OpenAPI document. Optional fields (`blocks`, `score`, `conversation_id`) are present
only where the API says so.
"""

from __future__ import annotations

from typing import Any

from .core.types import Agent, Block, BlockRevision, Passage, StoredMessage
from .store.admin_types import AgentStats, ConversationStats


def block_object(block: Block) -> dict[str, Any]:
    return {"object": "block", "label": block.label, "value": block.value,
            "description": block.description, "limit": block.limit,
            "read_only": block.read_only, "chars": len(block.value),
            "updated_at": block.updated_at}


def agent_object(agent: Agent, stats: AgentStats | None,
                 blocks: list[Block] | None = None) -> dict[str, Any]:
    stats = stats or AgentStats()
    out: dict[str, Any] = {
        "object": "agent", "id": agent.agent_id, "tenant": agent.tenant,
        "created_at": agent.created_at, "settings": agent.settings,
        "stats": {"conversations": stats.conversations, "messages": stats.messages,
                  "passages": stats.passages},
    }
    if blocks is not None:
        out["blocks"] = [block_object(b) for b in blocks]
    return out


def revision_object(revision: BlockRevision) -> dict[str, Any]:
    return {"object": "block.revision", "id": revision.id, "label": revision.label,
            "old_value": revision.old_value, "new_value": revision.new_value,
            "source": revision.source, "turn_id": revision.turn_id,
            "created_at": revision.created_at}


def conversation_object(stats: ConversationStats) -> dict[str, Any]:
    c = stats.conversation
    return {"object": "conversation", "id": c.conversation_id, "created_at": c.created_at,
            "summary": c.summary, "messages": stats.messages,
            "last_message_at": stats.last_message_at}


def message_object(message: StoredMessage, *, score: float | None = None,
                   conversation_id: str | None = None) -> dict[str, Any]:
    data = message.data
    calls = data.get("tool_calls")
    call_id = data.get("tool_call_id")
    out: dict[str, Any] = {
        "object": "message", "seq": message.seq, "role": message.role,
        "content": data.get("content"),
        "tool_calls": calls if isinstance(calls, list) else None,
        "tool_call_id": call_id if isinstance(call_id, str) else None,
        "turn_id": message.turn_id, "created_at": message.created_at,
        "in_context": message.in_context, "visible": message.visible,
        "superseded": message.superseded, "parent_seq": message.parent_seq,
    }
    if score is not None:
        out["score"] = score
    if conversation_id is not None:
        out["conversation_id"] = conversation_id
    return out


def passage_object(passage: Passage, *, score: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "passage", "id": passage.pk, "text": passage.text,
                           "tags": passage.tags, "created_at": passage.created_at}
    if score is not None:
        out["score"] = score
    return out


def list_object(data: list[dict[str, Any]], has_more: bool = False,
                **extra: Any) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, **extra}
