"""Plain data that flows between the core, the store and the HTTP layer.

These are frozen-ish dataclasses with no behaviour beyond small helpers, so the pure core can be
tested with literals and both store backends can build them from rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
"""An OpenAI chat message exactly as sent to or received from the upstream."""

DEFAULT_BLOCK_LIMIT = 5000  # characters
MAX_BLOCK_LIMIT = 1_000_000  # characters; a block is rendered into every prompt


@dataclass
class Block:
    label: str
    value: str = ""
    description: str = ""
    limit: int = DEFAULT_BLOCK_LIMIT
    read_only: bool = False
    updated_at: float | None = None


@dataclass
class Agent:
    pk: int
    tenant: str
    agent_id: str
    created_at: float
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversation:
    pk: int
    agent_pk: int
    conversation_id: str
    created_at: float
    summary: str = ""
    resends_history: bool | None = None


@dataclass
class StoredMessage:
    """One row of a conversation's transcript (recall memory)."""

    seq: int
    data: Message
    turn_id: str
    created_at: float
    in_context: bool = True
    visible: bool = True
    superseded: bool = False
    tokens: int | None = None
    visible_hash: str | None = None
    pk: int | None = None
    parent_seq: int | None = None  # the message it follows in the tree (0: the root)
    path_hash: str | None = None  # names the path from the root to it (core/tree.py)

    @property
    def role(self) -> str:
        return str(self.data.get("role", ""))


@dataclass
class NewMessage:
    """A message about to be stored; the store assigns `seq`, `pk` and `created_at`."""

    data: Message
    visible: bool = True
    in_context: bool = True
    tokens: int | None = None
    visible_hash: str | None = None
    path_hash: str | None = None  # its path in the conversation's tree (core/tree.py)


@dataclass
class Passage:
    pk: int
    text: str
    tags: list[str]
    created_at: float
    score: float | None = None

    def rescored(self, score: float) -> Passage:
        """A copy with another score (what `dataclasses.replace` does, several times faster:
        ranking re-scores hundreds of candidates per search)."""
        return Passage(self.pk, self.text, self.tags, self.created_at, score)


@dataclass
class MessageHit:
    """A search result from recall memory."""

    conversation_id: str
    seq: int
    role: str
    text: str
    created_at: float
    score: float
    name: str | None = None  # the speaker's OpenAI `name`, when the message has one

    def rescored(self, score: float) -> MessageHit:
        """A copy with another score (as `Passage.rescored`)."""
        return MessageHit(self.conversation_id, self.seq, self.role, self.text,
                          self.created_at, score, self.name)


@dataclass
class Turn:
    turn_id: str
    conversation_pk: int
    status: str  # "open" | "done" | "failed"
    request_hash: str
    idempotency_key: str | None
    created_at: float
    response: dict[str, Any] | None = None
    first_seq: int | None = None
    finished_at: float | None = None


@dataclass
class BlockRevision:
    """One change of a block's value, kept so that operators can see and undo memory edits.

    `source` says who changed it: "tool:core_memory_append" / "tool:core_memory_replace" (the
    model, with the turn's id), "api", "undo" or "import". `id` and `created_at` are the store's.
    """

    label: str
    old_value: str
    new_value: str
    source: str
    turn_id: str | None = None
    created_at: float | None = None
    id: int | None = None


@dataclass
class TurnResult:
    """Everything a finished turn writes in one transaction."""

    messages: list[NewMessage]
    blocks: list[Block]
    passages: list[tuple[str, list[str]]]
    response: dict[str, Any]
    revisions: list[BlockRevision] = field(default_factory=list)
    """The turn's block edits in order (their turn_id is the finished turn's)."""
    max_passages: int = 0
    """[limits] passages_per_agent (0 = off), checked again when the passages are written:
    the turn's own allowance was counted when it started, and another turn of the same agent
    may have added passages since. Those beyond the cap then are not stored."""


@dataclass
class TurnState:
    """What a turn reads under its conversation's lock, in one store call."""

    conversation: Conversation
    last_turn: Turn | None
    blocks: list[Block]
    recall_messages: int
    archival_passages: int
    context: list[StoredMessage]
    epoch: int = 0  # the store's conversation epoch when it was read (see KnownContext)
    # how many rows had left the conversation's context when it was read (Postgres: migration
    # 14; 0 where the store counts the known rows instead, as SQLite does)
    left_context: int = 0


@dataclass(frozen=True)
class Assumed:
    """What an input planned before its turn read the conversation assumed of it: the newest
    message in context (its seq and path hash), the last turn (done), and what the
    conversation knows of its client. The store's read checks it before storing the input
    (turn/ahead.py)."""

    tip_seq: int
    tip_path_hash: str
    last_turn_id: str
    resends_history: bool | None


@dataclass(frozen=True)
class PlannedBegin:
    """A `begin_turn` planned before the read: an append of `inputs` under `parent_seq`, to be
    stored by the read itself when the conversation is as `assumed`."""

    turn_id: str
    request_hash: str
    inputs: list[NewMessage]
    parent_seq: int
    assumed: Assumed


@dataclass(frozen=True)
class KnownContext:
    """A conversation's context as this process last loaded it, handed back to the store so
    that loading it again decodes only the rows added since (proxy/store/known_context.py).

    Valid while the conversation is the same row: same `created_at` and the same store
    `epoch` — a counter the database bumps whenever any conversation is deleted, the only way
    a conversation's pk can come back with other messages under it."""

    epoch: int
    created_at: float
    messages: tuple[StoredMessage, ...]
    # the conversation's count of rows that left its context, as read with `messages`: while
    # it has not moved, none of them left (a store that keeps it need not count them)
    left_context: int = 0
