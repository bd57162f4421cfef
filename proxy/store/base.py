"""The store's protocols, one per role, and `Store`, all of them at once.

Both backends (SQLite and Postgres) implement `Store` and pass the same contract tests. Code
takes the role it uses (`TurnStore`, `SearchStore`, `ResponseStore`, ...), so that what it
depends on is visible and a test fake implements a dozen methods, not sixty. Methods are
coarse on purpose: a turn costs a handful of statements, not one per message.

Embedding vectors (vector_base.VectorStore) and conversation leases (leases.LeaseStore) are
protocols of their own, next to their data types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..core.hit_context import NeighbourSource
from ..core.tools import SearchBackend
from ..core.tree import Node
from ..core.types import (
    Agent,
    Block,
    BlockRevision,
    Conversation,
    KnownContext,
    NewMessage,
    Passage,
    StoredMessage,
    Turn,
    TurnResult,
    TurnState,
)
from .admin_types import AgentDump, AgentStats, ConversationStats
from .forget_types import ForgetStore
from .response_types import ApiConversation, StoredResponse
from .summary_jobs import SummaryJobStore, SummaryWork

if TYPE_CHECKING:
    from .leases import LeaseClaim, LeaseStore


class StoreLifecycle(Protocol):
    """Opening, closing and health: what the app and the CLI do with any store."""

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""


class TurnStore(Protocol):
    """What a stateful turn needs (proxy/turn/): find or create its agent and conversation,
    load its state, store its input before the upstream call and its result after, fail,
    discard or reopen it, find earlier turns for replays, page messages out of context, and
    the leases that keep one turn at a time per conversation."""

    def turn_leases(self) -> LeaseStore:
        """A lease backend for one `ConversationLocks` (locks.py): how this store's processes
        keep one turn at a time per conversation. Closed with the store."""

    async def ensure_agent(
        self, tenant: str, agent_id: str, default_blocks: list[Block], *, max_agents: int = 0
    ) -> Agent:
        """Return the agent, creating it with `default_blocks` if it does not exist; creating
        one past `max_agents` of its tenant (0 = no quota) raises 403 quota_exceeded."""

    async def update_agent_settings(self, agent_pk: int, settings: dict) -> None:
        """Replace the agent's settings document (what memproxy learned, operator choices)."""

    async def ensure_conversation(self, agent_pk: int, conversation_id: str) -> Conversation: ...

    async def find_nodes(self, agent_pk: int, path_hashes: list[str], *,
                         conversation_pk: int | None = None) -> list[Node]:
        """The stored visible messages whose path hash is one of `path_hashes` (core/tree.py),
        in one conversation or, with `conversation_pk` None, in any of the agent's (then each
        node names its conversation). Superseded ones included (`Node.active` False)."""

    async def find_anchor(self, agent_pk: int, visible_hashes: list[str], *,
                          conversation_pk: int | None = None) -> Node | None:
        """The stored visible message whose visible ancestors, itself included, end with
        exactly `visible_hashes` (oldest first), on any path: the active one first, then the
        newest stored."""

    async def path_tip(self, conversation_pk: int) -> Node | None:
        """The active path's last message (None for an empty conversation)."""

    async def update_conversation(
        self, conversation_pk: int, *, summary: str | None = None,
        resends_history: bool | None = None, head_hash: str | None = None,
    ) -> None: ...

    async def load_turn_state(self, agent_pk: int, conversation_pk: int,
                              known: KnownContext | None = None, *,
                              lease: LeaseClaim | None = None) -> TurnState:
        """Conversation, last turn, blocks, memory counts and context, in one call: what a
        turn reads once it holds the conversation. LookupError if the conversation is gone.

        `known` is the context this process loaded last time for the conversation: when it
        is still valid (store/known_context.py), only rows added since are decoded. The
        result is the same with or without it.

        `lease` is given only to a store whose `turn_leases()` says `leases_in_read`
        (Postgres): the same round trip takes the conversation's lease, or raises LeaseBusy
        (turn/locks.py). Other stores never receive one."""

    async def visible_transcript(self, conversation_pk: int) -> list[StoredMessage]:
        """What the client has seen (visible, not superseded), oldest first."""

    async def list_messages(
        self,
        conversation_pk: int,
        *,
        after_seq: int = 0,
        limit: int = 100,
        include_superseded: bool = False,
        before_seq: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredMessage]:
        """A page of the full transcript (internal steps included): seq > after_seq and, when
        given, seq < before_seq; oldest first, or newest first (a transcript opened at its
        end, paged backwards with `before_seq`)."""

    async def begin_turn(
        self,
        conversation_pk: int,
        turn_id: str,
        request_hash: str,
        idempotency_key: str | None,
        inputs: list[NewMessage],
        supersede_from_seq: int | None = None,
        *,
        parent_seq: int | None = None,
        move: bool = False,
    ) -> int:
        """Store the turn's input before any upstream call, in one transaction.

        The inputs hang under `parent_seq` (0: the root) as a chain, each the parent of the
        next, with the path hashes they carry; the turn records the message its reply will
        follow (its last input, else `parent_seq`). The active path's messages after
        `parent_seq` are superseded (a regenerate, an edit: kept as a branch). With `move`,
        `parent_seq` may be on another branch: its path becomes the active one again, and
        when the active path's summary is no longer on it, the newest summary of the new path
        is the conversation's and exactly the rows after it are in context (core/tree.py).
        Without `parent_seq` the inputs follow the conversation's newest message; with
        `supersede_from_seq`, messages from that seq on are superseded first and the inputs
        follow the message before it.
        Returns the seq of the first input (the inputs have consecutive seqs), or the next
        free seq when there are none.
        """

    async def reopen_turn(self, turn_id: str) -> None:
        """Mark a failed turn open again so that it can be continued."""

    async def finish_turn(self, turn_id: str, conversation_pk: int, agent_pk: int,
                          result: TurnResult) -> int:
        """Write the turn's steps, final message, memory edits and response atomically; the
        messages chain from the message `begin_turn` recorded for the turn's reply. Returns
        how many of `result.passages` were stored: fewer when `result.max_passages` was
        reached meanwhile (another turn of the agent added passages after this one began)."""

    async def fail_turn(self, turn_id: str, error: dict) -> None: ...

    async def discard_turn(self, turn_id: str, error: dict) -> None:
        """Fail the turn and supersede its messages: the upstream rejected the request itself."""

    async def find_turn(
        self,
        conversation_pk: int,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> Turn | None:
        """The newest turn with that idempotency key (or else request hash)."""

    async def evict_messages(self, conversation_pk: int, through_seq: int, summary: str, *,
                             job: SummaryWork | None = None, expected: str | None = None
                             ) -> int:
        """Take messages up to `through_seq` out of context and store the new summary,
        atomically: as the conversation's and as the summary of the path through the row
        `through_seq` (what a branch leaving the path later falls back to).

        With `job` (background summaries), `summary` is the pending one and the job that
        writes the real one is queued in the same transaction (summary_jobs.py); `expected`
        is the summary the turn read: `SummaryChanged` (nothing written) when the
        conversation has no job and shows another one, i.e. a background summary completed
        since the turn read it."""


class LookupStore(Protocol):
    """Reads by key that never create anything: an agent, a conversation, its last turn,
    blocks, context and memory counts (the context report, REST lookups that must 404)."""

    async def get_agent(self, tenant: str, agent_id: str) -> Agent | None: ...

    async def get_conversation(self, agent_pk: int, conversation_id: str) -> Conversation | None:
        """The conversation if it exists (no creation), for lookups that must 404."""

    async def last_turn(self, conversation_pk: int) -> Turn | None: ...

    async def get_blocks(self, agent_pk: int) -> list[Block]: ...

    async def context_messages(self, conversation_pk: int) -> list[StoredMessage]:
        """Messages in the context window (in_context, not superseded), oldest first."""

    async def count_messages(self, agent_pk: int) -> int: ...

    async def count_passages(self, agent_pk: int) -> int: ...


class SearchStore(SearchBackend, NeighbourSource, Protocol):
    """Ranked full-text search of an agent's messages (recall, evicted ones included) and
    passages (archival memory): what the memory tools search (`core.tools.SearchBackend`,
    declared by the core that uses it), directly or through hybrid search; and the turns
    around hits (`core.hit_context.NeighbourSource`), read by key whatever ranked them."""


class AdminStore(Protocol):
    """The operator API (agents REST, block history, passages, transcripts, export/import;
    store/*/admin*.py): listings, writes with history, deletes."""

    async def list_agents_page(
        self, tenant: str | None, *, after: tuple[str, str] | None = None, limit: int = 100
    ) -> list[Agent]:
        """Agents of `tenant` (every tenant when None) ordered by (tenant, agent_id) in byte
        order, starting after the (tenant, agent_id) cursor `after`."""

    async def agent_stats(self, agent_pks: list[int]) -> dict[int, AgentStats]:
        """Conversations, recall messages and passages per agent, in one query."""

    async def create_agent(
        self, tenant: str, agent_id: str, blocks: list[Block], settings: dict,
        *, source: str = "api", max_agents: int = 0,
    ) -> Agent | None:
        """Create the agent with these blocks and settings; None if it already exists. Blocks
        with a value are recorded as revisions from "" with `source`."""

    async def merge_agent_settings(self, agent_pk: int, patch: dict) -> dict | None:
        """Merge `patch` into the settings atomically (a None value removes the key); the new
        settings, or None if the agent is gone."""

    async def delete_agent(self, agent_pk: int) -> None: ...

    async def get_block(self, agent_pk: int, label: str) -> Block | None: ...

    async def write_block(
        self, agent_pk: int, block: Block, *, source: str, turn_id: str | None = None
    ) -> Block:
        """Insert or update one block and record a revision if its value changed, atomically.
        Returns the stored block (updated_at = now)."""

    async def delete_block(self, agent_pk: int, label: str, *, source: str = "api") -> bool:
        """Remove the block (its value change to "" is recorded); False if there was none."""

    async def block_history(self, agent_pk: int, label: str, *, limit: int = 100
                            ) -> list[BlockRevision]:
        """The label's revisions, newest first."""

    async def undo_block(self, agent_pk: int, label: str, revision_id: int | None = None
                         ) -> Block | None:
        """Set the block back to the value before the revision (default: its newest) and record
        that as an "undo" revision, atomically. None if the block or the revision (of this
        agent and label) does not exist; BlockTooLongError if the value exceeds the limit."""

    async def list_conversation_stats(self, agent_pk: int) -> list[ConversationStats]:
        """The agent's conversations with message counts, newest activity first."""

    async def search_conversation(
        self, conversation_pk: int, agent_pk: int, query: str, *, limit: int = 100,
        include_superseded: bool = False,
    ) -> list[tuple[StoredMessage, float]]:
        """Ranked full-text hits among one conversation's visible messages (best first)."""

    async def search_agent_messages(
        self, agent_pk: int, query: str, *, roles: list[str] | None = None, limit: int = 20,
        start: float | None = None, end: float | None = None,
    ) -> list[tuple[str, StoredMessage, float]]:
        """Like `search_messages` (`start`/`end` inclusive), as whole rows: (conversation_id,
        message, score)."""

    async def messages_at(
        self, agent_pk: int, keys: list[tuple[str, int]]
    ) -> dict[tuple[str, int], StoredMessage]:
        """The agent's stored rows at (conversation_id, seq) `keys`; missing keys are absent.
        Turns the hits of any search backend (full-text or hybrid) into whole rows for the
        REST API (proxy/api/transcripts.py)."""

    async def insert_passage(self, agent_pk: int, text: str, tags: list[str], *,
                             max_passages: int = 0) -> Passage:
        """Add a passage; past `max_passages` of the agent (0 = no quota) 403 quota_exceeded,
        checked in the inserting transaction."""
        ...

    async def list_passages_page(
        self, agent_pk: int, *, tags: list[str] | None = None, limit: int = 100, offset: int = 0
    ) -> list[Passage]:
        """Newest first, optionally only passages having all `tags`."""

    async def delete_passage(self, agent_pk: int, passage_pk: int) -> bool: ...

    async def export_agent(self, agent_pk: int) -> AgentDump | None:
        """The whole agent, read in one consistent snapshot; None if it does not exist."""

    async def import_agent(self, tenant: str, agent_id: str, dump: AgentDump, *,
                           replace: bool = False, max_agents: int = 0, max_passages: int = 0
                           ) -> Agent:
        """Write `dump` as agent `agent_id` of `tenant` in one transaction, keeping seqs, flags,
        timestamps, summaries, heads and settings; each block is recorded as an "import"
        revision. AgentExistsError if the agent exists and `replace` is not set (with it, the
        old agent is deleted first, in the same transaction). Turn ids that already exist
        elsewhere in the database are renamed consistently. Past `max_agents` of the tenant or
        with more than `max_passages` passages (0 = no quota): 403 quota_exceeded, nothing
        written."""


@dataclass(frozen=True)
class ApiKeyEntry:
    """A stored API key as `memproxy keys ls` shows it: the hash, never the key."""

    key_hash: str
    tenant: str
    created_at: float
    admin: bool = False


class ApiKeyStore(Protocol):
    """API keys, stored as hashes, each naming its tenant (api/auth.py, `memproxy serve`)."""

    async def add_api_key(self, key_hash: str, tenant: str, admin: bool = False) -> None: ...

    async def tenant_for_key_hash(self, key_hash: str) -> str | None: ...

    async def api_key_entry(self, key_hash: str) -> ApiKeyEntry | None: ...

    async def list_api_keys(self) -> list[ApiKeyEntry]:
        """Every stored key (its hash, never the key), oldest first."""
        ...

    async def remove_api_key(self, key_hash: str) -> bool:
        """False when no key has this hash."""
        ...

    async def count_api_keys(self) -> int: ...


class ModelStatsStore(Protocol):
    """What memproxy learned per model, e.g. token calibration (models/catalog.py)."""

    async def get_model_stats(self, model: str) -> dict | None: ...

    async def put_model_stats(self, model: str, data: dict) -> None: ...


class ResponseStore(Protocol):
    """The OpenAI Responses and Conversations APIs' state (store/response_types.py): stored
    responses linked by `previous_response_id`, and Conversations-API conversations with their
    ordered items. Everything is per tenant: another tenant's ids are not found, not changed.
    Responses are not an agent's: deleting an agent leaves them, and export leaves them out."""

    async def put_response(self, response: StoredResponse) -> None:
        """Insert, or replace the response with the same (tenant, response_id)."""

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        """False when the tenant has no such response. Responses that continued it stay; their
        chains now stop after it."""

    async def response_chain(self, tenant: str, response_id: str, *, limit: int = 10_000
                             ) -> list[StoredResponse]:
        """The response and its stored ancestors via `previous_response_id`, OLDEST FIRST, in
        one query (a recursive CTE, the tenant checked at every step); it stops at a missing
        (deleted, expired, other tenant's) ancestor, and after `limit` responses (the newest
        ones). Empty when the response itself is not stored."""

    async def find_items(self, tenant: str, item_ids: list[str]) -> dict[str, dict]:
        """The stored responses' input or output items with these ids (an `item_reference`
        resolved), by id; ids not found are left out. One indexed lookup (`response_items`);
        an id in several responses (a client reusing its own item ids) is the newest's."""

    async def expire_responses(self, now: float) -> int:
        """Delete every tenant's responses whose `expires_at` <= `now`; how many."""

    async def create_api_conversation(self, conversation: ApiConversation,
                                      items: list[dict]) -> None:
        """Create the conversation with `items` (in order, each with an "id"), atomically.
        IdConflictError if the tenant has that conversation id or an item id repeats."""

    async def get_api_conversation(self, tenant: str, conversation_id: str
                                   ) -> ApiConversation | None: ...

    async def update_api_conversation(self, tenant: str, conversation_id: str, metadata: dict
                                      ) -> ApiConversation | None:
        """Replace the metadata; the updated conversation, or None if there is none."""

    async def delete_api_conversation(self, tenant: str, conversation_id: str) -> bool:
        """Delete the conversation and its items; False if there was none."""

    async def add_conversation_items(self, tenant: str, conversation_id: str,
                                     items: list[dict]) -> bool:
        """Append `items` in order (each with an "id"), atomically; False if there is no such
        conversation. IdConflictError if an item id is in the conversation or repeats."""

    async def list_conversation_items(self, tenant: str, conversation_id: str, *,
                                      after: str | None = None, limit: int = 20,
                                      order: str = "desc") -> tuple[list[dict], bool]:
        """A page of items and whether more follow: by position, `order` "asc" or "desc",
        starting after the item with id `after` (an unknown id, like an unknown
        conversation, gives an empty page)."""

    async def conversation_items(self, tenant: str, conversation_id: str) -> list[dict]:
        """All the conversation's items, oldest first (empty if there is no conversation)."""

    async def get_conversation_item(self, tenant: str, conversation_id: str, item_id: str
                                    ) -> dict | None: ...

    async def delete_conversation_item(self, tenant: str, conversation_id: str, item_id: str
                                       ) -> bool: ...


class Store(StoreLifecycle, TurnStore, LookupStore, SearchStore, AdminStore, ApiKeyStore,
            ModelStatsStore, ResponseStore, SummaryJobStore, ForgetStore, Protocol):
    """Every role at once: what a backend implements (SQLiteStore, PostgresStore) and what the
    app holds. Code that needs one role takes that role, so that a test fake implements only
    that role's methods."""
