"""Pydantic models of the agents REST API (docs/api.md): request bodies and response objects.

Request bodies are validated strictly (no coercion) and reject unknown fields, so a typo is a
400 naming the field rather than a silently ignored setting. Response models are not used to
build responses (the handlers write plain dicts, see proxy/views.py); they describe them for
`GET /openapi.json`, and forbid extra fields so the tests, which validate every response
against that document, notice any drift between the two.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from ..core.types import DEFAULT_BLOCK_LIMIT, MAX_BLOCK_LIMIT


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- request bodies ------------------------------------------------------------------------
class BlockInput(_Body):
    """A block given when creating an agent."""

    label: str
    value: str = ""
    description: str = ""
    limit: int = Field(DEFAULT_BLOCK_LIMIT, ge=1, le=MAX_BLOCK_LIMIT)
    read_only: bool = False


class AgentCreate(_Body):
    id: str
    blocks: list[BlockInput] | None = Field(
        None, description="The agent's blocks; without them, the configured default blocks.")
    settings: dict[str, Any] = Field(default_factory=dict)


class AgentPatch(_Body):
    settings: dict[str, Any] = Field(
        description="Keys to set; a null value removes the key.")


class BlockPut(_Body):
    value: str
    description: str | None = Field(None, description="Kept when omitted (\"\" for a new block).")
    limit: int | None = Field(None, ge=1, le=MAX_BLOCK_LIMIT,
                              description=f"Kept when omitted ({DEFAULT_BLOCK_LIMIT} for a new "
                                          "block).")
    read_only: bool | None = Field(None, description="Kept when omitted (false for a new block).")


class ConversationCreate(_Body):
    id: str = Field(description="The new conversation's id (the rules of agent ids).")


class UndoRequest(_Body):
    revision: int | None = Field(None, description="The revision to undo; default the newest.")


class PassageCreate(_Body):
    text: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)


# --- response objects ----------------------------------------------------------------------
class BlockObject(_Out):
    object: Literal["block"]
    label: str
    value: str
    description: str
    limit: int
    read_only: bool
    chars: int
    updated_at: float | None


class AgentStatsObject(_Out):
    conversations: int
    messages: int
    passages: int


class AgentObject(_Out):
    object: Literal["agent"]
    id: str
    tenant: str
    created_at: float
    settings: dict[str, Any]
    stats: AgentStatsObject
    blocks: list[BlockObject] | None = Field(None, description="Absent in lists.")


class RevisionObject(_Out):
    object: Literal["block.revision"]
    id: int
    label: str
    old_value: str
    new_value: str
    source: str = Field(description="tool:core_memory_append, tool:core_memory_replace, api, "
                                    "undo or import")
    turn_id: str | None
    created_at: float


class ConversationObject(_Out):
    object: Literal["conversation"]
    id: str
    created_at: float
    summary: str
    messages: int
    last_message_at: float | None


class MessageObject(_Out):
    object: Literal["message"]
    seq: int
    role: str
    content: Any = Field(description="A string, an array of content parts, or null.")
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    turn_id: str
    created_at: float
    in_context: bool
    visible: bool
    superseded: bool
    parent_seq: int | None = Field(None, description="The message it follows in the"
                                   " conversation tree (0: the first); messages sharing a"
                                   " parent are branches (docs/conversation-tree.md).")
    score: float | None = Field(None, description="Only in search results.")
    conversation_id: str | None = Field(None, description="Only in agent-wide search results.")


class PassageObject(_Out):
    object: Literal["passage"]
    id: int
    text: str
    tags: list[str]
    created_at: float
    score: float | None = Field(None, description="Only in search results.")


class AgentList(_Out):
    object: Literal["list"]
    data: list[AgentObject]
    has_more: bool
    next_after: str | None = Field(description="Pass back as ?after= for the next page.")


class BlockList(_Out):
    object: Literal["list"]
    data: list[BlockObject]
    has_more: bool


class RevisionList(_Out):
    object: Literal["list"]
    data: list[RevisionObject]
    has_more: bool


class ConversationList(_Out):
    object: Literal["list"]
    data: list[ConversationObject]
    has_more: bool


class MessageList(_Out):
    object: Literal["list"]
    data: list[MessageObject]
    has_more: bool
    next_after: int | None = Field(None, description="Pass back as ?after= (pages, not "
                                                     "searches).")
    next_before: int | None = Field(None, description="order=desc pages only: pass back as"
                                    " ?before= for the older page.")


class PassageList(_Out):
    object: Literal["list"]
    data: list[PassageObject]
    has_more: bool


class AgentDeleted(_Out):
    object: Literal["agent.deleted"]
    id: str
    deleted: Literal[True]


class BlockDeleted(_Out):
    object: Literal["block.deleted"]
    label: str
    deleted: Literal[True]


class PassageDeleted(_Out):
    object: Literal["passage.deleted"]
    id: int
    deleted: Literal[True]


class ContextRecall(_Out):
    """Automatic recall for the next turn: whether it applies to the model, its budget, and
    the section it would add for `?message=` (null without one, or with no hit)."""

    mode: str
    applies: bool
    budget_tokens: int
    section: str | None


class ContextReport(_Out):
    """GET /v1/agents/{a}/context: the next prompt's token breakdown (docs/paging.md)."""

    agent_id: str
    conversation_id: str
    model: str
    window: int
    tokens: dict[str, int]
    usage: float | None
    calibration_factor: float
    messages_in_context: int
    summary: str
    tools: bool
    auto_recall: ContextRecall


class ContextRequest(_Out):
    """GET /v1/agents/{a}/context?format=raw: the body of the next turn's first upstream call,
    made by the turn's own code with its effects captured (turn/preview.py)."""

    object: Literal["context.request"]
    agent_id: str
    conversation_id: str
    model: str
    request: dict[str, Any] = Field(description="The chat completions body the upstream will"
                                    " receive: model, messages (the system message with the"
                                    " memory blocks first), tools, tool_choice, stream and"
                                    " the model parameters.")
    paged_out: int = Field(description="Messages the next turn pages out before this call.")


class ContextAnswer(RootModel[ContextReport | ContextRequest]):
    """The token breakdown, or with `format=raw` the next upstream request."""


class ErrorDetail(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Out):
    error: ErrorDetail
