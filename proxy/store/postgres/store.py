"""The Postgres store: asyncpg, one connection pool, the same `Store` semantics as SQLite.

For several memproxy processes (or machines) sharing one database. Every store call is one
statement, or one transaction on one pooled connection (`async with conn.transaction()`);
batches travel as arrays (`unnest`), so a call costs the same round trips whatever its size.
A stateful turn's reads and writes (turns.py) are one round trip each in the common case.

Sequence numbers are race-free across processes: a turn's writes lock the conversation row
(`FOR NO KEY UPDATE`) and number their messages from `max(seq)`; one that numbered from a
snapshot older than the lock fails on UNIQUE (conversation_pk, seq) and is redone in a
transaction that locks first (see turns.py).
Migrations run at `open()` under a transaction-level advisory lock (see migrations.py); then
the trees migration 6 left to build are built (tree.py), a batch per transaction.

Text columns cannot hold NUL characters in Postgres: they are removed from searchable text,
block values, summaries and passages. Message data, responses and errors are `json` and keep
them (as \\u0000 escapes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

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
from ..migrations import apply_postgres, check_fts_config
from .admin import PostgresAdminMixin
from .admin_dump import PostgresDumpMixin
from .connections import NoResetConnection, session_settings, split_url
from .forget import PostgresForget, check_agent_quota
from .held_leases import HeldLeases
from .message_terms import TermsIndexer
from .responses import PostgresResponsesMixin
from .search import NEIGHBOURS_SQL, hit_row, message_search_sql, passage_search_sql, query_words
from .sql import (
    ACQUIRE_LEASE,
    AGENT,
    CONV,
    MSG,
    RELEASE_LEASE,
    SQL_CONTEXT,
    SQL_VISIBLE,
    UPSERT_BLOCKS,
    agent_row,
    block_arrays,
    clean,
    conversation_row,
    dumps,
    jsonb,
    message_row,
    passage_row,
    rows_changed,
    strip_nul,
)
from .statistics import Statistics
from .summary_jobs import PostgresSummaryJobs
from .term_stats import TermStats
from .tree import PostgresTreeMixin, backfill_trees
from .turns import PostgresTurnsMixin
from .vectors import PostgresVectors

__all__ = ["SQL_CONTEXT", "SQL_VISIBLE", "PostgresStore", "split_url"]

log = logging.getLogger(__name__)


_INSERT_PASSAGE = ("INSERT INTO passages (agent_pk, text, tags, created_at)"
                   " VALUES ($1, $2, $3::jsonb, $4) RETURNING pk")

class PostgresStore(PostgresTurnsMixin, PostgresTreeMixin, PostgresAdminMixin,
                    PostgresDumpMixin, PostgresVectors, PostgresResponsesMixin,
                    PostgresSummaryJobs, PostgresForget):
    """`Store` on a Postgres database. Create, then `await store.open()`.

    The turn calls (turns.py), the operator API (agents REST, block history,
    export/import) and the Responses and Conversations APIs' state (responses.py) are in the
    mixins.

    `url` is a postgresql:// (or postgres://) URL; its `fts` query parameter, if any, is the
    text-search configuration used when `fts_config` is not given (default "english"). A
    database keeps the configuration it was created with (its indexes depend on it).
    """

    dialect = "postgres"

    def __init__(self, url: str, fts_config: str | None = None, *, min_size: int = 1,
                 max_size: int = 10, input_commit: str = "durable") -> None:
        self.dsn, url_fts = split_url(url)
        self.requested_fts_config = check_fts_config(fts_config or url_fts or "english")
        self.fts_config = self.requested_fts_config  # the database's, once open
        self.min_size, self.max_size = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self.statistics = Statistics()  # ANALYZE after migrations and bulk loads
        # messages indexed for search after their turn (message_terms.py)
        self.terms = TermsIndexer(wrote=lambda n: self.statistics.wrote({"message_terms": n}))
        self._leases = HeldLeases()  # released by finish_turn (turns.py)
        self.term_stats = TermStats()  # a search's common words left unread (term_stats.py)
        # `[database] postgres_input_commit`: "fast" commits begin_turn without waiting for
        # the WAL flush (docs/storage.md, "Durability: Postgres")
        if input_commit not in ("durable", "fast"):
            raise ValueError(f"input_commit must be 'durable' or 'fast', not {input_commit!r}")
        self.input_commit = input_commit

    # --- plumbing -------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the pool, apply pending migrations (under an advisory lock), build the
        trees of conversations stored before there were trees, and analyze the tables that
        need it (statistics.py: before serving, so the first turns plan with statistics)."""
        if self._pool is not None:
            return
        pool = await asyncpg.create_pool(
            self.dsn, min_size=self.min_size, max_size=self.max_size,
            connection_class=NoResetConnection, server_settings=session_settings(self.dsn))
        try:
            async with pool.acquire() as conn:
                version, encoding = await conn.fetchrow(
                    "SELECT current_setting('server_version_num')::int,"
                    " current_setting('server_encoding')")
                if version < 130000:  # normalize(), generated columns, websearch_to_tsquery
                    raise RuntimeError(f"memproxy needs PostgreSQL 13 or newer (the server is "
                                       f"{version // 10000})")
                if encoding != "UTF8":
                    raise RuntimeError(f"the Postgres database must use UTF8 encoding, not "
                                       f"{encoding} (CREATE DATABASE ... ENCODING 'UTF8')")
                try:
                    await conn.fetchval("SELECT $1::text::regconfig::text",
                                        self.requested_fts_config)
                except asyncpg.UndefinedObjectError:
                    raise ValueError(
                        f"unknown text search configuration {self.requested_fts_config!r}"
                        " (see SELECT cfgname FROM pg_ts_config)") from None
                migrated = await apply_postgres(conn, fts_config=self.requested_fts_config)
                stored = await conn.fetchval(
                    "SELECT value FROM store_settings WHERE key = 'fts_config'")
                built = await backfill_trees(conn)
                await self.statistics.open(conn, pool, migrated=bool(migrated),
                                           rewritten=("messages",) if built else ())
        except BaseException:
            await self.statistics.close()
            await pool.close()
            raise
        self.fts_config = check_fts_config(stored)
        if self.fts_config != self.requested_fts_config:
            log.warning("the database was created with text search configuration %r; "
                        "ignoring the requested %r", self.fts_config, self.requested_fts_config)
        self._pool = pool
        # also indexes what a stopped process left queued
        self.terms.start(pool, lambda: asyncpg.connect(
            self.dsn, server_settings=session_settings(self.dsn)))

    async def close(self) -> None:
        await self.terms.close()
        await self.statistics.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _wrote(self, rows: dict[str, int]) -> None:
        """Rows were written: count them for ANALYZE, and have new messages indexed."""
        if rows.get("messages"):
            rows = {**rows, "message_terms_pending": rows["messages"]}
            self.terms.kick()
        self.statistics.wrote(rows)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self.pool.fetch(sql, *args)

    async def _fetch_one(self, sql: str, *args: Any) -> Any:
        return await self.pool.fetchrow(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> int:
        """One statement (its own transaction); returns the number of rows it changed."""
        return rows_changed(await self.pool.execute(sql, *args))

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    # --- agents and blocks ----------------------------------------------------------------
    async def get_agent(self, tenant: str, agent_id: str) -> Agent | None:
        row = await self._fetch_one(f"{AGENT} WHERE tenant = $1 AND agent_id = $2",
                                    tenant, agent_id)
        return None if row is None else agent_row(row)

    async def ensure_agent(self, tenant: str, agent_id: str, default_blocks: list[Block], *,
                           max_agents: int = 0) -> Agent:
        """Read first; create race-free only if missing (INSERT ... ON CONFLICT DO NOTHING
        decides the winner, and only the creating call inserts the default blocks)."""
        agent = await self.get_agent(tenant, agent_id)
        if agent is not None:
            return agent
        now = time.time()
        async with self._transaction() as conn:
            await check_agent_quota(conn, tenant, agent_id, max_agents)
            pk = await conn.fetchval(
                "INSERT INTO agents (tenant, agent_id, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant, agent_id) DO NOTHING RETURNING pk", tenant, agent_id, now)
            if pk is None:  # another call created it; it has committed (or we would wait)
                row = await conn.fetchrow(f"{AGENT} WHERE tenant = $1 AND agent_id = $2",
                                          tenant, agent_id)
                return agent_row(row)
            if default_blocks:
                await conn.execute(UPSERT_BLOCKS, pk, now, *block_arrays(default_blocks))
        return Agent(pk=pk, tenant=tenant, agent_id=agent_id, created_at=now, settings={})

    async def update_agent_settings(self, agent_pk: int, settings: dict[str, Any]) -> None:
        """Replace the agent's settings JSON."""
        await self._execute("UPDATE agents SET settings = $1::jsonb WHERE pk = $2",
                            jsonb(settings), agent_pk)

    async def delete_agent(self, agent_pk: int) -> None:
        """Delete the agent; blocks, conversations, messages, turns and passages cascade."""
        await self._execute("DELETE FROM agents WHERE pk = $1", agent_pk)

    async def get_blocks(self, agent_pk: int) -> list[Block]:
        """The agent's blocks in insertion order (upserts keep a block's place)."""
        rows = await self._fetch(
            "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
            " WHERE agent_pk = $1 ORDER BY pos", agent_pk)
        return [Block(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    # --- conversations and messages -------------------------------------------------------
    async def get_conversation(self, agent_pk: int, conversation_id: str) -> Conversation | None:
        row = await self._fetch_one(f"{CONV} WHERE agent_pk = $1 AND conversation_id = $2",
                                    agent_pk, conversation_id)
        return None if row is None else conversation_row(row)

    async def ensure_conversation(self, agent_pk: int, conversation_id: str) -> Conversation:
        """Like ensure_agent: a read in the common case, a race-free insert otherwise."""
        conversation = await self.get_conversation(agent_pk, conversation_id)
        if conversation is not None:
            return conversation
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO conversations (agent_pk, conversation_id, created_at)"
                " VALUES ($1, $2, $3) ON CONFLICT (agent_pk, conversation_id) DO NOTHING",
                agent_pk, conversation_id, time.time())
            row = await conn.fetchrow(f"{CONV} WHERE agent_pk = $1 AND conversation_id = $2",
                                      agent_pk, conversation_id)
        return conversation_row(row)

    async def update_conversation(self, conversation_pk: int, *, summary: str | None = None,
                                  resends_history: bool | None = None,
                                  head_hash: str | None = None) -> None:
        """Set the summary, the resends-history flag and/or the head hash (None leaves a
        field unchanged)."""
        sets, args = [], [conversation_pk]
        if summary is not None:
            args.append(clean(summary))
            sets.append(f"summary = ${len(args)}")
        if resends_history is not None:
            args.append(bool(resends_history))
            sets.append(f"resends_history = ${len(args)}")
        if head_hash is not None:
            args.append(head_hash)
            sets.append(f"head_hash = ${len(args)}")
        if sets:
            await self._execute(f"UPDATE conversations SET {', '.join(sets)} WHERE pk = $1",
                                *args)

    async def context_messages(self, conversation_pk: int) -> list[StoredMessage]:
        return [message_row(r) for r in await self._fetch(SQL_CONTEXT, conversation_pk)]

    async def visible_transcript(self, conversation_pk: int) -> list[StoredMessage]:
        return [message_row(r) for r in await self._fetch(SQL_VISIBLE, conversation_pk)]

    async def list_messages(self, conversation_pk: int, *, after_seq: int = 0, limit: int = 100,
                            include_superseded: bool = False, before_seq: int | None = None,
                            newest_first: bool = False) -> list[StoredMessage]:
        """A page of the full transcript (internal steps included) by seq > after_seq (and
        < before_seq), oldest or newest first."""
        hide = "" if include_superseded else " AND NOT superseded"
        order = "DESC" if newest_first else "ASC"
        before = 2**31 - 1 if before_seq is None else before_seq  # seq is an int4
        rows = await self._fetch(
            f"{MSG} WHERE conversation_pk = $1 AND seq > $2 AND seq < $3{hide}"
            f" ORDER BY seq {order} LIMIT $4",
            conversation_pk, after_seq, before, limit)
        return [message_row(r) for r in rows]

    async def count_messages(self, agent_pk: int) -> int:
        """Messages in the agent's recall memory: visible and not superseded, all conversations.

        O(1): a counter on the agent row maintained by statement triggers (migrations.py)."""
        count = await self.pool.fetchval("SELECT recall_count FROM agents WHERE pk = $1",
                                         agent_pk)
        return 0 if count is None else count

    async def search_messages(self, agent_pk: int, query: str, *, roles: list[str] | None = None,
                              limit: int = 10, start: float | None = None,
                              end: float | None = None, newest: int | None = None
                              ) -> list[MessageHit]:
        """BM25-ranked recall search (visible, not superseded, evicted included); a blank
        query lists the newest matching messages with score 0. `start`/`end` are inclusive;
        with `newest`, only the newest that many matches are ranked; without, a query whose
        words are in too many messages ranks those holding its rarest (term_stats.py)."""
        budgeted = None if newest is not None else await self.term_stats.plan(
            self._fetch, self.fts_config, "messages", agent_pk, query_words(query))
        sql, args = message_search_sql(self.fts_config, agent_pk, query, roles, limit,
                                       start, end, newest, budgeted)
        return [hit_row(r) for r in await self._fetch(sql, *args)]

    async def message_neighbours(self, agent_pk: int, hits: Sequence[tuple[str, int]],
                                 count: int) -> list[tuple[int, MessageHit]]:
        """The turns around each hit, in one statement (core/hit_context.py, search.py);
        hit indexes from 0 like the SQLite store's."""
        if not hits or count <= 0:
            return []
        rows = await self._fetch(NEIGHBOURS_SQL, agent_pk, [clean(c) for c, _ in hits],
                                 [int(s) for _, s in hits], count)
        return [(r[0] - 1, hit_row(r[1:])) for r in rows]

    # --- leases (one turn at a time per conversation, across processes) ------------------
    # A turn's lease is taken by its state's read (`load_turn_state(lease=...)`, turn_state.py)
    leases_in_read = True
    # ... and it can store an input planned before that read in the same statement
    # (`load_and_begin`, turn/ahead.py)
    begins_in_read = True

    def turn_leases(self) -> PostgresStore:
        """Conversations are leased with rows of the `leases` table (see locks.py)."""
        return self

    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool:
        """Take or renew the conversation's lease; False while another owner holds a live one.
        Expiry is measured on the database server's clock. The store remembers the lease, so
        that `finish_turn` releases it in the turn's own statement (turns.py)."""
        taken = await self._execute(ACQUIRE_LEASE, conversation_pk, owner, float(ttl_s)) == 1
        if taken:
            self._leases.taken(conversation_pk, owner)
        return taken

    async def release_lease(self, conversation_pk: int, owner: str) -> None:
        """Free the lease row (it stays, counting its releases: turn_state.py), unless the
        turn's `finish_turn` did already (no round trip)."""
        if self._leases.release(conversation_pk, owner):
            await self._execute(RELEASE_LEASE, conversation_pk, owner)

    # --- archival memory ------------------------------------------------------------------
    async def insert_passage(self, agent_pk: int, text: str, tags: list[str], *,
                             max_passages: int = 0) -> Passage:
        now, text, tags = time.time(), clean(text), strip_nul(list(tags))
        args = (agent_pk, text, dumps(tags), now)
        if not max_passages:  # no quota: one statement, no transaction round trips
            pk = await self.pool.fetchval(_INSERT_PASSAGE, *args)
        else:
            async with self._transaction() as conn:
                # the agent row locked: concurrent inserts are counted one after the other
                count = await conn.fetchval(
                    "SELECT passage_count FROM agents WHERE pk = $1 FOR UPDATE", agent_pk)
                if count is not None and count >= max_passages:
                    raise quota_exceeded("passages_per_agent", max_passages)
                pk = await conn.fetchval(_INSERT_PASSAGE, *args)
        self._wrote({"passages": 1})  # `memproxy load` stores files this way
        return Passage(pk=pk, text=text, tags=tags, created_at=now)

    async def search_passages(self, agent_pk: int, query: str, *, tags: list[str] | None = None,
                              top_k: int = 5) -> list[Passage]:
        """BM25-ranked archival search; `tags` keeps passages having ALL of them. A blank
        query returns the newest (tag-filtered) passages with score 0; a query whose words are
        in too many passages ranks those holding its rarest (term_stats.py)."""
        tags_json = jsonb(list(tags)) if tags else None
        budgeted = await self.term_stats.plan(self._fetch, self.fts_config, "passages", agent_pk,
                                              query_words(query))
        sql, args = passage_search_sql(self.fts_config, agent_pk, query, tags, top_k, tags_json,
                                       budgeted)
        return [passage_row(r) for r in await self._fetch(sql, *args)]

    async def delete_passage(self, agent_pk: int, passage_pk: int) -> bool:
        """False when the passage does not exist or belongs to another agent."""
        return await self._execute("DELETE FROM passages WHERE pk = $1 AND agent_pk = $2",
                                   passage_pk, agent_pk) == 1

    async def count_passages(self, agent_pk: int) -> int:
        """O(1): a counter on the agent row kept by triggers (migration 5)."""
        count = await self.pool.fetchval("SELECT passage_count FROM agents WHERE pk = $1",
                                         agent_pk)
        return count or 0

    # --- api keys and model stats ---------------------------------------------------------
    async def add_api_key(self, key_hash: str, tenant: str, admin: bool = False) -> None:
        """Store a hashed key; adding the same hash again re-assigns its tenant and admin flag."""
        await self._execute("INSERT INTO api_keys (key_hash, tenant, created_at, admin)"
                            " VALUES ($1, $2, $3, $4) ON CONFLICT (key_hash) DO UPDATE"
                            " SET tenant = excluded.tenant, admin = excluded.admin",
                            key_hash, tenant, time.time(), admin)

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        return await self.pool.fetchval("SELECT tenant FROM api_keys WHERE key_hash = $1",
                                        key_hash)

    async def api_key_entry(self, key_hash: str) -> ApiKeyEntry | None:
        row = await self.pool.fetchrow("SELECT key_hash, tenant, created_at, admin FROM api_keys"
                                       " WHERE key_hash = $1", key_hash)
        return None if row is None else ApiKeyEntry(row[0], row[1], row[2], row[3])

    async def list_api_keys(self) -> list[ApiKeyEntry]:
        rows = await self.pool.fetch("SELECT key_hash, tenant, created_at, admin FROM api_keys"
                                     " ORDER BY created_at, key_hash")
        return [ApiKeyEntry(r[0], r[1], r[2], r[3]) for r in rows]

    async def remove_api_key(self, key_hash: str) -> bool:
        return await self._execute("DELETE FROM api_keys WHERE key_hash = $1", key_hash) == 1

    async def count_api_keys(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM api_keys")

    async def get_model_stats(self, model: str) -> dict | None:
        """Persisted token-calibration data for `model` (not in the protocol yet)."""
        data = await self.pool.fetchval("SELECT data FROM model_stats WHERE model = $1", model)
        return None if data is None else json.loads(data)

    async def put_model_stats(self, model: str, data: dict) -> None:
        await self._execute("INSERT INTO model_stats (model, data, updated_at)"
                            " VALUES ($1, $2::jsonb, $3) ON CONFLICT (model) DO UPDATE SET"
                            " data = excluded.data, updated_at = excluded.updated_at",
                            model, jsonb(data), time.time())
