"""The data of forgetting (docs/forgetting.md): what a delete or a forget removed, and the
audit log's entries. Counts only: the log never holds what was forgotten."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ..errors import quota_exceeded

# The kinds of the audit log.
DELETE_CONVERSATION = "delete_conversation"
FORGET = "forget"
RETENTION = "retention"


@dataclass
class Removed:
    """How many rows a delete, a forget or a retention pass removed (or emptied)."""

    conversations: int = 0
    messages: int = 0
    passages: int = 0
    responses: int = 0
    blocks: int = 0  # memory blocks with lines removed (a forget query's words)

    def add(self, other: Removed) -> None:
        self.conversations += other.conversations
        self.messages += other.messages
        self.passages += other.passages
        self.responses += other.responses
        self.blocks += other.blocks

    @property
    def empty(self) -> bool:
        return not (self.conversations or self.messages or self.passages or self.responses
                    or self.blocks)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    tenant: str
    agent_id: str
    actor: str
    kind: str
    removed: Removed
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"object": "forget_log.entry", "id": self.id, "agent_id": self.agent_id,
                "actor": self.actor, "kind": self.kind, **self.removed.as_dict(),
                "created_at": self.created_at}


@dataclass(frozen=True)
class Usage:
    """A tenant's counts, for quotas and `GET /v1/usage` (no content)."""

    agents: int
    passages: int
    messages: int


def check_import_passages(dump: Any, max_passages: int) -> None:
    """An imported agent brings all its passages at once: more than the quota is refused
    (inside the import's transaction, before anything is written)."""
    if max_passages and len(dump.passages) > max_passages:
        raise quota_exceeded("passages_per_agent", max_passages)


class ForgetStore(Protocol):
    """Deleting and forgetting, implemented by each backend's `forget.py`."""

    async def delete_conversation(self, tenant: str, agent_id: str, agent_pk: int,
                                  conversation_id: str, actor: str) -> Removed | None:
        """Delete one conversation and everything of it (messages with their index and vector
        rows, turns, tree rows, summary jobs, leases, the Responses API's responses of it);
        None when there is no such conversation. Recorded in the audit log."""
        ...

    async def forget(self, tenant: str, agent_id: str, agent_pk: int,
                     messages: list[tuple[str, int]], passage_pks: list[int], *, actor: str,
                     kind: str = FORGET, words: list[str] | None = None) -> Removed:
        """Empty these messages ((conversation id, seq)) and delete these passages of the
        agent, and with `words` remove the lines holding them all from its memory blocks and
        their revisions, in one transaction, recorded in the audit log (core/forgetting.py)."""
        ...

    async def forget_candidates(self, agent_pk: int, query: str, limit: int
                                ) -> list[tuple[str, int, str]]:
        """(conversation id, seq, text) of not-yet-forgotten messages the full-text index
        matches for any word of `query`, superseded ones included; unranked."""
        ...

    async def expired_messages(self, agent_pk: int, before: float, limit: int
                               ) -> list[tuple[str, int]]:
        """Up to `limit` of the agent's messages written before `before`, not yet forgotten."""
        ...

    async def expire_agent_responses(self, tenant: str, agent_id: str, before: float) -> int:
        """Delete the agent's stored Responses API responses created before `before`."""
        ...

    async def retention_agents(self, after_pk: int, limit: int
                               ) -> list[tuple[int, str, str, dict]]:
        """A page of agents by pk: (pk, tenant, agent_id, settings)."""
        ...

    async def audit_log(self, tenant: str, agent_id: str | None, limit: int
                        ) -> list[AuditEntry]:
        """The tenant's audit entries (of one agent, when given), newest first."""
        ...

    async def tenant_usage(self, tenant: str) -> Usage: ...

    async def purge(self) -> None:
        """Erase physically what forgetting left behind (index segments, logs, dead rows)."""
        ...

    async def storage_by_tenant(self) -> dict[str, int]:
        """Every tenant's stored bytes (messages, passages, blocks); a scan, for the meter."""
        ...

    async def usage_by_tenant(self) -> dict[str, tuple[int, int, int]]:
        """Every tenant's (agents, passages, messages), for /metrics."""
        ...
