"""What both store backends share for embeddings: row shapes, the float32 codec, the protocol.

Vectors live in their own tables (`passage_vectors`, `message_vectors`, migration 4), one row
per embedded passage or message, keyed by the item and tagged with the embedding model, so a
change of model is noticed row by row and re-embedded in the background. `vector_state` holds,
per agent and kind, counters kept by triggers (rows, changes, removals): one primary-key read
tells the in-process cache whether its matrix is current, whichever process wrote or deleted.

Vectors are stored as little-endian float32 blobs (SQLite BLOB, Postgres bytea): compact, and
a whole matrix decodes with one `numpy.frombuffer` instead of one Python float per element.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..core.types import MessageHit, Passage

PASSAGE = "passage"
MESSAGE = "message"
KINDS = (PASSAGE, MESSAGE)

# Only what the client saw of a conversation is embedded: user and assistant text. Internal
# memory-tool steps are not visible (and not full-text searchable either); client tool results
# are mostly machine output that would crowd out the conversation in a semantic search.
EMBED_ROLES = ("user", "assistant")
ROLE_CODES = {"user": 1, "assistant": 2}

# Only the start of a long text is embedded (text-embedding-3-* accept 8191 tokens; 8,000
# characters stay well below that in any language) so one huge passage can never make a batch
# fail forever.
MAX_EMBED_CHARS = 8000

# `[embeddings] document_context_turns`: a message may be embedded together with the turns
# before it in its conversation (docs/search.md, "Turns embedded with their context"). Each
# earlier turn contributes at most its last CONTEXT_CHARS characters (the part the message
# answers), so the message's own text stays within a small model's window (all-MiniLM reads
# 256 word pieces); at most MAX_CONTEXT_TURNS of them.
CONTEXT_CHARS = 300
MAX_CONTEXT_TURNS = 3

# Pending rows are looked for in primary-key ranges of this width, so one catch-up query never
# scans (and holds a connection for) more than this many rows.
SCAN_ROWS = 20_000


def pack(vector: np.ndarray) -> bytes:
    """A vector as little-endian float32 bytes."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def unpack(blob: bytes, dim: int | None = None) -> np.ndarray:
    """The float32 vector stored in `blob` (a read-only view; copy before changing it)."""
    vector = np.frombuffer(blob, dtype="<f4")
    if dim is not None and vector.shape[0] != dim:
        raise ValueError(f"stored vector has {vector.shape[0]} dimensions, expected {dim}")
    return vector


def document_text(text: str, context: Sequence[str] = ()) -> str:
    """What is embedded for a message: the earlier turns `context` (oldest first), each on its
    own line, then the message's own text; within MAX_EMBED_CHARS. Without context, the text
    itself, so vectors stored before context existed are the same vectors."""
    parts = [c.strip() for c in context if c and c.strip()]
    if not parts:
        return text[:MAX_EMBED_CHARS]
    return "\n".join([*parts, text])[:MAX_EMBED_CHARS]


@dataclass(frozen=True)
class PendingText:
    """A passage or message that has no vector for the current model yet."""

    kind: str
    pk: int
    agent_pk: int
    text: str


@dataclass(frozen=True)
class PendingPage:
    """One step of a catch-up scan: what was found, and where the next step starts."""

    items: list[PendingText]
    cursor: int
    done: bool  # the scan reached the table's last row


@dataclass(frozen=True)
class VectorState:
    """Trigger-kept counters of one agent's vectors of one kind (all models together)."""

    rows: int = 0
    changes: int = 0  # +1 per insert or delete: any difference means the cache is stale
    removals: int = 0  # +1 per delete: a difference means appending new rows is not enough


@dataclass
class VectorRows:
    """Vector rows read for the cache, oldest first (by vector id).

    `scanned` counts every row read, of any model; only rows of the wanted model carry a
    vector (`pks`, `matrix` and the metadata line up with those).
    """

    state: VectorState
    scanned: int = 0
    max_id: int = 0
    pks: list[int] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    roles: list[int] = field(default_factory=list)  # messages: ROLE_CODES
    created: list[float] = field(default_factory=list)  # messages: created_at
    tags: list[list[str]] = field(default_factory=list)  # passages


class VectorStore(Protocol):
    """The vector methods a store offers (SQLiteVectors, PostgresVectors mixins)."""

    async def pending_texts(self, kind: str, model: str, after_pk: int,
                            limit: int, context_turns: int = 0) -> PendingPage: ...

    async def put_vectors(self, kind: str, model: str,
                          vectors: Sequence[tuple[int, np.ndarray]]) -> int: ...

    async def vector_state(self, kind: str, agent_pk: int) -> VectorState: ...

    async def load_vectors(self, kind: str, agent_pk: int, model: str,
                           after_id: int = 0) -> VectorRows: ...

    async def passages_by_pks(self, agent_pk: int, pks: Sequence[int]) -> list[Passage]: ...

    async def message_hits_by_pks(self, agent_pk: int,
                                  pks: Sequence[int]) -> list[tuple[int, MessageHit]]: ...
