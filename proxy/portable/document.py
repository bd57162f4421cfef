"""The agent document (docs/api.md): a whole agent as one versioned JSON object, and back.

`export_document` turns a store dump into the document; `parse_document` turns a document (or
a Letta Agent File, see letta.py) into a dump for `Store.import_agent`. The round trip
is exact: every message row keeps its seq, raw OpenAI message, flags, token count and visible
hash, conversations keep their summary and head, turns their status and response, blocks their
`updated_at`, so the imported agent's next prompt is byte-identical to the original's.

Import checks what the store cannot: ids and labels follow the chat endpoint's id rules,
labels, conversation ids, seqs and turn ids are unique, values fit their limits. Problems are
400s naming the field (`conversations[0].messages[3].seq`), never echoing message text.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .. import views
from ..core.identity import validate_id
from ..core.messages import visible_hash
from ..core.types import (
    DEFAULT_BLOCK_LIMIT,
    MAX_BLOCK_LIMIT,
    Agent,
    Block,
    BlockRevision,
    Conversation,
    Passage,
    StoredMessage,
)
from ..errors import bad_request, validation_error
from ..store.admin_types import AgentDump, ConversationDump, TurnRecord
from .letta import is_letta, letta_dump
from .rows import checked_blocks, synthesize_turns

FORMAT = "memproxy.agent"
VERSION = 1


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Key = Annotated[str, AfterValidator(_no_nul)]
"""An identifier-like string (turn ids, hashes, sources): stored as is, so a NUL, which
Postgres text cannot hold, is refused rather than silently changed."""


class DocAgent(_Doc):
    id: str
    created_at: float
    settings: dict[str, Any] = Field(default_factory=dict)


class DocBlock(_Doc):
    object: Literal["block"] = "block"
    label: str
    value: str = ""
    description: str = ""
    limit: int = Field(DEFAULT_BLOCK_LIMIT, ge=1, le=MAX_BLOCK_LIMIT)
    read_only: bool = False
    chars: int | None = Field(None, description="Ignored on import (derived from value).")
    updated_at: float | None = None


class DocRevision(_Doc):
    object: Literal["block.revision"] = "block.revision"
    id: int | None = Field(None, description="Ignored on import (the database assigns ids).")
    label: Key
    old_value: str
    new_value: str
    source: Key
    turn_id: Key | None = None
    created_at: float


class DocMessage(_Doc):
    seq: int = Field(ge=1)
    message: dict[str, Any] = Field(description="The raw OpenAI message, as sent upstream.")
    turn_id: Key = Field(min_length=1)
    created_at: float
    in_context: bool = True
    visible: bool = True
    superseded: bool = False
    tokens: int | None = None
    visible_hash: Key | None = Field(None, description="Computed from the message if absent.")
    parent_seq: int | None = Field(
        None, ge=0, description="The message it follows in the conversation's tree (0: the "
        "root). Inferred from the order and the superseded flags when absent or not an "
        "earlier message (docs/conversation-tree.md).")


class DocTurn(_Doc):
    turn_id: Key = Field(min_length=1)
    status: Literal["open", "done", "failed"]
    request_hash: Key = ""
    idempotency_key: Key | None = None
    created_at: float
    finished_at: float | None = None
    response: dict[str, Any] | None = None
    first_seq: int | None = None


class DocConversation(_Doc):
    id: str
    created_at: float
    summary: str = ""
    resends_history: bool | None = None
    head_hash: Key | None = None
    messages: list[DocMessage] = Field(default_factory=list)
    turns: list[DocTurn] | None = Field(
        None, description="The conversation's turns, oldest first; derived from the messages' "
                          "turn ids when absent.")


class DocPassage(_Doc):
    text: str
    tags: list[str] = Field(default_factory=list)
    created_at: float


class AgentDocument(_Doc):
    """The versioned export of one agent (`GET /v1/agents/{a}/export`)."""

    format: Literal["memproxy.agent"]
    version: Literal[1]
    exported_at: float
    agent: DocAgent
    blocks: list[DocBlock] = Field(default_factory=list)
    block_history: list[DocRevision] = Field(default_factory=list)
    conversations: list[DocConversation] = Field(default_factory=list)
    passages: list[DocPassage] = Field(default_factory=list)


# --- export --------------------------------------------------------------------------------
def export_document(dump: AgentDump, now: float) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": VERSION, "exported_at": now,
        "agent": {"id": dump.agent.agent_id, "created_at": dump.agent.created_at,
                  "settings": dump.agent.settings},
        "blocks": [views.block_object(b) for b in dump.blocks],
        "block_history": [views.revision_object(r) for r in dump.revisions],
        "conversations": [_conversation(c) for c in dump.conversations],
        "passages": [{"text": p.text, "tags": p.tags, "created_at": p.created_at}
                     for p in dump.passages],
    }


def _conversation(c: ConversationDump) -> dict[str, Any]:
    return {
        "id": c.conversation.conversation_id, "created_at": c.conversation.created_at,
        "summary": c.conversation.summary, "resends_history": c.conversation.resends_history,
        "head_hash": c.head_hash,
        "messages": [{"seq": m.seq, "message": m.data, "turn_id": m.turn_id,
                      "created_at": m.created_at, "in_context": m.in_context,
                      "visible": m.visible, "superseded": m.superseded, "tokens": m.tokens,
                      "visible_hash": m.visible_hash, "parent_seq": m.parent_seq}
                     for m in c.messages],
        "turns": [{"turn_id": t.turn_id, "status": t.status, "request_hash": t.request_hash,
                   "idempotency_key": t.idempotency_key, "created_at": t.created_at,
                   "finished_at": t.finished_at, "response": t.response,
                   "first_seq": t.first_seq} for t in c.turns],
    }


# --- import --------------------------------------------------------------------------------
def parse_document(body: dict[str, Any], now: float) -> tuple[str | None, AgentDump]:
    """(the document's agent id, the dump to import) of a memproxy document or a Letta file."""
    if body.get("format") == FORMAT:
        try:
            document = AgentDocument.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        return document.agent.id, _dump(document)
    if "format" not in body and is_letta(body):
        return letta_dump(body, now)
    raise bad_request(f"not an agent document: expected \"format\": \"{FORMAT}\" or a Letta"
                      " Agent File (.af)", param="format", code="invalid_document")


def _messages(conv: DocConversation, field: str) -> list[StoredMessage]:
    seqs: set[int] = set()
    out = []
    for j, m in enumerate(conv.messages):
        where = f"{field}.messages[{j}]"
        if m.seq in seqs:
            raise bad_request(f"{where}.seq: seq {m.seq} is given twice", param=f"{where}.seq",
                              code="duplicate_seq")
        seqs.add(m.seq)
        if not isinstance(m.message.get("role"), str):
            raise bad_request(f"{where}.message.role: a string is required",
                              param=f"{where}.message.role", code="invalid_body")
        hashed = m.visible_hash
        if hashed is None and m.visible:
            hashed = visible_hash(m.message)
        out.append(StoredMessage(m.seq, m.message, m.turn_id, m.created_at, m.in_context,
                                 m.visible, m.superseded, m.tokens, hashed,
                                 parent_seq=m.parent_seq))
    return out


def _dump(doc: AgentDocument) -> AgentDump:
    blocks = checked_blocks([Block(b.label, b.value, b.description, b.limit, b.read_only,
                                   b.updated_at) for b in doc.blocks])
    conversations: list[ConversationDump] = []
    seen_ids: set[str] = set()
    seen_turns: set[str] = set()
    for i, conv in enumerate(doc.conversations):
        field = f"conversations[{i}]"
        validate_id(conv.id, f"{field}.id")
        if conv.id in seen_ids:
            raise bad_request(f"{field}.id: conversation {conv.id!r} is given twice",
                              param=f"{field}.id", code="duplicate_id")
        seen_ids.add(conv.id)
        messages = _messages(conv, field)
        turns = synthesize_turns(messages) if conv.turns is None else [
            TurnRecord(t.turn_id, t.status, t.request_hash, t.idempotency_key, t.created_at,
                       t.finished_at, t.response, t.first_seq) for t in conv.turns]
        for k, turn in enumerate(turns):
            if turn.turn_id in seen_turns:
                raise bad_request(f"{field}.turns[{k}].turn_id: turn ids must be unique",
                                  param=f"{field}.turns[{k}].turn_id", code="duplicate_id")
            seen_turns.add(turn.turn_id)
        conversations.append(ConversationDump(
            Conversation(0, 0, conv.id, conv.created_at, conv.summary, conv.resends_history),
            conv.head_hash, messages, turns))
    return AgentDump(
        agent=Agent(0, "", doc.agent.id, doc.agent.created_at, doc.agent.settings),
        blocks=blocks,
        revisions=[BlockRevision(r.label, r.old_value, r.new_value, r.source, r.turn_id,
                                 r.created_at) for r in doc.block_history],
        conversations=conversations,
        passages=[Passage(0, p.text, p.tags, p.created_at) for p in doc.passages],
    )
