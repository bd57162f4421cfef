"""Statements and row/parameter conversions of the Postgres store (see store.py).

Every statement uses positional parameters; batches are passed as arrays and expanded with
`unnest ... WITH ORDINALITY`, so a call costs one round trip per statement whatever its size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ...core.messages import message_text
from ...core.types import Agent, Block, Conversation, NewMessage, Passage, StoredMessage, Turn
from ...fastjson import dumps_text as dumps
from ...fastjson import tolerant_loads as fast_loads

AGENT = "SELECT pk, tenant, agent_id, created_at, settings FROM agents"
CONV = (
    "SELECT pk, agent_pk, conversation_id, created_at, summary, resends_history FROM conversations"
)
MSG = (
    "SELECT pk, seq, data, turn_id, created_at, in_context, visible, superseded, tokens,"
    " visible_hash, parent_seq, path_hash FROM messages"
)
TURN = (
    "SELECT turn_id, conversation_pk, status, request_hash, idempotency_key, created_at,"
    " response, first_seq, finished_at FROM turns"
)
# The literal `in_context AND NOT superseded` / `visible AND NOT superseded` terms let the
# planner use the partial indexes messages_context / messages_visible.
SQL_CONTEXT = f"{MSG} WHERE conversation_pk = $1 AND in_context AND NOT superseded ORDER BY seq"
SQL_VISIBLE = f"{MSG} WHERE conversation_pk = $1 AND visible AND NOT superseded ORDER BY seq"

UPSERT_BLOCKS = (
    "INSERT INTO blocks (agent_pk, label, value, description, lim, read_only, updated_at)"
    " SELECT $1, u.label, u.value, u.description, u.lim, u.read_only, $2 FROM unnest($3::text[],"
    " $4::text[], $5::text[], $6::integer[], $7::boolean[]) WITH ORDINALITY"
    " AS u(label, value, description, lim, read_only, i) ORDER BY u.i"
    " ON CONFLICT (agent_pk, label) DO UPDATE SET value = excluded.value,"
    " description = excluded.description, lim = excluded.lim, read_only = excluded.read_only,"
    " updated_at = excluded.updated_at"
)
# The summary goes onto the conversation and onto the row `through_seq` (the summary of the
# path through it: tree.move_path). A statement must not update a row twice, so the row
# through_seq gets it from `e` when `e` evicts it, else from `s` (both see the same snapshot).
EVICT = (
    "WITH e AS (UPDATE messages SET in_context = false,"
    " summary = CASE WHEN seq = $2 THEN $3 ELSE summary END WHERE conversation_pk = $1"
    " AND seq <= $2 AND in_context AND NOT superseded RETURNING 1),"
    " s AS (UPDATE messages SET summary = $3 WHERE conversation_pk = $1 AND seq = $2"
    " AND NOT (in_context AND NOT superseded)),"
    " c AS (UPDATE conversations SET summary = $3 WHERE pk = $1)"
    " SELECT count(*) FROM e"
)
DISCARD = (
    "WITH t AS (UPDATE turns SET status = 'failed', finished_at = $2, error = $3::json"
    " WHERE turn_id = $1 AND status <> 'done' RETURNING conversation_pk, first_seq)"
    " UPDATE messages m SET superseded = true, in_context = false FROM t"
    " WHERE m.conversation_pk = t.conversation_pk AND m.seq >= coalesce(t.first_seq, 0)"
    " AND m.turn_id = $1"
)
# Lease expiry uses the database's clock, so that machines with skewed clocks agree.
DB_NOW = "extract(epoch FROM clock_timestamp())::float8"
# A lease's own writes commit without waiting for the WAL flush (`synchronous_commit` off for
# that one transaction; the session's setting is untouched): a flush is most of a small
# commit's cost (~0.8 ms of ~0.9 on the development machine), and a lease write never needs
# it. Visibility is not delayed (other processes see the row at once), only durability, and
# only a crash of the Postgres server itself can lose it: a lost acquire is flushed by the
# turn's first durable commit anyway (the WAL is sequential), and a server crash breaks the
# turn's connections before that; a lost release leaves a row that expires after
# `lease_ttl_s`. docs/storage.md, "Durability: Postgres `synchronous_commit`".
NO_FLUSH = "nf AS (SELECT set_config('synchronous_commit', 'off', true))"
ACQUIRE_LEASE = (
    f"WITH {NO_FLUSH} INSERT INTO leases (conversation_pk, owner, expires_at)"
    f" SELECT $1, $2, {DB_NOW} + $3 FROM nf"
    " ON CONFLICT (conversation_pk) DO UPDATE SET owner = excluded.owner,"
    " expires_at = excluded.expires_at"
    f" WHERE leases.owner = excluded.owner OR leases.expires_at < {DB_NOW}"
)
# A released lease row stays, free (no owner, expired) with one more release counted
# (migration 12): a load that took the lease in its own statement compares that count with
# its snapshot's to know whether it read the state before a release (turns.py, `load_sql`).
RELEASED = "owner = '', expires_at = 0, releases = leases.releases + 1"
RELEASE_LEASE = (
    f"WITH {NO_FLUSH} UPDATE leases SET {RELEASED} WHERE conversation_pk = $1 AND owner = $2"
    " AND EXISTS (SELECT FROM nf)"
)


def clean(text: str) -> str:
    """`text` without NUL characters, which Postgres text cannot store."""
    return text.replace("\x00", "") if "\x00" in text else text


def strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    return value


def jsonb(value: Any) -> str:
    """JSON for a jsonb column, which rejects \\u0000 escapes: NULs are dropped."""
    text = dumps(value)
    return dumps(strip_nul(value)) if "\\u0000" in text else text


def rows_changed(status: str) -> int:
    """Rows affected, from a command status such as `UPDATE 3` or `INSERT 0 1`."""
    return int(status.rsplit(" ", 1)[-1])


def agent_row(r: Any) -> Agent:
    return Agent(pk=r[0], tenant=r[1], agent_id=r[2], created_at=r[3], settings=json.loads(r[4]))


def conversation_row(r: Any) -> Conversation:
    return Conversation(r[0], r[1], r[2], r[3], summary=r[4], resends_history=r[5])


def message_row(r: Any) -> StoredMessage:
    """A row of `MSG` (its first ten columns are enough: the tree's come after them)."""
    tree = len(r) > 10
    return StoredMessage(
        seq=r[1], data=fast_loads(r[2]), turn_id=r[3], created_at=r[4], in_context=r[5],
        visible=r[6], superseded=r[7], tokens=r[8], visible_hash=r[9], pk=r[0],
        parent_seq=r[10] if tree else None, path_hash=r[11] if tree else None,
    )


def turn_row(r: Any) -> Turn | None:
    if r is None:
        return None
    response = None if r[6] is None else fast_loads(r[6])
    return Turn(r[0], r[1], r[2], r[3], r[4], r[5], response=response, first_seq=r[7],
                finished_at=r[8])


def passage_row(r: Any) -> Passage:
    return Passage(pk=r[0], text=r[1], tags=json.loads(r[2]), created_at=r[3], score=r[4])


def message_arrays(messages: Iterable[NewMessage]) -> list[list[Any]]:
    """Column arrays (role, data, text, in_context, visible, tokens, visible_hash, path_hash)
    for unnest.

    Serialises everything first: a message that cannot be encoded fails the call before any
    statement runs."""
    cols: list[list[Any]] = [[], [], [], [], [], [], [], []]
    for m in messages:
        cols[0].append(clean(str(m.data.get("role", ""))))
        cols[1].append(dumps(m.data))
        cols[2].append(clean(message_text(m.data)))
        cols[3].append(bool(m.in_context))
        cols[4].append(bool(m.visible))
        cols[5].append(m.tokens)
        cols[6].append(m.visible_hash)
        cols[7].append(m.path_hash)
    return cols


def block_arrays(blocks: Iterable[Block]) -> list[list[Any]]:
    """Column arrays (label, value, description, lim, read_only), one row per label: the last
    version of a label wins, at the place of its first (as sequential upserts would)."""
    latest: dict[str, Block] = {}
    for b in blocks:
        latest[clean(b.label)] = b
    cols: list[list[Any]] = [[], [], [], [], []]
    for label, b in latest.items():
        cols[0].append(label)
        cols[1].append(clean(b.value))
        cols[2].append(clean(b.description))
        cols[3].append(int(b.limit))
        cols[4].append(bool(b.read_only))
    return cols


def passage_arrays(passages: Iterable[tuple[str, list[str]]]) -> list[list[Any]]:
    cols: list[list[Any]] = [[], []]
    for text, tags in passages:
        cols[0].append(clean(text))
        cols[1].append(jsonb(list(tags)))
    return cols
