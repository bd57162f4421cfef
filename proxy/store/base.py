"""The Store protocol: everything the core needs from a database, and nothing more.

Both backends (SQLite now, Postgres later) implement it and pass the same tests. Methods are
coarse on purpose: a turn costs a handful of statements, not one per message.
"""

from __future__ import annotations

from typing import Protocol

from ..core.types import (
    Agent,
    Block,
    Conversation,
    MessageHit,
    NewMessage,
    Passage,
    StoredMessage,
    Turn,
    TurnResult,
    TurnState,
)


class Store(Protocol):
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""

    # --- agents and blocks -------------------------------------------------------------
    async def get_agent(self, tenant: str, agent_id: str) -> Agent | None: ...

    async def ensure_agent(
        self, tenant: str, agent_id: str, default_blocks: list[Block]
    ) -> Agent:
        """Return the agent, creating it with `default_blocks` if it does not exist."""

    async def list_agents(self, tenant: str | None) -> list[Agent]:
        """All agents of `tenant`, or of every tenant when it is None."""

    async def delete_agent(self, agent_pk: int) -> None: ...

    async def update_agent_settings(self, agent_pk: int, settings: dict) -> None:
        """Replace the agent's settings document (what memproxy learned, operator choices)."""

    async def get_blocks(self, agent_pk: int) -> list[Block]: ...

    async def put_block(self, agent_pk: int, block: Block) -> None:
        """Insert or replace one block."""

    # --- conversations and messages -----------------------------------------------------
    async def ensure_conversation(self, agent_pk: int, conversation_id: str) -> Conversation: ...

    async def list_conversations(self, agent_pk: int) -> list[Conversation]: ...

    async def context_messages(self, conversation_pk: int) -> list[StoredMessage]:
        """Messages in the context window (in_context, not superseded), oldest first."""

    async def visible_transcript(self, conversation_pk: int) -> list[StoredMessage]:
        """What the client has seen (visible, not superseded), oldest first."""

    async def list_messages(
        self,
        conversation_pk: int,
        *,
        after_seq: int = 0,
        limit: int = 100,
        include_superseded: bool = False,
    ) -> list[StoredMessage]: ...

    async def count_messages(self, agent_pk: int) -> int: ...

    async def search_messages(
        self,
        agent_pk: int,
        query: str,
        *,
        roles: list[str] | None = None,
        limit: int = 10,
        start: float | None = None,
        end: float | None = None,
    ) -> list[MessageHit]:
        """Ranked full-text search over the agent's messages (evicted ones included)."""

    # --- turns ----------------------------------------------------------------------------
    async def begin_turn(
        self,
        conversation_pk: int,
        turn_id: str,
        request_hash: str,
        idempotency_key: str | None,
        inputs: list[NewMessage],
        supersede_from_seq: int | None = None,
    ) -> int:
        """Store the turn's input before any upstream call, in one transaction.

        With `supersede_from_seq`, stored messages from that seq on are marked superseded
        (regenerate / edit) in the same transaction. Returns the seq of the first input (the
        inputs have consecutive seqs), or the next free seq when there are none.
        """

    async def load_turn_state(self, agent_pk: int, conversation_pk: int) -> TurnState:
        """Conversation, last turn, blocks, memory counts and context, in one call: what a
        turn reads once it holds the conversation. LookupError if the conversation is gone."""

    async def discard_turn(self, turn_id: str, error: dict) -> None:
        """Fail the turn and supersede its messages: the upstream rejected the request itself."""

    async def reopen_turn(self, turn_id: str) -> None:
        """Mark a failed turn open again so that it can be continued."""

    async def finish_turn(self, turn_id: str, conversation_pk: int, agent_pk: int,
                          result: TurnResult) -> None:
        """Write the turn's steps, final message, memory edits and response atomically."""

    async def fail_turn(self, turn_id: str, error: dict) -> None: ...

    async def find_turn(
        self,
        conversation_pk: int,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> Turn | None:
        """The newest turn with that idempotency key (or else request hash)."""

    async def last_turn(self, conversation_pk: int) -> Turn | None: ...

    # --- archival memory -----------------------------------------------------------------
    async def insert_passage(self, agent_pk: int, text: str, tags: list[str]) -> Passage: ...

    async def search_passages(
        self, agent_pk: int, query: str, *, tags: list[str] | None = None, top_k: int = 5
    ) -> list[Passage]: ...

    async def list_passages(
        self, agent_pk: int, *, limit: int = 100, offset: int = 0
    ) -> list[Passage]: ...

    async def delete_passage(self, agent_pk: int, passage_pk: int) -> bool: ...

    async def count_passages(self, agent_pk: int) -> int: ...

    # --- api keys -------------------------------------------------------------------------
    async def add_api_key(self, key_hash: str, tenant: str) -> None: ...

    async def tenant_for_key_hash(self, key_hash: str) -> str | None: ...

    async def count_api_keys(self) -> int: ...

    # --- per-model statistics (token calibration) -----------------------------------------
    async def get_model_stats(self, model: str) -> dict | None: ...

    async def put_model_stats(self, model: str, data: dict) -> None: ...

    # --- conversation state ---------------------------------------------------------------
    async def get_conversation(self, agent_pk: int, conversation_id: str) -> Conversation | None:
        """The conversation if it exists (no creation), for lookups that must 404."""

    async def update_conversation(
        self, conversation_pk: int, *, summary: str | None = None,
        resends_history: bool | None = None, head_hash: str | None = None,
    ) -> None: ...

    async def find_conversation_by_head(
        self, agent_pk: int, head_hash: str
    ) -> Conversation | None:
        """The newest conversation whose first exchange hashes to `head_hash` (see
        `core.messages.head_hash`)."""

    async def evict_messages(self, conversation_pk: int, through_seq: int, summary: str) -> int:
        """Take messages up to `through_seq` out of context and store the new summary, atomically."""
