"""The operator side of the SQLite store: agent pages and stats, block writes with history,
conversation stats and search within one conversation (the agents REST API).

A mixin of `SQLiteStore`, using its `_read`/`_write` plumbing (one thread hop per call, writes
as one IMMEDIATE transaction) and its row converters. Export and import are the other mixin,
in `admin_dump.py`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from ...core.types import Agent, Block, BlockRevision, Passage, StoredMessage
from ..admin_types import AgentStats, BlockTooLongError, ConversationStats
from . import rows as core
from .forget import check_agent_quota
from .fts import MESSAGE_BM25, message_match, message_search_sql

if TYPE_CHECKING:
    from collections.abc import Callable

_BLOCK = "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
_REVISION = ("SELECT pk, label, old_value, new_value, source, turn_id, created_at"
             " FROM block_revisions")
INSERT_REVISION = (
    "INSERT INTO block_revisions (agent_pk, label, old_value, new_value, source, turn_id,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# The columns of rows.py's _MSG, qualified, in its order (for core._message).
M_COLUMNS = ("m.pk, m.seq, m.data, m.turn_id, m.created_at, m.in_context, m.visible,"
             " m.superseded, m.tokens, m.visible_hash")
_HAS_ALL_TAGS = (
    "NOT EXISTS (SELECT 1 FROM json_each(?) w"
    " WHERE w.value NOT IN (SELECT h.value FROM json_each(p.tags) h))"
)


def block_row(r: tuple) -> Block:
    return Block(r[0], r[1], r[2], r[3], bool(r[4]), r[5])


def revision_row(r: tuple) -> BlockRevision:
    return BlockRevision(label=r[1], old_value=r[2], new_value=r[3], source=r[4], turn_id=r[5],
                         created_at=r[6], id=r[0])


def insert_revisions(db: sqlite3.Connection, agent_pk: int, revisions: list[BlockRevision],
                     turn_id: str | None, now: float) -> None:
    """Record revisions; `turn_id` (a finishing turn's) overrides theirs when given."""
    db.executemany(INSERT_REVISION, (
        (agent_pk, r.label, r.old_value, r.new_value, r.source, turn_id or r.turn_id,
         r.created_at if r.created_at is not None else now)
        for r in revisions
    ))


def _write_block(db: sqlite3.Connection, agent_pk: int, block: Block, source: str,
                 turn_id: str | None, now: float) -> None:
    row = db.execute("SELECT value FROM blocks WHERE agent_pk = ? AND label = ?",
                     (agent_pk, block.label)).fetchone()
    core._upsert_blocks(db, agent_pk, [block], now)
    old = "" if row is None else row[0]
    if old != block.value:
        insert_revisions(db, agent_pk, [BlockRevision(block.label, old, block.value, source)],
                         turn_id, now)


class SQLiteAdminMixin:
    """Operator queries of `SQLiteStore` (see proxy/store/base.py for the contract)."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        async def _read(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def _write(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def _fetch(self, sql: str, params: tuple, convert: Callable[[tuple], Any]
                         ) -> list[Any]: ...
        async def _fetch_one(self, sql: str, params: tuple) -> tuple | None: ...
        async def _index_pending(self) -> None: ...

    # --- agents ---------------------------------------------------------------------------
    async def list_agents_page(self, tenant: str | None, *, after: tuple[str, str] | None = None,
                               limit: int = 100) -> list[Agent]:
        """By (tenant, agent_id) in byte order (SQLite's BINARY collation), from the unique
        index, after the cursor."""
        where, params = [], []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if after is not None:
            where.append("(tenant, agent_id) > (?, ?)")
            params += [after[0], after[1]]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return await self._fetch(f"{core._AGENT}{clause} ORDER BY tenant, agent_id LIMIT ?",
                                 (*params, limit), core._agent)

    async def agent_stats(self, agent_pks: list[int]) -> dict[int, AgentStats]:
        if not agent_pks:
            return {}
        rows = await self._fetch(
            "SELECT a.pk, (SELECT count(*) FROM conversations c WHERE c.agent_pk = a.pk),"
            " a.recall_count, a.passage_count"
            " FROM agents a WHERE a.pk IN (SELECT value FROM json_each(?))",
            (json.dumps(list(agent_pks)),), tuple)
        return {r[0]: AgentStats(r[1], r[2], r[3]) for r in rows}

    async def create_agent(self, tenant: str, agent_id: str, blocks: list[Block],
                           settings: dict[str, Any], *, source: str = "api",
                           max_agents: int = 0) -> Agent | None:
        now = time.time()

        def run(db: sqlite3.Connection) -> Agent | None:
            check_agent_quota(db, tenant, agent_id, max_agents)
            cur = db.execute(
                "INSERT INTO agents (tenant, agent_id, created_at, settings) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant, agent_id) DO NOTHING",
                (tenant, agent_id, now, core._dumps(settings)))
            if cur.rowcount != 1:
                return None
            pk = cur.lastrowid
            core._upsert_blocks(db, pk, blocks, now)
            insert_revisions(db, pk, [BlockRevision(b.label, "", b.value, source)
                                      for b in blocks if b.value], None, now)
            return Agent(pk=pk, tenant=tenant, agent_id=agent_id, created_at=now,
                         settings=dict(settings))

        return await self._write(run)

    async def merge_agent_settings(self, agent_pk: int, patch: dict[str, Any]
                                   ) -> dict[str, Any] | None:
        def run(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT settings FROM agents WHERE pk = ?", (agent_pk,)).fetchone()
            if row is None:
                return None
            settings = json.loads(row[0])
            for key, value in patch.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            db.execute("UPDATE agents SET settings = ? WHERE pk = ?",
                       (core._dumps(settings), agent_pk))
            return settings

        return await self._write(run)

    # --- blocks and their history ---------------------------------------------------------
    async def get_block(self, agent_pk: int, label: str) -> Block | None:
        row = await self._fetch_one(f"{_BLOCK} WHERE agent_pk = ? AND label = ?",
                                    (agent_pk, label))
        return None if row is None else block_row(row)

    async def write_block(self, agent_pk: int, block: Block, *, source: str,
                          turn_id: str | None = None) -> Block:
        now = time.time()
        await self._write(_write_block, agent_pk, block, source, turn_id, now)
        return Block(block.label, block.value, block.description, block.limit, block.read_only,
                     now)

    async def delete_block(self, agent_pk: int, label: str, *, source: str = "api") -> bool:
        now = time.time()

        def run(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT value FROM blocks WHERE agent_pk = ? AND label = ?",
                             (agent_pk, label)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM blocks WHERE agent_pk = ? AND label = ?", (agent_pk, label))
            if row[0]:
                insert_revisions(db, agent_pk, [BlockRevision(label, row[0], "", source)],
                                 None, now)
            return True

        return await self._write(run)

    async def block_history(self, agent_pk: int, label: str, *, limit: int = 100
                            ) -> list[BlockRevision]:
        return await self._fetch(
            f"{_REVISION} WHERE agent_pk = ? AND label = ? ORDER BY pk DESC LIMIT ?",
            (agent_pk, label, limit), revision_row)

    async def undo_block(self, agent_pk: int, label: str, revision_id: int | None = None
                         ) -> Block | None:
        now = time.time()

        def run(db: sqlite3.Connection) -> Block | None:
            row = db.execute(f"{_BLOCK} WHERE agent_pk = ? AND label = ?",
                             (agent_pk, label)).fetchone()
            if row is None:
                return None
            block = block_row(row)
            if revision_id is None:
                found = db.execute(f"{_REVISION} WHERE agent_pk = ? AND label = ?"
                                   " ORDER BY pk DESC LIMIT 1", (agent_pk, label)).fetchone()
            else:
                found = db.execute(f"{_REVISION} WHERE pk = ? AND agent_pk = ? AND label = ?",
                                   (revision_id, agent_pk, label)).fetchone()
            if found is None:
                return None
            restored = revision_row(found).old_value
            if len(restored) > block.limit:
                raise BlockTooLongError(label, len(restored), block.limit)
            db.execute("UPDATE blocks SET value = ?, updated_at = ? WHERE agent_pk = ?"
                       " AND label = ?", (restored, now, agent_pk, label))
            insert_revisions(db, agent_pk, [BlockRevision(label, block.value, restored, "undo")],
                             None, now)
            block.value, block.updated_at = restored, now
            return block

        return await self._write(run)

    # --- conversations and messages -------------------------------------------------------
    async def list_conversation_stats(self, agent_pk: int) -> list[ConversationStats]:
        """Counts from the messages_visible partial index; the last message by the newest seq
        (the unique (conversation_pk, seq) index), not a scan of created_at."""
        rows = await self._fetch(
            "SELECT * FROM (SELECT c.pk, c.agent_pk, c.conversation_id, c.created_at, c.summary,"
            " c.resends_history, (SELECT count(*) FROM messages m WHERE m.conversation_pk = c.pk"
            " AND m.visible = 1 AND m.superseded = 0), (SELECT m.created_at FROM messages m"
            " WHERE m.conversation_pk = c.pk ORDER BY m.seq DESC LIMIT 1) AS last"
            " FROM conversations c WHERE c.agent_pk = ?)"
            " ORDER BY coalesce(last, created_at) DESC, pk DESC", (agent_pk,), tuple)
        return [ConversationStats(core._conversation(r[:6]), r[6], r[7]) for r in rows]

    async def search_conversation(self, conversation_pk: int, agent_pk: int, query: str, *,
                                  limit: int = 100, include_superseded: bool = False
                                  ) -> list[tuple[StoredMessage, float]]:
        expr = message_match(query, agent_pk)
        if expr is None:
            return []
        await self._index_pending()
        hide = "" if include_superseded else " AND m.superseded = 0"
        return await self._fetch(
            f"SELECT {M_COLUMNS}, -{MESSAGE_BM25} AS score FROM messages_fts"
            " CROSS JOIN messages m ON m.pk = messages_fts.rowid WHERE messages_fts MATCH ?"
            f" AND m.conversation_pk = ? AND m.visible = 1{hide}"
            " ORDER BY score DESC, m.seq LIMIT ?", (expr, conversation_pk, limit),
            lambda r: (core._message(r[:10]), r[10]))

    async def search_agent_messages(self, agent_pk: int, query: str, *,
                                    roles: list[str] | None = None, limit: int = 20,
                                    start: float | None = None, end: float | None = None
                                    ) -> list[tuple[str, StoredMessage, float]]:
        """The recall search (fts.py) joined back to the whole rows."""
        await self._index_pending()
        inner, params = message_search_sql(agent_pk, query, roles, limit, start, end)
        sql = (f"WITH h(cid, seq, role, text, created_at, name, score) AS ({inner})"
               f" SELECT h.cid, h.score, {M_COLUMNS} FROM h"
               " JOIN conversations c ON c.agent_pk = ? AND c.conversation_id = h.cid"
               " JOIN messages m ON m.conversation_pk = c.pk AND m.seq = h.seq"
               " ORDER BY h.score DESC, m.created_at DESC, m.pk DESC")
        return await self._fetch(sql, (*params, agent_pk),
                                 lambda r: (r[0], core._message(r[2:12]), r[1]))

    async def messages_at(self, agent_pk: int, keys: list[tuple[str, int]]
                          ) -> dict[tuple[str, int], StoredMessage]:
        by_conversation: dict[str, list[int]] = {}
        for cid, seq in keys:
            by_conversation.setdefault(cid, []).append(seq)
        out: dict[tuple[str, int], StoredMessage] = {}
        for cid, seqs in by_conversation.items():  # searches hit few conversations
            found = await self._fetch(
                f"SELECT {M_COLUMNS} FROM conversations c JOIN messages m"
                " ON m.conversation_pk = c.pk WHERE c.agent_pk = ? AND c.conversation_id = ?"
                f" AND m.seq IN ({', '.join('?' * len(seqs))})", (agent_pk, cid, *seqs),
                core._message)
            out.update({(cid, m.seq): m for m in found})
        return out

    # --- passages -------------------------------------------------------------------------
    async def list_passages_page(self, agent_pk: int, *, tags: list[str] | None = None,
                                 limit: int = 100, offset: int = 0) -> list[Passage]:
        where, params = ["p.agent_pk = ?"], [agent_pk]
        if tags:
            where.append(_HAS_ALL_TAGS)
            params.append(json.dumps(list(tags), ensure_ascii=False))
        return await self._fetch(
            "SELECT p.pk, p.text, p.tags, p.created_at, NULL FROM passages p"
            f" WHERE {' AND '.join(where)} ORDER BY p.pk DESC LIMIT ? OFFSET ?",
            (*params, limit, offset), core._passage)
