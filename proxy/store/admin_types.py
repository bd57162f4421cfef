"""Plain data for the operator side of the store: the agents REST API, export and import.

Kept apart from `core/types.py` because the turn path never needs them. An `AgentDump` is the
whole agent as rows (what `export_agent` reads in one snapshot and `import_agent` writes in one
transaction); `proxy/portable/document.py` turns it into the versioned JSON document and back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ..core.types import Agent, Block, BlockRevision, Conversation, Passage, StoredMessage


class AgentExistsError(Exception):
    """An agent with that tenant and id already exists (create or import without replace)."""


class BlockTooLongError(ValueError):
    """A value would exceed its block's character limit."""

    def __init__(self, label: str, length: int, limit: int) -> None:
        super().__init__(f"block {label!r} would have {length} characters, over its limit of"
                         f" {limit}")
        self.label, self.length, self.limit = label, length, limit


@dataclass
class AgentStats:
    conversations: int = 0
    messages: int = 0  # recall memory: visible, not superseded, every conversation
    passages: int = 0


@dataclass
class ConversationStats:
    conversation: Conversation
    messages: int  # visible, not superseded
    last_message_at: float | None


@dataclass
class TurnRecord:
    """A turn row as exported: enough to replay a finished turn and to continue an open one."""

    turn_id: str
    status: str
    request_hash: str
    idempotency_key: str | None
    created_at: float
    finished_at: float | None = None
    response: dict[str, Any] | None = None
    first_seq: int | None = None


@dataclass
class ConversationDump:
    conversation: Conversation
    head_hash: str | None
    messages: list[StoredMessage]  # every row: internal steps and superseded ones included
    turns: list[TurnRecord]  # oldest first


@dataclass
class AgentDump:
    agent: Agent  # pk is meaningless outside the database it was read from
    blocks: list[Block]
    revisions: list[BlockRevision] = field(default_factory=list)  # oldest first
    conversations: list[ConversationDump] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)  # oldest first


def turn_renames(existing: set[str], dump: AgentDump) -> dict[str, str]:
    """New ids for the dump's turns whose ids another agent's turns already use (turn ids are
    unique in the database): importing a copy next to its original must not collide."""
    return {t.turn_id: uuid.uuid4().hex for c in dump.conversations for t in c.turns
            if t.turn_id in existing}


def import_revisions(dump: AgentDump, old_values: dict[str, str]) -> list[BlockRevision]:
    """One "import" revision per block whose value the import changes."""
    return [BlockRevision(b.label, old_values.get(b.label, ""), b.value, "import")
            for b in dump.blocks if b.value != old_values.get(b.label, "")]
