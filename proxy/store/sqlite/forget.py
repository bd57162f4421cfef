"""Deleting and forgetting on SQLite (store/forget_types.py, docs/forgetting.md).

A conversation is deleted with one DELETE: its messages, turns, leases and summary job cascade,
the messages' full-text rows go with them (triggers) and their vectors too (ON DELETE
CASCADE); the conversation epoch trigger makes every process decode its contexts afresh.
A forgotten message is emptied in place (core/forgetting.py): the text update trigger takes it
out of the full-text index, its vector row is deleted, its turn's stored response (kept to
replay a retried request) is dropped, and a summary of the conversation that may have covered
it (one of its rows was paged out) is dropped with any queued summary job. The internal steps
of a forgotten message's turn (memory tool calls and results, never shown) go with it: they
are where the model copied what was said. The epoch is bumped
so no process keeps the old text decoded in memory.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from ...core.forgetting import redact, scrub_lines
from ...errors import quota_exceeded
from ..forget_types import DELETE_CONVERSATION, FORGET, AuditEntry, Removed, Usage
from .fts import message_match

if TYPE_CHECKING:
    from collections.abc import Callable

_BATCH = 500


def _in(n: int) -> str:
    return ", ".join("?" * n)


def audit(db: sqlite3.Connection, tenant: str, agent_id: str, actor: str, kind: str,
          removed: Removed, now: float) -> None:
    db.execute(
        "INSERT INTO forget_log (tenant, agent_id, actor, kind, conversations, messages,"
        " passages, responses, blocks, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (tenant, agent_id, actor, kind, removed.conversations, removed.messages,
         removed.passages, removed.responses, removed.blocks, now))


def _scrub_blocks(db: sqlite3.Connection, agent_pk: int, words: list[str], now: float) -> int:
    changed = 0
    for label, value in db.execute("SELECT label, value FROM blocks WHERE agent_pk = ?",
                                   (agent_pk,)).fetchall():
        scrubbed = scrub_lines(words, value)
        if scrubbed != value:
            db.execute("UPDATE blocks SET value = ?, updated_at = ? WHERE agent_pk = ?"
                       " AND label = ?", (scrubbed, now, agent_pk, label))
            changed += 1
    for pk, old, new in db.execute("SELECT pk, old_value, new_value FROM block_revisions"
                                   " WHERE agent_pk = ?", (agent_pk,)).fetchall():
        if (scrub_lines(words, old), scrub_lines(words, new)) != (old, new):
            db.execute("UPDATE block_revisions SET old_value = ?, new_value = ? WHERE pk = ?",
                       (scrub_lines(words, old), scrub_lines(words, new), pk))
    return changed


def _forget_messages(db: sqlite3.Connection, agent_pk: int, keys: list[tuple[str, int]],
                     now: float) -> int:
    rows: list[tuple] = []
    by_conversation: dict[str, list[int]] = {}
    for cid, seq in keys:
        by_conversation.setdefault(cid, []).append(seq)
    for cid, seqs in by_conversation.items():
        for i in range(0, len(seqs), _BATCH):
            part = seqs[i:i + _BATCH]
            rows += db.execute(
                "SELECT m.pk, m.conversation_pk, m.data, m.turn_id, m.in_context"
                " FROM conversations c JOIN messages m ON m.conversation_pk = c.pk"
                " WHERE c.agent_pk = ? AND c.conversation_id = ? AND m.forgotten_at IS NULL"
                f" AND m.seq IN ({_in(len(part))})", (agent_pk, cid, *part)).fetchall()
    if not rows:
        return 0
    seen = {r[0] for r in rows}
    for conversation_pk, turn_id in sorted({(r[1], r[3]) for r in rows}):  # the turn's steps
        rows += [r for r in db.execute(
            "SELECT pk, conversation_pk, data, turn_id, in_context FROM messages"
            " WHERE conversation_pk = ? AND turn_id = ? AND visible = 0"
            " AND forgotten_at IS NULL", (conversation_pk, turn_id)) if r[0] not in seen]
    db.executemany(
        "UPDATE messages SET data = ?, text = '', forgotten_at = ? WHERE pk = ?",
        ((json.dumps(redact(json.loads(r[2])), ensure_ascii=False), now, r[0]) for r in rows))
    pks = [r[0] for r in rows]
    for i in range(0, len(pks), _BATCH):
        part = pks[i:i + _BATCH]
        db.execute(f"DELETE FROM message_vectors WHERE message_pk IN ({_in(len(part))})", part)
    turn_ids = sorted({r[3] for r in rows})
    for i in range(0, len(turn_ids), _BATCH):
        part = turn_ids[i:i + _BATCH]
        db.execute(f"UPDATE turns SET response = NULL WHERE turn_id IN ({_in(len(part))})",
                   part)
    for conversation_pk in sorted({r[1] for r in rows if not r[4]}):  # paged out: summarized
        db.execute("UPDATE conversations SET summary = '' WHERE pk = ?", (conversation_pk,))
        db.execute("UPDATE messages SET summary = NULL WHERE conversation_pk = ?"
                   " AND summary IS NOT NULL", (conversation_pk,))
        db.execute("DELETE FROM summary_jobs WHERE conversation_pk = ?", (conversation_pk,))
    db.execute("UPDATE conversation_epoch SET value = value + 1 WHERE id = 1")
    return len(rows)


def check_agent_quota(db: sqlite3.Connection, tenant: str, agent_id: str, max_agents: int
                      ) -> None:
    """Raise `quota_exceeded` when creating `agent_id` would pass `[limits] agents_per_tenant`
    (inside the creating transaction; SQLite serializes writers, so no burst overshoots)."""
    if not max_agents:
        return
    if db.execute("SELECT 1 FROM agents WHERE tenant = ? AND agent_id = ?",
                  (tenant, agent_id)).fetchone() is not None:
        return
    count = db.execute("SELECT count(*) FROM agents WHERE tenant = ?", (tenant,)).fetchone()[0]
    if count >= max_agents:
        raise quota_exceeded("agents_per_tenant", max_agents)


def _securely(db: sqlite3.Connection, run: Callable[[sqlite3.Connection], Any]) -> Any:
    """`run(db)` with `secure_delete` on: the bytes of what it deletes or shortens are zeroed
    in the pages it frees, not left behind in the file."""
    db.execute("PRAGMA secure_delete = ON")
    try:
        return run(db)
    finally:
        db.execute("PRAGMA secure_delete = OFF")


def _compact_index(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA secure_delete = ON")
    try:
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")
        db.execute("INSERT INTO passages_fts (passages_fts) VALUES ('optimize')")
    finally:
        db.execute("PRAGMA secure_delete = OFF")


class SQLiteForget:
    """`ForgetStore` of `SQLiteStore`."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        async def _read(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def _write(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def _index_pending(self) -> None: ...

    async def delete_conversation(self, tenant: str, agent_id: str, agent_pk: int,
                                  conversation_id: str, actor: str) -> Removed | None:
        now = time.time()

        def run(db: sqlite3.Connection) -> Removed | None:
            row = db.execute("SELECT pk FROM conversations WHERE agent_pk = ?"
                             " AND conversation_id = ?", (agent_pk, conversation_id)).fetchone()
            if row is None:
                return None
            messages = db.execute("SELECT count(*) FROM messages WHERE conversation_pk = ?",
                                  (row[0],)).fetchone()[0]
            db.execute("DELETE FROM tree_backfill WHERE conversation_pk = ?", (row[0],))
            db.execute("DELETE FROM conversations WHERE pk = ?", (row[0],))
            responses = db.execute(
                "DELETE FROM responses WHERE tenant = ? AND agent_id = ? AND conversation_id = ?",
                (tenant, agent_id, conversation_id)).rowcount
            removed = Removed(conversations=1, messages=messages, responses=responses)
            audit(db, tenant, agent_id, actor, DELETE_CONVERSATION, removed, now)
            return removed

        return await self._write(_securely, run)

    async def forget(self, tenant: str, agent_id: str, agent_pk: int,
                     messages: list[tuple[str, int]], passage_pks: list[int], *, actor: str,
                     kind: str = FORGET, words: list[str] | None = None) -> Removed:
        now = time.time()

        def run(db: sqlite3.Connection) -> Removed:
            removed = Removed(messages=_forget_messages(db, agent_pk, messages, now))
            if words:
                removed.blocks = _scrub_blocks(db, agent_pk, words, now)
            for i in range(0, len(passage_pks), _BATCH):
                part = passage_pks[i:i + _BATCH]
                removed.passages += db.execute(
                    f"DELETE FROM passages WHERE agent_pk = ? AND pk IN ({_in(len(part))})",
                    (agent_pk, *part)).rowcount
            if not removed.empty:
                audit(db, tenant, agent_id, actor, kind, removed, now)
            return removed

        return await self._write(_securely, run)

    async def expired_messages(self, agent_pk: int, before: float, limit: int
                               ) -> list[tuple[str, int]]:
        return await self._read(lambda db: db.execute(
            "SELECT c.conversation_id, m.seq FROM messages m INDEXED BY messages_retention"
            " JOIN conversations c ON c.pk = m.conversation_pk"
            " WHERE m.agent_pk = ? AND m.created_at < ? AND m.forgotten_at IS NULL"
            " ORDER BY m.created_at LIMIT ?", (agent_pk, before, limit)).fetchall())

    async def expire_agent_responses(self, tenant: str, agent_id: str, before: float) -> int:
        return await self._write(lambda db: db.execute(
            "DELETE FROM responses WHERE tenant = ? AND agent_id = ? AND created_at < ?",
            (tenant, agent_id, before)).rowcount)

    async def retention_agents(self, after_pk: int, limit: int
                               ) -> list[tuple[int, str, str, dict]]:
        rows = await self._read(lambda db: db.execute(
            "SELECT pk, tenant, agent_id, settings FROM agents WHERE pk > ? ORDER BY pk LIMIT ?",
            (after_pk, limit)).fetchall())
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    async def audit_log(self, tenant: str, agent_id: str | None, limit: int
                        ) -> list[AuditEntry]:
        where, params = "tenant = ?", [tenant]
        if agent_id is not None:
            where += " AND agent_id = ?"
            params.append(agent_id)
        rows = await self._read(lambda db: db.execute(
            "SELECT pk, tenant, agent_id, actor, kind, conversations, messages, passages,"
            f" responses, blocks, created_at FROM forget_log WHERE {where} ORDER BY pk DESC"
            " LIMIT ?", (*params, limit)).fetchall())
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], Removed(*r[5:10]), r[10])
                for r in rows]

    async def tenant_usage(self, tenant: str) -> Usage:
        row = await self._read(lambda db: db.execute(
            "SELECT count(*), coalesce(sum(passage_count), 0), coalesce(sum(recall_count), 0)"
            " FROM agents WHERE tenant = ?", (tenant,)).fetchone())
        return Usage(agents=row[0], passages=row[1], messages=row[2])

    async def usage_by_tenant(self) -> dict[str, tuple[int, int, int]]:
        rows = await self._read(lambda db: db.execute(
            "SELECT tenant, count(*), coalesce(sum(passage_count), 0),"
            " coalesce(sum(recall_count), 0) FROM agents GROUP BY tenant").fetchall())
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    async def purge(self) -> None:
        """Erase what forgetting left physically behind: FTS5 keeps a deleted row's terms in
        its index segments until they are merged, and the write-ahead log keeps old page
        images until a checkpoint. Rewrites both full-text indexes (secure_delete on, so the
        freed pages are zeroed), then checkpoints and truncates the log. Costs a rewrite of the
        indexes: an operator's command (`memproxy purge`), not part of every forget."""
        await self._write(_compact_index)
        await self._read(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())

    async def storage_by_tenant(self) -> dict[str, int]:
        """Bytes of every tenant's messages, passages and blocks (one grouped scan)."""
        rows = await self._read(lambda db: db.execute(
            "SELECT a.tenant, sum(s.n) FROM agents a JOIN ("
            " SELECT agent_pk, sum(length(CAST(data AS BLOB))) AS n FROM messages"
            " GROUP BY agent_pk UNION ALL"
            " SELECT agent_pk, sum(length(CAST(text AS BLOB))) FROM passages GROUP BY agent_pk"
            " UNION ALL"
            " SELECT agent_pk, sum(length(CAST(value AS BLOB))) FROM blocks GROUP BY agent_pk"
            ") s ON s.agent_pk = a.pk GROUP BY a.tenant").fetchall())
        return {r[0]: int(r[1] or 0) for r in rows}

    async def forget_candidates(self, agent_pk: int, query: str, limit: int
                                ) -> list[tuple[str, int, str]]:
        """(conversation id, seq, text) of up to `limit` of the agent's not-yet-forgotten
        messages the full-text index matches for any word of `query`: every row, superseded
        and internal ones too (search shows neither), unranked."""
        expr = message_match(query, agent_pk)
        if expr is None:
            return []
        await self._index_pending()
        return await self._read(lambda db: db.execute(
            "SELECT c.conversation_id, m.seq, m.text FROM messages_fts"
            " CROSS JOIN messages m ON m.pk = messages_fts.rowid"
            " JOIN conversations c ON c.pk = m.conversation_pk"
            " WHERE messages_fts MATCH ? AND m.forgotten_at IS NULL LIMIT ?",
            (expr, limit)).fetchall())
