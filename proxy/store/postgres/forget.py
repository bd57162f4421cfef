"""Deleting and forgetting on Postgres (store/forget_types.py, docs/forgetting.md).

As on SQLite (store/sqlite/forget.py): a conversation goes with one DELETE (messages, turns,
leases, summary job and vectors cascade; the search vector is a column of the message row; the
epoch trigger fires); a forgotten message is emptied in place, which recomputes its generated
tsvector to nothing, and its vector row, its turn's stored response and any summary that may
have covered it go in the same transaction.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ...core.forgetting import redact, scrub_lines
from ...errors import quota_exceeded
from ..forget_types import DELETE_CONVERSATION, FORGET, AuditEntry, Removed, Usage
from .message_terms import TermsIndexer, matching_vectors
from .search import tsquery_text
from .sql import rows_changed

if TYPE_CHECKING:
    import asyncpg

_PURGED = ("messages", "message_terms", "message_vectors", "passages", "passage_vectors",
           "turns", "conversations", "summary_jobs", "responses", "response_items")
_AUDIT = ("INSERT INTO forget_log (tenant, agent_id, actor, kind, conversations, messages,"
          " passages, responses, blocks, created_at)"
          " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")


async def audit(conn: asyncpg.Connection, tenant: str, agent_id: str, actor: str, kind: str,
                removed: Removed, now: float) -> None:
    await conn.execute(_AUDIT, tenant, agent_id, actor, kind, removed.conversations,
                       removed.messages, removed.passages, removed.responses, removed.blocks,
                       now)


async def _scrub_blocks(conn: asyncpg.Connection, agent_pk: int, words: list[str],
                        now: float) -> int:
    changed = 0
    for label, value in await conn.fetch(
            "SELECT label, value FROM blocks WHERE agent_pk = $1 FOR UPDATE", agent_pk):
        scrubbed = scrub_lines(words, value)
        if scrubbed != value:
            await conn.execute("UPDATE blocks SET value = $1, updated_at = $2"
                               " WHERE agent_pk = $3 AND label = $4", scrubbed, now, agent_pk,
                               label)
            changed += 1
    for pk, old, new in await conn.fetch(
            "SELECT pk, old_value, new_value FROM block_revisions WHERE agent_pk = $1",
            agent_pk):
        if (scrub_lines(words, old), scrub_lines(words, new)) != (old, new):
            await conn.execute("UPDATE block_revisions SET old_value = $1, new_value = $2"
                               " WHERE pk = $3", scrub_lines(words, old),
                               scrub_lines(words, new), pk)
    return changed


async def _forget_messages(conn: asyncpg.Connection, agent_pk: int,
                           keys: list[tuple[str, int]], now: float) -> int:
    if not keys:
        return 0
    rows = await conn.fetch(
        "SELECT m.pk, m.conversation_pk, m.data, m.turn_id, m.in_context"
        " FROM unnest($2::text[], $3::int[]) k(cid, seq)"
        " JOIN conversations c ON c.agent_pk = $1 AND c.conversation_id = k.cid"
        " JOIN messages m ON m.conversation_pk = c.pk AND m.seq = k.seq"
        " WHERE m.forgotten_at IS NULL FOR UPDATE OF m",
        agent_pk, [k[0] for k in keys], [k[1] for k in keys])
    if not rows:
        return 0
    steps = sorted({(r[1], r[3]) for r in rows})  # the turns' internal steps go with them
    rows += await conn.fetch(
        "SELECT m.pk, m.conversation_pk, m.data, m.turn_id, m.in_context"
        " FROM unnest($1::bigint[], $2::text[]) t(cpk, turn_id)"
        " JOIN messages m ON m.conversation_pk = t.cpk AND m.turn_id = t.turn_id"
        " WHERE NOT m.visible AND m.forgotten_at IS NULL AND NOT (m.pk = ANY($3::bigint[]))"
        " FOR UPDATE OF m", [s[0] for s in steps], [s[1] for s in steps], [r[0] for r in rows])
    pks = [r[0] for r in rows]
    await conn.execute(
        "UPDATE messages m SET data = u.data::json, text = '', forgotten_at = $3"
        " FROM unnest($1::bigint[], $2::text[]) u(pk, data) WHERE m.pk = u.pk",
        pks, [json.dumps(redact(json.loads(r[2])), ensure_ascii=False) for r in rows], now)
    await conn.execute("DELETE FROM message_vectors WHERE message_pk = ANY($1::bigint[])", pks)
    await conn.execute("UPDATE turns SET response = NULL WHERE turn_id = ANY($1::text[])",
                       sorted({r[3] for r in rows}))
    paged_out = sorted({r[1] for r in rows if not r[4]})  # their summary may mention them
    if paged_out:
        await conn.execute("UPDATE conversations SET summary = '' WHERE pk = ANY($1::bigint[])",
                           paged_out)
        await conn.execute("UPDATE messages SET summary = NULL WHERE conversation_pk ="
                           " ANY($1::bigint[]) AND summary IS NOT NULL", paged_out)
        await conn.execute("DELETE FROM summary_jobs WHERE conversation_pk = ANY($1::bigint[])",
                           paged_out)
    await conn.execute("UPDATE conversation_epoch SET value = value + 1 WHERE id = 1")
    return len(rows)


async def check_agent_quota(conn: asyncpg.Connection, tenant: str, agent_id: str,
                            max_agents: int) -> None:
    """Raise `quota_exceeded` when creating `agent_id` would pass `[limits] agents_per_tenant`.
    A transaction-scoped advisory lock per tenant serializes concurrent creators, so a burst at
    the edge cannot overshoot (the count is read after the lock, so it sees their commits)."""
    if not max_agents:
        return
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('memproxy-agents:' || $1,"
                       " 0))", tenant)
    if await conn.fetchval("SELECT 1 FROM agents WHERE tenant = $1 AND agent_id = $2",
                           tenant, agent_id) is not None:
        return
    if await conn.fetchval("SELECT count(*) FROM agents WHERE tenant = $1", tenant) >= max_agents:
        raise quota_exceeded("agents_per_tenant", max_agents)


class PostgresForget:
    """`ForgetStore` of `PostgresStore`."""

    if TYPE_CHECKING:  # provided by PostgresStore
        pool: asyncpg.Pool
        fts_config: str
        terms: TermsIndexer

        def _transaction(self) -> Any: ...

    async def delete_conversation(self, tenant: str, agent_id: str, agent_pk: int,
                                  conversation_id: str, actor: str) -> Removed | None:
        now = time.time()
        async with self._transaction() as conn:
            pk = await conn.fetchval("SELECT pk FROM conversations WHERE agent_pk = $1"
                                     " AND conversation_id = $2 FOR UPDATE",
                                     agent_pk, conversation_id)
            if pk is None:
                return None
            messages = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE conversation_pk = $1", pk)
            await conn.execute("DELETE FROM tree_backfill WHERE conversation_pk = $1", pk)
            await conn.execute("DELETE FROM conversations WHERE pk = $1", pk)
            responses = rows_changed(await conn.execute(
                "DELETE FROM responses WHERE tenant = $1 AND agent_id = $2"
                " AND conversation_id = $3", tenant, agent_id, conversation_id))
            removed = Removed(conversations=1, messages=messages, responses=responses)
            await audit(conn, tenant, agent_id, actor, DELETE_CONVERSATION, removed, now)
            return removed

    async def forget(self, tenant: str, agent_id: str, agent_pk: int,
                     messages: list[tuple[str, int]], passage_pks: list[int], *, actor: str,
                     kind: str = FORGET, words: list[str] | None = None) -> Removed:
        now = time.time()
        async with self._transaction() as conn:
            removed = Removed(messages=await _forget_messages(conn, agent_pk, messages, now))
            if words:
                removed.blocks = await _scrub_blocks(conn, agent_pk, words, now)
            if passage_pks:
                removed.passages = rows_changed(await conn.execute(
                    "DELETE FROM passages WHERE agent_pk = $1 AND pk = ANY($2::bigint[])",
                    agent_pk, passage_pks))
            if not removed.empty:
                await audit(conn, tenant, agent_id, actor, kind, removed, now)
        self.terms.kick()  # the forgotten messages were queued to be indexed again
        return removed

    async def expired_messages(self, agent_pk: int, before: float, limit: int
                               ) -> list[tuple[str, int]]:
        rows = await self.pool.fetch(
            "SELECT c.conversation_id, m.seq FROM messages m"
            " JOIN conversations c ON c.pk = m.conversation_pk"
            " WHERE m.agent_pk = $1 AND m.created_at < $2 AND m.forgotten_at IS NULL"
            " ORDER BY m.created_at LIMIT $3", agent_pk, before, limit)
        return [(r[0], r[1]) for r in rows]

    async def expire_agent_responses(self, tenant: str, agent_id: str, before: float) -> int:
        return rows_changed(await self.pool.execute(
            "DELETE FROM responses WHERE tenant = $1 AND agent_id = $2 AND created_at < $3",
            tenant, agent_id, before))

    async def retention_agents(self, after_pk: int, limit: int
                               ) -> list[tuple[int, str, str, dict]]:
        rows = await self.pool.fetch(
            "SELECT pk, tenant, agent_id, settings FROM agents WHERE pk > $1 ORDER BY pk"
            " LIMIT $2", after_pk, limit)
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    async def audit_log(self, tenant: str, agent_id: str | None, limit: int
                        ) -> list[AuditEntry]:
        rows = await self.pool.fetch(
            "SELECT pk, tenant, agent_id, actor, kind, conversations, messages, passages,"
            " responses, blocks, created_at FROM forget_log WHERE tenant = $1"
            " AND ($2::text IS NULL OR agent_id = $2) ORDER BY pk DESC LIMIT $3",
            tenant, agent_id, limit)
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], Removed(*r[5:10]), r[10])
                for r in rows]

    async def tenant_usage(self, tenant: str) -> Usage:
        row = await self.pool.fetchrow(
            "SELECT count(*), coalesce(sum(passage_count), 0), coalesce(sum(recall_count), 0)"
            " FROM agents WHERE tenant = $1", tenant)
        return Usage(agents=row[0], passages=int(row[1]), messages=int(row[2]))

    async def usage_by_tenant(self) -> dict[str, tuple[int, int, int]]:
        rows = await self.pool.fetch(
            "SELECT tenant, count(*), coalesce(sum(passage_count), 0),"
            " coalesce(sum(recall_count), 0) FROM agents GROUP BY tenant")
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    async def purge(self) -> None:
        """VACUUM the tables forgetting touches, so the dead row versions that still hold
        forgotten text are removed from their indexes and their space made reusable. The bytes
        stay in the data files until overwritten: `VACUUM FULL` (an exclusive lock, run by
        the operator) rewrites the tables for a physical erasure (docs/forgetting.md)."""
        async with self.pool.acquire() as conn:
            for table in _PURGED:
                await conn.execute(f"VACUUM {table}")

    async def storage_by_tenant(self) -> dict[str, int]:
        """Bytes of every tenant's messages, passages and blocks (one grouped scan)."""
        rows = await self.pool.fetch(
            "SELECT a.tenant, sum(s.n) FROM agents a JOIN ("
            " SELECT agent_pk, sum(octet_length(data::text)) AS n FROM messages"
            " GROUP BY agent_pk UNION ALL"
            " SELECT agent_pk, sum(octet_length(text)) FROM passages GROUP BY agent_pk"
            " UNION ALL"
            " SELECT agent_pk, sum(octet_length(value)) FROM blocks GROUP BY agent_pk"
            ") s ON s.agent_pk = a.pk GROUP BY a.tenant")
        return {r[0]: int(r[1] or 0) for r in rows}

    async def forget_candidates(self, agent_pk: int, query: str, limit: int
                                ) -> list[tuple[str, int, str]]:
        """(conversation id, seq, text) of up to `limit` of the agent's not-yet-forgotten
        messages whose search vector matches any word of `query`, superseded ones included
        (internal steps have no vector: they go with their turn's visible messages), unranked."""
        text = tsquery_text(query)
        if text is None:
            return []
        tsquery = (f"(websearch_to_tsquery('{self.fts_config}', memproxy_fold($2))"
                   " && memproxy_scope_query($1))")
        matches = matching_vectors(tsquery, "m.forgotten_at IS NULL",
                                   "m.conversation_pk, m.seq, m.text")
        rows = await self.pool.fetch(
            "SELECT c.conversation_id, h.seq, h.text"
            f" FROM ({matches}) h JOIN conversations c ON c.pk = h.conversation_pk"
            " LIMIT $3", agent_pk, text, limit)
        return [(r[0], r[1], r[2]) for r in rows]
