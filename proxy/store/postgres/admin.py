"""The operator side of the Postgres store: agent pages and stats, block writes with history,
conversation stats and search within one conversation (the agents REST API).

A mixin of `PostgresStore` (its pool and `_transaction`), with the same semantics as
`sqlite/admin.py`; the contract tests run both. Agent pages are ordered with the "C"
collation, so both backends list in the same (byte) order whatever the database's locale.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from ...core.types import Agent, Block, BlockRevision, Passage, StoredMessage
from ..admin_types import AgentStats, BlockTooLongError, ConversationStats
from .forget import check_agent_quota
from .search import conversation_search_sql, message_search_sql, query_words
from .sql import (
    AGENT,
    UPSERT_BLOCKS,
    agent_row,
    block_arrays,
    clean,
    conversation_row,
    jsonb,
    message_row,
    passage_row,
)
from .term_stats import TermStats

if TYPE_CHECKING:
    import asyncpg

_BLOCK = "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
_REVISION = ("SELECT pk, label, old_value, new_value, source, turn_id, created_at"
             " FROM block_revisions")
# $1 agent_pk, $2..$7 arrays (label, old_value, new_value, source, turn_id, created_at); pks
# (the revision ids) are handed out in array order.
INSERT_REVISIONS = (
    "INSERT INTO block_revisions (agent_pk, label, old_value, new_value, source, turn_id,"
    " created_at) SELECT $1, u.label, u.old, u.new, u.source, u.turn_id, u.created_at"
    " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[])"
    " WITH ORDINALITY AS u(label, old, new, source, turn_id, created_at, i) ORDER BY u.i"
)
# The first ten columns of sql.MSG, qualified, in its order (for message_row; the tree's
# columns are not read here).
M_COLUMNS = ("m.pk, m.seq, m.data, m.turn_id, m.created_at, m.in_context, m.visible,"
             " m.superseded, m.tokens, m.visible_hash")


def block_row(r: Any) -> Block:
    return Block(r[0], r[1], r[2], r[3], r[4], r[5])


def revision_row(r: Any) -> BlockRevision:
    return BlockRevision(label=r[1], old_value=r[2], new_value=r[3], source=r[4], turn_id=r[5],
                         created_at=r[6], id=r[0])


def revision_arrays(revisions: Iterable[BlockRevision], turn_id: str | None,
                    now: float) -> list[list[Any]]:
    """Column arrays for INSERT_REVISIONS; `turn_id` (a finishing turn's) overrides theirs."""
    cols: list[list[Any]] = [[], [], [], [], [], []]
    for r in revisions:
        cols[0].append(clean(r.label))
        cols[1].append(clean(r.old_value))
        cols[2].append(clean(r.new_value))
        cols[3].append(r.source)
        cols[4].append(turn_id or r.turn_id)
        cols[5].append(now if r.created_at is None else float(r.created_at))
    return cols


class PostgresAdminMixin:
    """Operator queries of `PostgresStore` (see proxy/store/base.py for the contract)."""

    fts_config: str
    term_stats: TermStats
    if TYPE_CHECKING:  # provided by PostgresStore
        @property
        def pool(self) -> asyncpg.Pool: ...
        def _transaction(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]: ...

    # --- agents ---------------------------------------------------------------------------
    async def list_agents_page(self, tenant: str | None, *, after: tuple[str, str] | None = None,
                               limit: int = 100) -> list[Agent]:
        where, args = [], []
        if tenant is not None:
            args.append(tenant)
            where.append(f"tenant = ${len(args)}")
        if after is not None:
            args += [after[0], after[1]]
            where.append(f'(tenant COLLATE "C", agent_id COLLATE "C") > (${len(args) - 1},'
                         f" ${len(args)})")
        args.append(limit)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.pool.fetch(f'{AGENT}{clause} ORDER BY tenant COLLATE "C",'
                                     f' agent_id COLLATE "C" LIMIT ${len(args)}', *args)
        return [agent_row(r) for r in rows]

    async def agent_stats(self, agent_pks: list[int]) -> dict[int, AgentStats]:
        if not agent_pks:
            return {}
        rows = await self.pool.fetch(
            "SELECT a.pk, (SELECT count(*) FROM conversations c WHERE c.agent_pk = a.pk),"
            " a.recall_count, a.passage_count"
            " FROM agents a WHERE a.pk = ANY($1::bigint[])", list(agent_pks))
        return {r[0]: AgentStats(r[1], r[2], r[3]) for r in rows}

    async def create_agent(self, tenant: str, agent_id: str, blocks: list[Block],
                           settings: dict[str, Any], *, source: str = "api",
                           max_agents: int = 0) -> Agent | None:
        now = time.time()
        async with self._transaction() as conn:
            await check_agent_quota(conn, tenant, agent_id, max_agents)
            pk = await conn.fetchval(
                "INSERT INTO agents (tenant, agent_id, created_at, settings)"
                " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (tenant, agent_id) DO NOTHING"
                " RETURNING pk", tenant, agent_id, now, jsonb(settings))
            if pk is None:
                return None
            if blocks:
                await conn.execute(UPSERT_BLOCKS, pk, now, *block_arrays(blocks))
            created = [BlockRevision(b.label, "", b.value, source) for b in blocks if b.value]
            if created:
                await conn.execute(INSERT_REVISIONS, pk, *revision_arrays(created, None, now))
        return Agent(pk=pk, tenant=tenant, agent_id=agent_id, created_at=now,
                     settings=dict(settings))

    async def merge_agent_settings(self, agent_pk: int, patch: dict[str, Any]
                                   ) -> dict[str, Any] | None:
        async with self._transaction() as conn:
            raw = await conn.fetchval("SELECT settings FROM agents WHERE pk = $1 FOR UPDATE",
                                      agent_pk)
            if raw is None:
                return None
            settings = json.loads(raw)
            for key, value in patch.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            await conn.execute("UPDATE agents SET settings = $1::jsonb WHERE pk = $2",
                               jsonb(settings), agent_pk)
        return json.loads(jsonb(settings))

    # --- blocks and their history ---------------------------------------------------------
    async def get_block(self, agent_pk: int, label: str) -> Block | None:
        row = await self.pool.fetchrow(f"{_BLOCK} WHERE agent_pk = $1 AND label = $2",
                                       agent_pk, label)
        return None if row is None else block_row(row)

    async def write_block(self, agent_pk: int, block: Block, *, source: str,
                          turn_id: str | None = None) -> Block:
        now = time.time()
        async with self._transaction() as conn:
            old = await conn.fetchval("SELECT value FROM blocks WHERE agent_pk = $1"
                                      " AND label = $2 FOR UPDATE", agent_pk, block.label)
            await conn.execute(UPSERT_BLOCKS, agent_pk, now, *block_arrays([block]))
            if (old or "") != clean(block.value):
                revision = BlockRevision(block.label, old or "", block.value, source)
                await conn.execute(INSERT_REVISIONS, agent_pk,
                                   *revision_arrays([revision], turn_id, now))
        return Block(block.label, clean(block.value), clean(block.description), block.limit,
                     block.read_only, now)

    async def delete_block(self, agent_pk: int, label: str, *, source: str = "api") -> bool:
        now = time.time()
        async with self._transaction() as conn:
            row = await conn.fetchrow("DELETE FROM blocks WHERE agent_pk = $1 AND label = $2"
                                      " RETURNING value", agent_pk, label)
            if row is None:
                return False
            if row[0]:
                revision = BlockRevision(label, row[0], "", source)
                await conn.execute(INSERT_REVISIONS, agent_pk,
                                   *revision_arrays([revision], None, now))
        return True

    async def block_history(self, agent_pk: int, label: str, *, limit: int = 100
                            ) -> list[BlockRevision]:
        rows = await self.pool.fetch(
            f"{_REVISION} WHERE agent_pk = $1 AND label = $2 ORDER BY pk DESC LIMIT $3",
            agent_pk, label, limit)
        return [revision_row(r) for r in rows]

    async def undo_block(self, agent_pk: int, label: str, revision_id: int | None = None
                         ) -> Block | None:
        now = time.time()
        async with self._transaction() as conn:
            row = await conn.fetchrow(f"{_BLOCK} WHERE agent_pk = $1 AND label = $2 FOR UPDATE",
                                      agent_pk, label)
            if row is None:
                return None
            block = block_row(row)
            if revision_id is None:
                found = await conn.fetchrow(f"{_REVISION} WHERE agent_pk = $1 AND label = $2"
                                            " ORDER BY pk DESC LIMIT 1", agent_pk, label)
            else:
                found = await conn.fetchrow(f"{_REVISION} WHERE pk = $1 AND agent_pk = $2"
                                            " AND label = $3", revision_id, agent_pk, label)
            if found is None:
                return None
            restored = revision_row(found).old_value
            if len(restored) > block.limit:
                raise BlockTooLongError(label, len(restored), block.limit)
            await conn.execute("UPDATE blocks SET value = $1, updated_at = $2"
                               " WHERE agent_pk = $3 AND label = $4",
                               restored, now, agent_pk, label)
            revision = BlockRevision(label, block.value, restored, "undo")
            await conn.execute(INSERT_REVISIONS, agent_pk,
                               *revision_arrays([revision], None, now))
        block.value, block.updated_at = restored, now
        return block

    # --- conversations and messages -------------------------------------------------------
    async def list_conversation_stats(self, agent_pk: int) -> list[ConversationStats]:
        rows = await self.pool.fetch(
            "SELECT * FROM (SELECT c.pk, c.agent_pk, c.conversation_id, c.created_at, c.summary,"
            " c.resends_history, (SELECT count(*) FROM messages m WHERE m.conversation_pk = c.pk"
            " AND m.visible AND NOT m.superseded), (SELECT m.created_at FROM messages m"
            " WHERE m.conversation_pk = c.pk ORDER BY m.seq DESC LIMIT 1) AS last"
            " FROM conversations c WHERE c.agent_pk = $1) s"
            " ORDER BY coalesce(last, created_at) DESC, pk DESC", agent_pk)
        return [ConversationStats(conversation_row(r[:6]), r[6], r[7]) for r in rows]

    async def search_conversation(self, conversation_pk: int, agent_pk: int, query: str, *,
                                  limit: int = 100, include_superseded: bool = False
                                  ) -> list[tuple[StoredMessage, float]]:
        """BM25 within one conversation (search.py), equal scores oldest first."""
        found = conversation_search_sql(self.fts_config, agent_pk, conversation_pk, query,
                                        limit, include_superseded)
        if found is None:
            return []
        ctes, args = found
        rows = await self.pool.fetch(
            f"{ctes} SELECT {M_COLUMNS}, r.score::float8 AS score FROM ranked r"
            " JOIN messages m ON m.pk = r.pk ORDER BY score DESC, m.seq", *args)
        return [(message_row(r[:10]), r[10]) for r in rows]

    async def search_agent_messages(self, agent_pk: int, query: str, *,
                                    roles: list[str] | None = None, limit: int = 20,
                                    start: float | None = None, end: float | None = None
                                    ) -> list[tuple[str, StoredMessage, float]]:
        """The recall search (search.py, whose $1 is the agent) joined back to the rows."""
        budgeted = await self.term_stats.plan(self.pool.fetch, self.fts_config, "messages",
                                              agent_pk, query_words(query))
        inner, args = message_search_sql(self.fts_config, agent_pk, query, roles, limit,
                                         start, end, budgeted=budgeted)
        rows = await self.pool.fetch(
            f"WITH h(cid, seq, role, text, created_at, name, score) AS ({inner})"
            f" SELECT h.cid, h.score, {M_COLUMNS} FROM h"
            " JOIN conversations c ON c.agent_pk = $1 AND c.conversation_id = h.cid"
            " JOIN messages m ON m.conversation_pk = c.pk AND m.seq = h.seq"
            " ORDER BY h.score DESC, m.created_at DESC, m.pk DESC", *args)
        return [(r[0], message_row(r[2:12]), r[1]) for r in rows]

    async def messages_at(self, agent_pk: int, keys: list[tuple[str, int]]
                          ) -> dict[tuple[str, int], StoredMessage]:
        if not keys:
            return {}
        rows = await self.pool.fetch(
            f"SELECT c.conversation_id, {M_COLUMNS} FROM conversations c JOIN messages m"
            " ON m.conversation_pk = c.pk JOIN unnest($2::text[], $3::int[]) k(cid, seq)"
            " ON c.conversation_id = k.cid AND m.seq = k.seq WHERE c.agent_pk = $1",
            agent_pk, [cid for cid, _ in keys], [seq for _, seq in keys])
        return {(r[0], r[2]): message_row(r[1:11]) for r in rows}

    # --- passages -------------------------------------------------------------------------
    async def list_passages_page(self, agent_pk: int, *, tags: list[str] | None = None,
                                 limit: int = 100, offset: int = 0) -> list[Passage]:
        args: list[Any] = [agent_pk, limit, offset]
        where = "p.agent_pk = $1"
        if tags:
            args.append(jsonb(list(tags)))
            where += " AND p.tags @> $4::jsonb"
        rows = await self.pool.fetch(
            "SELECT p.pk, p.text, p.tags, p.created_at, NULL FROM passages p"
            f" WHERE {where} ORDER BY p.pk DESC LIMIT $2 OFFSET $3", *args)
        return [passage_row(r) for r in rows]


@contextlib.asynccontextmanager
async def snapshot(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A read-only REPEATABLE READ transaction: several reads, one consistent snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        yield conn
