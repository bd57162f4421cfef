"""Pydantic models of deleting, forgetting, the audit log and usage (docs/forgetting.md).
Like schemas.py: strict request bodies, response models for `/openapi.json` only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_FORGET_ITEMS = 10_000
MAX_SEQ = 2**31 - 1  # a message seq is a 32-bit integer on Postgres
MAX_PK = 2**63 - 1  # a passage id a 64-bit one


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageKey(_Body):
    conversation_id: str = Field(min_length=1, max_length=200)
    seq: int = Field(ge=1, le=MAX_SEQ)


class ForgetRequest(_Body):
    """What to forget: messages matching `query` (every word of it) and/or named messages, and
    archival passages matching `query` and/or named passages. At least one is needed."""

    query: str | None = Field(None, max_length=2000, description=(
        "Forget every message and passage whose text holds all the words of this."))
    messages: list[MessageKey] = Field(default_factory=list, max_length=MAX_FORGET_ITEMS)
    passages: list[Annotated[int, Field(ge=1, le=MAX_PK)]] = Field(
        default_factory=list, max_length=MAX_FORGET_ITEMS)
    archival: bool = Field(True, description="Also forget passages matching `query`.")


class Removed(_Out):
    conversations: int
    messages: int
    passages: int
    responses: int
    blocks: int


class ConversationDeleted(_Out):
    object: Literal["conversation.deleted"]
    id: str
    deleted: bool
    removed: Removed


class ForgetResult(_Out):
    object: Literal["forget.result"]
    agent_id: str
    removed: Removed


class AuditEntryObject(_Out):
    object: Literal["forget_log.entry"]
    id: int
    agent_id: str
    actor: str
    kind: str
    conversations: int
    messages: int
    passages: int
    responses: int
    blocks: int
    created_at: float


class AuditList(_Out):
    object: Literal["list"]
    data: list[AuditEntryObject]
    has_more: bool


class UsageObject(_Out):
    object: Literal["usage"]
    tenant: str
    agents: int
    passages: int
    messages: int
    storage_bytes: int | None = Field(description="The last background measurement (with"
                                      " storage_mb_per_tenant set; else null).")
    limits: dict[str, int]


class Purged(_Out):
    object: Literal["purge"]
    purged: bool
