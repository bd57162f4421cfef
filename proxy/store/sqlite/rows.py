"""Rows of the SQLite store: its SQL, the converters from rows to core types, and the
statement helpers a turn's transactions share (shared by the store and its mixins)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from ...core.messages import message_text
from ...core.types import Agent, Block, Conversation, NewMessage, Passage, StoredMessage, Turn
from ...fastjson import dumps_text, tolerant_loads

_AGENT = "SELECT pk, tenant, agent_id, created_at, settings FROM agents"
_CONV = (
    "SELECT pk, agent_pk, conversation_id, created_at, summary, resends_history FROM conversations"
)
_MSG = (
    "SELECT pk, seq, data, turn_id, created_at, in_context, visible, superseded, tokens,"
    " visible_hash, parent_seq, path_hash FROM messages"
)
_TURN = (
    "SELECT turn_id, conversation_pk, status, request_hash, idempotency_key, created_at,"
    " response, first_seq, finished_at FROM turns"
)
# The literal `in_context = 1 AND superseded = 0` / `visible = 1 AND superseded = 0` terms are
# what lets the planner use the partial indexes messages_context / messages_visible.
SQL_CONTEXT = f"{_MSG} WHERE conversation_pk = ? AND in_context = 1 AND superseded = 0 ORDER BY seq"
SQL_VISIBLE = f"{_MSG} WHERE conversation_pk = ? AND visible = 1 AND superseded = 0 ORDER BY seq"
_NEXT_SEQ = (
    "SELECT agent_pk, COALESCE((SELECT seq FROM messages WHERE conversation_pk = c.pk"
    " ORDER BY seq DESC LIMIT 1), 0) + 1 FROM conversations c WHERE c.pk = ?"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text, created_at,"
    " in_context, visible, tokens, visible_hash, parent_seq, path_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_BLOCK = (
    "INSERT INTO blocks (agent_pk, label, value, description, lim, read_only, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_pk, label) DO UPDATE SET"
    " value = excluded.value, description = excluded.description, lim = excluded.lim,"
    " read_only = excluded.read_only, updated_at = excluded.updated_at"
)
_INSERT_PASSAGE = "INSERT INTO passages (agent_pk, text, tags, created_at) VALUES (?, ?, ?, ?)"


_dumps = dumps_text
_loads = tolerant_loads


def _agent(r: tuple) -> Agent:
    return Agent(pk=r[0], tenant=r[1], agent_id=r[2], created_at=r[3], settings=json.loads(r[4]))


def _conversation(r: tuple) -> Conversation:
    resends = None if r[5] is None else bool(r[5])
    return Conversation(r[0], r[1], r[2], r[3], summary=r[4], resends_history=resends)


def _message(r: tuple) -> StoredMessage:
    """A row of `_MSG` (its first ten columns are enough: the tree's come after them)."""
    tree = len(r) > 10
    return StoredMessage(
        seq=r[1], data=_loads(r[2]), turn_id=r[3], created_at=r[4], in_context=bool(r[5]),
        visible=bool(r[6]), superseded=bool(r[7]), tokens=r[8], visible_hash=r[9], pk=r[0],
        parent_seq=r[10] if tree else None, path_hash=r[11] if tree else None,
    )


def _turn(r: tuple | None) -> Turn | None:
    if r is None:
        return None
    response = None if r[6] is None else _loads(r[6])
    return Turn(r[0], r[1], r[2], r[3], r[4], r[5], response=response, first_seq=r[7],
                finished_at=r[8])


def _passage(r: tuple) -> Passage:
    return Passage(pk=r[0], text=r[1], tags=json.loads(r[2]), created_at=r[3], score=r[4])


def _insert_messages(
    db: sqlite3.Connection, conversation_pk: int, agent_pk: int, turn_id: str, first_seq: int,
    messages: Iterable[NewMessage], now: float, parent_seq: int | None = None,
) -> None:
    """Append `messages` as a chain: the first follows `parent_seq` (default: the row before
    it), each next one the one before. Their path hashes come with them (the turn computes
    them: core/tree.py)."""
    first_parent = first_seq - 1 if parent_seq is None else parent_seq
    # A generator: a message that fails to serialise aborts the batch (and the transaction).
    # The full-text index picks the rows up later, in batches (fts.index_pending).
    db.executemany(_INSERT_MESSAGE, (
        (conversation_pk, agent_pk, first_seq + i, turn_id, str(m.data.get("role", "")),
         _dumps(m.data), message_text(m.data), now, int(m.in_context), int(m.visible),
         m.tokens, m.visible_hash, first_parent if i == 0 else first_seq + i - 1, m.path_hash)
        for i, m in enumerate(messages)
    ))


def _upsert_blocks(db: sqlite3.Connection, agent_pk: int, blocks: Iterable[Block],
                   now: float) -> None:
    db.executemany(_UPSERT_BLOCK, (
        (agent_pk, b.label, b.value, b.description, b.limit, int(b.read_only), now)
        for b in blocks
    ))


def _next_seq(db: sqlite3.Connection, conversation_pk: int) -> tuple[int, int]:
    """(agent_pk, next free seq) of a conversation, from the (conversation_pk, seq) index."""
    row = db.execute(_NEXT_SEQ, (conversation_pk,)).fetchone()
    if row is None:
        raise LookupError(f"no conversation with pk {conversation_pk}")
    return row[0], row[1]
