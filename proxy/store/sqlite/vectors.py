"""Embedding vectors in SQLite: the `SQLiteVectors` store mixin (the tables are migration 4's).

Vectors are float32 blobs in `passage_vectors` / `message_vectors`, scored in-process with
numpy (see proxy/embeddings/index.py); SQLite has no vector index to offer. Each vector row
copies what a search filters on and never changes (agent, and for messages role and
created_at), so the cache can filter without a join. Rows go away with their passage or
message (ON DELETE CASCADE); `vector_state` counters are kept by triggers, which also fire for
cascaded deletes.

The mixin relies on SQLiteStore's `_read` (one function on the reader thread) and `_write`
(one IMMEDIATE transaction on the writer thread).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

import numpy as np

from ...core.types import MessageHit, Passage
from ..vector_base import (
    CONTEXT_CHARS,
    EMBED_ROLES,
    MAX_EMBED_CHARS,
    MESSAGE,
    PASSAGE,
    ROLE_CODES,
    SCAN_ROWS,
    PendingPage,
    PendingText,
    VectorRows,
    VectorState,
    document_text,
    pack,
)

_ROLES_SQL = ", ".join(f"'{r}'" for r in EMBED_ROLES)
_ROLE_CASE = "CASE role " + " ".join(f"WHEN '{r}' THEN {c}" for r, c in ROLE_CODES.items()) + " END"

_PENDING = {
    PASSAGE: (
        f"SELECT p.pk, p.agent_pk, substr(p.text, 1, {MAX_EMBED_CHARS}) FROM passages p"
        " WHERE p.pk > ? AND p.pk <= ? AND p.text != ''"
        " AND NOT EXISTS (SELECT 1 FROM passage_vectors v WHERE v.passage_pk = p.pk"
        " AND v.model = ?) ORDER BY p.pk LIMIT ?"
    ),
    MESSAGE: (
        f"SELECT m.pk, m.agent_pk, substr(m.text, 1, {MAX_EMBED_CHARS}) FROM messages m"
        f" WHERE m.pk > ? AND m.pk <= ? AND m.visible = 1 AND m.superseded = 0"
        f" AND m.role IN ({_ROLES_SQL}) AND m.text != ''"
        " AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_pk = m.pk"
        " AND v.model = ?) ORDER BY m.pk LIMIT ?"
    ),
}
# With `context_turns` > 0, a message's earlier turns in its conversation (newest first, as a
# JSON array: the last CONTEXT_CHARS of each); a turn as in fts.py's NEIGHBOURS_SQL, read
# through the messages_visible index (conversation, seq).
_CONTEXT = (
    "(SELECT json_group_array(t) FROM (SELECT substr(p.text, -{chars}) AS t FROM messages p"
    " WHERE p.conversation_pk = m.conversation_pk AND p.seq < m.seq AND p.visible = 1"
    " AND p.superseded = 0 AND p.text <> '' AND (p.role = 'user' OR (p.role = 'assistant'"
    " AND json_extract(p.data, '$.tool_calls') IS NULL)) ORDER BY p.seq DESC LIMIT {turns}))"
)


def _pending_sql(kind: str, context_turns: int) -> str:
    if kind != MESSAGE or context_turns <= 0:
        return _PENDING[kind]
    context = _CONTEXT.format(chars=CONTEXT_CHARS, turns=int(context_turns))
    return _PENDING[MESSAGE].replace(" FROM messages m", f", {context} FROM messages m", 1)


_MAX_PK = {PASSAGE: "SELECT max(pk) FROM passages", MESSAGE: "SELECT max(pk) FROM messages"}
# A vector of another model is replaced; a row deleted meanwhile is skipped (the SELECT finds
# nothing); one written meanwhile by another process is kept (DO NOTHING).
_REPLACE = {
    PASSAGE: "DELETE FROM passage_vectors WHERE passage_pk = ? AND model != ?",
    MESSAGE: "DELETE FROM message_vectors WHERE message_pk = ? AND model != ?",
}
_INSERT = {
    PASSAGE: (
        "INSERT INTO passage_vectors (passage_pk, agent_pk, model, dim, vector, created_at)"
        " SELECT pk, agent_pk, ?, ?, ?, ? FROM passages WHERE pk = ?"
        " ON CONFLICT (passage_pk) DO NOTHING"
    ),
    MESSAGE: (
        "INSERT INTO message_vectors (message_pk, agent_pk, role, message_created_at, model, dim,"
        f" vector, created_at) SELECT pk, agent_pk, {_ROLE_CASE}, created_at, ?, ?, ?, ?"
        f" FROM messages WHERE pk = ? AND role IN ({_ROLES_SQL})"
        " ON CONFLICT (message_pk) DO NOTHING"
    ),
}
_LOAD = {
    PASSAGE: (
        "SELECT v.id, v.passage_pk, v.model = ?, CASE WHEN v.model = ? THEN v.vector END, p.tags"
        " FROM passage_vectors v JOIN passages p ON p.pk = v.passage_pk"
        " WHERE v.agent_pk = ? AND v.id > ? ORDER BY v.id"
    ),
    MESSAGE: (
        "SELECT id, message_pk, model = ?, CASE WHEN model = ? THEN vector END, role,"
        " message_created_at FROM message_vectors WHERE agent_pk = ? AND id > ? ORDER BY id"
    ),
}
_STATE = "SELECT rows, changes, removals FROM vector_state WHERE agent_pk = ? AND kind = ?"


def _state(db: sqlite3.Connection, kind: str, agent_pk: int) -> VectorState:
    row = db.execute(_STATE, (agent_pk, kind)).fetchone()
    return VectorState() if row is None else VectorState(*row)


def _pending(db: sqlite3.Connection, kind: str, model: str, after_pk: int,
             limit: int, context_turns: int = 0) -> PendingPage:
    last = db.execute(_MAX_PK[kind]).fetchone()[0] or 0
    upper = after_pk + SCAN_ROWS
    rows = db.execute(_pending_sql(kind, context_turns),
                      (after_pk, upper, model, limit)).fetchall()
    items = [PendingText(kind, r[0], r[1], r[2] if len(r) == 3
                         else document_text(r[2], json.loads(r[3])[::-1])) for r in rows]
    if len(items) >= limit:
        return PendingPage(items, items[-1].pk, items[-1].pk >= last)
    return PendingPage(items, min(upper, last), upper >= last)


def _load(db: sqlite3.Connection, kind: str, agent_pk: int, model: str,
          after_id: int) -> VectorRows:
    """State and rows in one read transaction: the same snapshot (see VectorIndex)."""
    db.execute("BEGIN")
    try:
        out = VectorRows(_state(db, kind, agent_pk), max_id=after_id)
        for row in db.execute(_LOAD[kind], (model, model, agent_pk, after_id)):
            out.scanned += 1
            out.max_id = row[0]
            if not row[2]:
                continue
            out.pks.append(row[1])
            out.blobs.append(row[3])
            if kind == PASSAGE:
                out.tags.append([] if row[4] == "[]" else json.loads(row[4]))
            else:
                out.roles.append(row[4])
                out.created.append(row[5])
    finally:
        db.execute("COMMIT")
    return out


class SQLiteVectors:
    """Vector methods for `SQLiteStore` (a mixin: it uses the store's `_read` / `_write`)."""

    async def pending_texts(self, kind: str, model: str, after_pk: int,
                            limit: int, context_turns: int = 0) -> PendingPage:
        """Rows of `kind` with pk > `after_pk` (within SCAN_ROWS) lacking a `model` vector;
        messages' texts with their `context_turns` earlier turns (vector_base.document_text)."""
        return await self._read(_pending, kind, model, after_pk, limit,  # type: ignore[attr-defined]
                                context_turns)

    async def put_vectors(self, kind: str, model: str,
                          vectors: Sequence[tuple[int, np.ndarray]]) -> int:
        """Store (item pk, vector) pairs for `model` in one transaction; returns rows added."""
        rows = [(pk, pack(v), int(v.shape[0])) for pk, v in vectors]
        return await self._write(_put, kind, model, rows, time.time())  # type: ignore[attr-defined]

    async def vector_state(self, kind: str, agent_pk: int) -> VectorState:
        return await self._read(_state, kind, agent_pk)  # type: ignore[attr-defined]

    async def load_vectors(self, kind: str, agent_pk: int, model: str,
                           after_id: int = 0) -> VectorRows:
        """The agent's vector rows with id > `after_id`, and the state they correspond to."""
        return await self._read(_load, kind, agent_pk, model, after_id)  # type: ignore[attr-defined]

    async def passages_by_pks(self, agent_pk: int, pks: Sequence[int]) -> list[Passage]:
        """The agent's passages among `pks`, in the order of `pks` (missing ones left out)."""
        if not pks:
            return []

        def run(db: sqlite3.Connection) -> list[Passage]:
            found = {r[0]: Passage(r[0], r[1], json.loads(r[2]), r[3]) for r in db.execute(
                "SELECT pk, text, tags, created_at FROM passages WHERE agent_pk = ?"
                " AND pk IN (SELECT value FROM json_each(?))", (agent_pk, json.dumps(list(pks))))}
            return [found[pk] for pk in pks if pk in found]

        return await self._read(run)  # type: ignore[attr-defined]

    async def message_hits_by_pks(self, agent_pk: int,
                                  pks: Sequence[int]) -> list[tuple[int, MessageHit]]:
        """(pk, hit) for the agent's searchable messages among `pks` (visible, not
        superseded), in the order of `pks`; score 0."""
        if not pks:
            return []

        def run(db: sqlite3.Connection) -> list[tuple[int, MessageHit]]:
            found = {r[0]: MessageHit(r[1], r[2], r[3], r[4], r[5], 0.0) for r in db.execute(
                "SELECT m.pk, (SELECT conversation_id FROM conversations"
                " WHERE pk = m.conversation_pk), m.seq, m.role, m.text, m.created_at"
                " FROM messages m WHERE m.agent_pk = ? AND m.visible = 1 AND m.superseded = 0"
                " AND m.pk IN (SELECT value FROM json_each(?))",
                (agent_pk, json.dumps(list(pks))))}
            return [(pk, found[pk]) for pk in pks if pk in found]

        return await self._read(run)  # type: ignore[attr-defined]


def _put(db: sqlite3.Connection, kind: str, model: str, rows: list[tuple[int, bytes, int]],
         now: float) -> int:
    db.executemany(_REPLACE[kind], [(pk, model) for pk, _, _ in rows])
    added = 0
    for pk, blob, dim in rows:
        added += db.execute(_INSERT[kind], (model, dim, blob, now, pk)).rowcount
    return added
