"""The SQLite store: WAL, a fast lane on the event loop for a turn's own statements and a
thread lane (aiosqlite) for everything that can take long (`lanes.py`).

Every store call is one whole function over a connection: a write is one transaction (BEGIN
IMMEDIATE ... COMMIT, ROLLBACK on any error), so a coroutine cancelled while it waits (a
client that disconnects) can never leave the writer inside a half-done transaction. Writes are
serialised by one asyncio.Lock; reads see committed data only and never wait for the writer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...core.types import (
    Agent,
    Block,
    Conversation,
    MessageHit,
    Passage,
    StoredMessage,
)
from ...errors import quota_exceeded
from ..base import ApiKeyEntry
from ..leases import FileLeases, LeaseStore
from ..migrations import apply_sqlite
from ..summary_jobs import SummaryChanged, SummaryWork
from .admin import SQLiteAdminMixin
from .admin_dump import SQLiteDumpMixin
from .forget import SQLiteForget, check_agent_quota
from .fts import (
    NEIGHBOURS_SQL,
    hit_row,
    index_pending,
    message_search_sql,
    neighbours_params,
    passage_search_sql,
    pending,
)
from .lanes import SQLiteLanes
from .responses import SQLiteResponsesMixin
from .rows import (
    _AGENT,
    _CONV,
    _INSERT_PASSAGE,
    _MSG,
    SQL_CONTEXT,
    SQL_VISIBLE,
    _agent,
    _conversation,
    _dumps,
    _message,
    _passage,
    _upsert_blocks,
)
from .summary_jobs import SQLiteSummaryJobs, enqueue, has_job
from .term_stats import TermFrequencies
from .tree import SQLiteTree, backfill_trees
from .turns import SQLiteTurns
from .vectors import SQLiteVectors

# The largest full-text backlog indexed on the loop's thread before a search (see
# `_index_pending`): about a millisecond of FTS5 inserts at worst.
FAST_INDEX_ROWS = 32

T = TypeVar("T")

__all__ = ["SQL_CONTEXT", "SQL_VISIBLE", "SQLiteStore"]


def _migrate(db: sqlite3.Connection) -> None:
    """Apply pending migrations, then build the trees migration 6 left to build."""
    apply_sqlite(db)
    backfill_trees(db)


class SQLiteStore(SQLiteTurns, SQLiteTree, SQLiteAdminMixin, SQLiteDumpMixin, SQLiteVectors,
                  SQLiteResponsesMixin, SQLiteSummaryJobs, SQLiteForget):
    """`Store` on one SQLite file. Create, then `await store.open()`.

    A turn's own reads and writes are in `turns.py`; the operator API (agents REST,
    block history, export/import) is in the admin mixins; the Responses and Conversations
    APIs' state in `responses.py`."""

    dialect = "sqlite"

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous  # PRAGMA synchronous of every connection
        self.lanes = SQLiteLanes(path, synchronous, maintain=index_pending)
        self.term_frequencies = TermFrequencies()
        self._file_leases: list[FileLeases] = []

    def turn_leases(self) -> LeaseStore:
        """What a `ConversationLocks` leases conversations with: OFD locks on the sidecar file
        `<database>-leases` where the OS has them (Linux), else the `leases` table."""
        if not FileLeases.supported():
            return self
        leases = FileLeases(f"{self.path}-leases")
        self._file_leases.append(leases)
        return leases

    # --- plumbing -------------------------------------------------------------------------
    @property
    def _writer(self) -> Any:
        return self.lanes.writer

    @property
    def _reader(self) -> Any:
        return self.lanes.reader

    async def open(self) -> None:
        """Create the parent directory, connect both lanes, apply migrations."""
        if self.lanes.is_open:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        await self.lanes.open(_migrate)

    async def close(self) -> None:
        for leases in self._file_leases:
            leases.close()
        # On the way out, refresh planner statistics where useful, bounded in cost.
        await self.lanes.close(lambda db: db.executescript(
            "PRAGMA analysis_limit = 400; PRAGMA optimize;"))

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """A read that may take long (search, listings, dumps): on the thread lane."""
        return await self.lanes.read(fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """A write that may take long (imports, deletes): one transaction on the thread lane."""
        return await self.lanes.write(fn, *args)

    async def _fetch(self, sql: str, params: tuple, convert: Callable[[tuple], T]) -> list[T]:
        return await self._read(lambda db: [convert(r) for r in db.execute(sql, params)])

    async def _fetch_one(self, sql: str, params: tuple) -> tuple | None:
        """One row by an indexed lookup: on the fast lane."""
        return await self.lanes.read_fast(lambda db: db.execute(sql, params).fetchone())

    async def _execute(self, sql: str, params: tuple) -> int:
        """One small write statement in its own transaction (fast lane); rows changed."""
        return await self.lanes.write_fast(lambda db: db.execute(sql, params).rowcount)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    # --- agents and blocks ----------------------------------------------------------------
    async def get_agent(self, tenant: str, agent_id: str) -> Agent | None:
        row = await self._fetch_one(f"{_AGENT} WHERE tenant = ? AND agent_id = ?",
                                    (tenant, agent_id))
        return None if row is None else _agent(row)

    async def ensure_agent(self, tenant: str, agent_id: str, default_blocks: list[Block], *,
                           max_agents: int = 0) -> Agent:
        """Read first (the common case costs no write); create race-free only if missing.

        INSERT ... ON CONFLICT DO NOTHING decides the winner; only the creating call inserts
        the default blocks, so concurrent first requests yield one agent with one set of blocks.
        """
        agent = await self.get_agent(tenant, agent_id)
        if agent is not None:
            return agent
        now = time.time()

        def create(db: sqlite3.Connection) -> Agent:
            check_agent_quota(db, tenant, agent_id, max_agents)
            cur = db.execute(
                "INSERT INTO agents (tenant, agent_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant, agent_id) DO NOTHING", (tenant, agent_id, now))
            if cur.rowcount == 1:
                _upsert_blocks(db, cur.lastrowid, default_blocks, now)
            sql = f"{_AGENT} WHERE tenant = ? AND agent_id = ?"
            return _agent(db.execute(sql, (tenant, agent_id)).fetchone())

        return await self.lanes.write_fast(create)

    async def update_agent_settings(self, agent_pk: int, settings: dict[str, Any]) -> None:
        """Replace the agent's settings JSON."""
        await self._execute("UPDATE agents SET settings = ? WHERE pk = ?",
                            (_dumps(settings), agent_pk))

    async def delete_agent(self, agent_pk: int) -> None:
        """Delete the agent; blocks, conversations, messages, turns and passages cascade.

        On the thread lane: the cascade over a long history (and its full-text index) can take
        seconds, which must not stall the event loop."""
        await self._write(lambda db: db.execute("DELETE FROM agents WHERE pk = ?", (agent_pk,)))

    async def get_blocks(self, agent_pk: int) -> list[Block]:
        """The agent's blocks in insertion order (upserts keep a block's place)."""
        return await self._fetch(
            "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
            " WHERE agent_pk = ? ORDER BY rowid", (agent_pk,),
            lambda r: Block(r[0], r[1], r[2], r[3], bool(r[4]), r[5]))

    # --- conversations and messages -------------------------------------------------------
    async def get_conversation(self, agent_pk: int, conversation_id: str) -> Conversation | None:
        row = await self._fetch_one(f"{_CONV} WHERE agent_pk = ? AND conversation_id = ?",
                                    (agent_pk, conversation_id))
        return None if row is None else _conversation(row)

    async def ensure_conversation(self, agent_pk: int, conversation_id: str) -> Conversation:
        """Like ensure_agent: a read in the common case, a race-free insert otherwise."""
        conversation = await self.get_conversation(agent_pk, conversation_id)
        if conversation is not None:
            return conversation
        now = time.time()

        def create(db: sqlite3.Connection) -> Conversation:
            db.execute("INSERT INTO conversations (agent_pk, conversation_id, created_at)"
                       " VALUES (?, ?, ?) ON CONFLICT (agent_pk, conversation_id) DO NOTHING",
                       (agent_pk, conversation_id, now))
            sql = f"{_CONV} WHERE agent_pk = ? AND conversation_id = ?"
            return _conversation(db.execute(sql, (agent_pk, conversation_id)).fetchone())

        return await self.lanes.write_fast(create)

    async def update_conversation(self, conversation_pk: int, *, summary: str | None = None,
                                  resends_history: bool | None = None,
                                  head_hash: str | None = None) -> None:
        """Set the summary, the resends-history flag and/or the head hash (None leaves a
        field unchanged)."""
        sets, params = [], []
        if summary is not None:
            sets.append("summary = ?")
            params.append(summary)
        if resends_history is not None:
            sets.append("resends_history = ?")
            params.append(int(resends_history))
        if head_hash is not None:
            sets.append("head_hash = ?")
            params.append(head_hash)
        if sets:
            await self._execute(f"UPDATE conversations SET {', '.join(sets)} WHERE pk = ?",
                                (*params, conversation_pk))

    async def evict_messages(self, conversation_pk: int, through_seq: int, summary: str, *,
                             job: SummaryWork | None = None, expected: str | None = None
                             ) -> int:
        """Page out: take messages with seq <= through_seq out of the context window and store
        the new summary, atomically (never one without the other). Returns rows evicted.

        With `job`, `summary` is the pending one (a gap note) and the job to write the real
        one is queued in the same transaction (`summary_jobs.enqueue`); `expected` is the
        summary the turn read: when the conversation has no job and shows another one now, a
        background summary completed meanwhile, and `SummaryChanged` is raised, nothing
        written."""
        def run(db: sqlite3.Connection) -> int:
            if job is not None and expected is not None and not has_job(db, conversation_pk):
                row = db.execute("SELECT summary FROM conversations WHERE pk = ?",
                                 (conversation_pk,)).fetchone()
                if row is not None and row[0] != expected:
                    raise SummaryChanged(row[0])
            n = db.execute("UPDATE messages SET in_context = 0 WHERE conversation_pk = ?"
                           " AND seq <= ? AND in_context = 1 AND superseded = 0",
                           (conversation_pk, through_seq)).rowcount
            db.execute("UPDATE conversations SET summary = ? WHERE pk = ?",
                       (summary, conversation_pk))
            # the summary of this path through that row (a branch that leaves the path
            # before it gets an older one: tree.move_path)
            db.execute("UPDATE messages SET summary = ? WHERE conversation_pk = ? AND seq = ?",
                       (summary, conversation_pk, through_seq))
            if job is not None:
                enqueue(db, conversation_pk, through_seq, summary, job, expected)
            return n

        return await self.lanes.write_fast(run)

    async def context_messages(self, conversation_pk: int) -> list[StoredMessage]:
        return await self._fetch(SQL_CONTEXT, (conversation_pk,), _message)

    async def visible_transcript(self, conversation_pk: int) -> list[StoredMessage]:
        return await self._fetch(SQL_VISIBLE, (conversation_pk,), _message)

    async def list_messages(self, conversation_pk: int, *, after_seq: int = 0, limit: int = 100,
                            include_superseded: bool = False, before_seq: int | None = None,
                            newest_first: bool = False) -> list[StoredMessage]:
        """A page of the full transcript (internal steps included) by seq > after_seq (and
        < before_seq), oldest or newest first."""
        hide = "" if include_superseded else " AND superseded = 0"
        before = "" if before_seq is None else " AND seq < ?"
        order = "DESC" if newest_first else "ASC"
        params = (conversation_pk, after_seq,
                  *(() if before_seq is None else (before_seq,)), limit)
        return await self._fetch(
            f"{_MSG} WHERE conversation_pk = ? AND seq > ?{before}{hide} ORDER BY seq {order}"
            " LIMIT ?", params, _message)

    async def count_messages(self, agent_pk: int) -> int:
        """Messages in the agent's recall memory: visible and not superseded, all conversations.

        O(1): a counter on the agent row maintained by triggers (see migrations.py)."""
        row = await self._fetch_one("SELECT recall_count FROM agents WHERE pk = ?", (agent_pk,))
        return 0 if row is None else row[0]

    async def search_messages(self, agent_pk: int, query: str, *, roles: list[str] | None = None,
                              limit: int = 10, start: float | None = None,
                              end: float | None = None, newest: int | None = None
                              ) -> list[MessageHit]:
        """bm25-ranked recall search (visible, not superseded, evicted included); a blank query
        lists the newest matching messages with score 0. `start`/`end` are inclusive; with
        `newest` (automatic recall's cheap search), only the query's rarest words are searched
        for (term_stats.py) and only the newest `newest` matches are ranked, or, when even the
        rarest word is common, listed newest first with score 0 (not ranked: term_stats.py)."""
        await self._index_pending()
        ranked = True
        if newest is not None and query.strip():
            query, ranked = await self.lanes.read_fast(self._rarest_words, query)
            if not query:
                return []  # no word of it occurs in any message
        sql, params = message_search_sql(agent_pk, query, roles, limit, start, end, newest,
                                         ranked=ranked)
        if newest is not None:  # bounded, so on the loop's thread: no thread lane round trip
            return await self.lanes.read_fast(lambda db: [hit_row(r) for r in db.execute(sql, params)])
        return await self._fetch(sql, params, hit_row)

    async def message_neighbours(self, agent_pk: int, hits: Sequence[tuple[str, int]],
                                 count: int) -> list[tuple[int, MessageHit]]:
        """The turns around each hit, in one statement (core/hit_context.py, fts.py): a few
        indexed lookups, so on the loop's thread (automatic recall runs it on every turn)."""
        if not hits or count <= 0:
            return []
        sql, params = NEIGHBOURS_SQL, neighbours_params(agent_pk, list(hits), count)
        return await self.lanes.read_fast(
            lambda db: [(r[0], hit_row(r[1:])) for r in db.execute(sql, params)])

    def _rarest_words(self, db: sqlite3.Connection, query: str) -> tuple[str, bool]:
        indexed = db.execute("SELECT upto FROM fts_progress WHERE name = 'messages'").fetchone()
        return self.term_frequencies.rarest(db, query, indexed[0] if indexed else 0)

    async def _index_pending(self) -> None:
        """Before a full-text search: index the messages turns wrote since the last batch, so
        a search sees every committed message (fts.py).

        A few rows (the last turns' messages: the usual case when searches are frequent, as
        with automatic recall on every turn) are indexed on the fast lane, in the loop's
        thread and this pass's group commit, which costs tens of microseconds instead of a
        thread-lane transaction's hop; a larger backlog goes to the thread lane so that the
        loop is never held up by it."""
        backlog = await self.lanes.read_fast(pending)
        if not backlog:
            return
        if backlog <= FAST_INDEX_ROWS:
            await self.lanes.write_fast(index_pending)
        else:
            await self.lanes.write(index_pending)

    # --- leases (one turn at a time per conversation, across processes) ------------------
    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool:
        """Take or renew the conversation's lease; False while another owner holds a live one."""
        now = time.time()
        return await self._execute(
            "INSERT INTO leases (conversation_pk, owner, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (conversation_pk) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at"
            " WHERE leases.owner = excluded.owner OR leases.expires_at < ?",
            (conversation_pk, owner, now + ttl_s, now)) == 1

    async def release_lease(self, conversation_pk: int, owner: str) -> None:
        await self._execute("DELETE FROM leases WHERE conversation_pk = ? AND owner = ?",
                            (conversation_pk, owner))

    # --- archival memory ------------------------------------------------------------------
    async def insert_passage(self, agent_pk: int, text: str, tags: list[str], *,
                             max_passages: int = 0) -> Passage:
        now, tags = time.time(), list(tags)

        def insert(db: sqlite3.Connection) -> int:
            if max_passages:  # writes are serialized: the count cannot move under us
                row = db.execute("SELECT passage_count FROM agents WHERE pk = ?",
                                 (agent_pk,)).fetchone()
                if row is not None and row[0] >= max_passages:
                    raise quota_exceeded("passages_per_agent", max_passages)
            return db.execute(_INSERT_PASSAGE, (agent_pk, text, _dumps(tags), now)).lastrowid

        pk = await self.lanes.write_fast(insert)
        return Passage(pk=pk, text=text, tags=tags, created_at=now)

    async def search_passages(self, agent_pk: int, query: str, *, tags: list[str] | None = None,
                              top_k: int = 5) -> list[Passage]:
        """bm25-ranked archival search; `tags` keeps passages having ALL of them. A blank
        query returns the newest (tag-filtered) passages with score 0."""
        sql, params = passage_search_sql(agent_pk, query, tags, top_k)
        return await self._fetch(sql, params, _passage)

    async def delete_passage(self, agent_pk: int, passage_pk: int) -> bool:
        """False when the passage does not exist or belongs to another agent."""
        return await self._execute("DELETE FROM passages WHERE pk = ? AND agent_pk = ?",
                                   (passage_pk, agent_pk)) == 1

    async def count_passages(self, agent_pk: int) -> int:
        """O(1): a counter on the agent row kept by triggers (migration 5)."""
        row = await self._fetch_one("SELECT passage_count FROM agents WHERE pk = ?", (agent_pk,))
        return 0 if row is None else row[0]

    # --- api keys and model stats ---------------------------------------------------------
    async def add_api_key(self, key_hash: str, tenant: str, admin: bool = False) -> None:
        """Store a hashed key; adding the same hash again re-assigns its tenant and admin flag."""
        await self._execute("INSERT INTO api_keys (key_hash, tenant, created_at, admin)"
                            " VALUES (?, ?, ?, ?) ON CONFLICT (key_hash) DO UPDATE"
                            " SET tenant = excluded.tenant, admin = excluded.admin",
                            (key_hash, tenant, time.time(), int(admin)))

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        row = await self._fetch_one("SELECT tenant FROM api_keys WHERE key_hash = ?", (key_hash,))
        return None if row is None else row[0]

    async def api_key_entry(self, key_hash: str) -> ApiKeyEntry | None:
        row = await self._fetch_one("SELECT key_hash, tenant, created_at, admin FROM api_keys"
                                    " WHERE key_hash = ?", (key_hash,))
        return None if row is None else ApiKeyEntry(row[0], row[1], row[2], bool(row[3]))

    async def list_api_keys(self) -> list[ApiKeyEntry]:
        return await self._fetch("SELECT key_hash, tenant, created_at, admin FROM api_keys"
                                 " ORDER BY created_at, key_hash", (),
                                 lambda r: ApiKeyEntry(r[0], r[1], r[2], bool(r[3])))

    async def remove_api_key(self, key_hash: str) -> bool:
        return await self._execute("DELETE FROM api_keys WHERE key_hash = ?", (key_hash,)) == 1

    async def count_api_keys(self) -> int:
        row = await self._fetch_one("SELECT count(*) FROM api_keys", ())
        return row[0]

    async def get_model_stats(self, model: str) -> dict | None:
        """Persisted token-calibration data for `model` (not in the protocol yet)."""
        row = await self._fetch_one("SELECT data FROM model_stats WHERE model = ?", (model,))
        return None if row is None else json.loads(row[0])

    async def put_model_stats(self, model: str, data: dict) -> None:
        await self._execute("INSERT INTO model_stats (model, data, updated_at) VALUES (?, ?, ?)"
                            " ON CONFLICT (model) DO UPDATE SET data = excluded.data,"
                            " updated_at = excluded.updated_at",
                            (model, _dumps(data), time.time()))
