"""Plain data for the OpenAI Responses and Conversations APIs as the store keeps them.

A stored response is the client's state, not an agent's: it is kept per tenant, found by its
own id, and outlives the agent that ran it (deleting an agent leaves its responses). Its
`previous_response_id` links it to the response it continued, so a chain is read back with one
query (`ResponseStore.response_chain`). A Conversations-API conversation ("conv_...") is a
separate thing from memproxy's own per-agent conversations: an ordered list of items with
metadata, also per tenant. Migration 8 (`migrations/v8_responses.py`) holds both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESPONSE_STATUSES = ("queued", "in_progress", "completed", "incomplete", "failed", "cancelled")


class IdConflictError(ValueError):
    """An id that must be unique is taken: a conversation id within its tenant, or an item id
    within its conversation (also when one batch repeats it). Nothing was written."""

    def __init__(self, kind: str, id: str) -> None:
        super().__init__(f"{kind} id {id!r} already exists")
        self.kind, self.id = kind, id


@dataclass
class StoredResponse:
    response_id: str  # "resp_..."
    tenant: str
    status: str  # queued | in_progress | completed | incomplete | failed | cancelled
    previous_response_id: str | None
    conversation_id: str | None  # Conversations-API id ("conv_...") it belongs to, if any
    agent_id: str | None  # the memproxy agent that ran it, if any
    input_items: list[dict[str, Any]]  # this request's input items, normalized, each with "id"
    body: dict[str, Any]  # the full Response object as returned to the client
    created_at: float  # unix seconds
    expires_at: float | None = None


@dataclass
class ApiConversation:
    conversation_id: str  # "conv_..."
    tenant: str
    metadata: dict[str, Any]
    created_at: float


def item_ids(items: list[dict[str, Any]]) -> list[str]:
    """The ids of conversation items, checked: each item has a string "id" and no id repeats
    within the batch (IdConflictError), so a store fails the call before it writes."""
    ids: list[str] = []
    seen: set[str] = set()
    for item in items:
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str) or not item_id or "\x00" in item_id:
            raise ValueError("every conversation item needs a string 'id' (no NUL characters)")
        if item_id in seen:
            raise IdConflictError("item", item_id)
        seen.add(item_id)
        ids.append(item_id)
    return ids


def response_item_ids(response: StoredResponse) -> list[str]:
    """The ids of a response's input and output items, each once, for `response_items`."""
    ids: list[str] = []
    output = response.body.get("output") if isinstance(response.body, dict) else None
    for item in [*response.input_items, *(output if isinstance(output, list) else [])]:
        item_id = item.get("id") if isinstance(item, dict) else None
        if isinstance(item_id, str) and item_id and "\x00" not in item_id and item_id not in ids:
            ids.append(item_id)
    return ids


def item_in(response: StoredResponse, item_id: str) -> dict[str, Any] | None:
    """The input or output item of `response` with that id (an output wins a tie)."""
    output = response.body.get("output") if isinstance(response.body, dict) else None
    for item in [*(output if isinstance(output, list) else []), *response.input_items]:
        if isinstance(item, dict) and item.get("id") == item_id:
            return item
    return None


def without_cycle(chain: list[StoredResponse]) -> list[StoredResponse]:
    """An oldest-first chain cut where it would repeat a response (newest side kept): a
    rewritten `previous_response_id` can close a loop, which the depth limit alone would turn
    into the same responses over and over."""
    seen: set[str] = set()
    kept: list[StoredResponse] = []
    for response in reversed(chain):
        if response.response_id in seen:
            break
        seen.add(response.response_id)
        kept.append(response)
    kept.reverse()
    return kept


def check_order(order: str) -> str:
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return order
