"""A turn's reads and writes in the SQLite store: load its state, store its input, store its
result, mark it failed or discarded, and find earlier turns for replays.

A mixin of `SQLiteStore`; these are the statements on every turn's path, so they run on the
fast lane (`lanes.py`) and decode no more than they must (`store/known_context.py`).
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from ...core.types import (
    Block,
    KnownContext,
    NewMessage,
    StoredMessage,
    Turn,
    TurnResult,
    TurnState,
)
from .. import known_context
from .admin import insert_revisions
from .rows import (
    _CONV,
    _INSERT_PASSAGE,
    _MSG,
    _TURN,
    SQL_CONTEXT,
    _conversation,
    _dumps,
    _insert_messages,
    _message,
    _next_seq,
    _turn,
    _upsert_blocks,
)
from .tree import move_path, truncate_after

if TYPE_CHECKING:
    from .lanes import SQLiteLanes

_IN_CONTEXT = "FROM messages WHERE conversation_pk = ? AND in_context = 1 AND superseded = 0"


def _context_since(db: sqlite3.Connection, conversation_pk: int,
                   known: KnownContext) -> list[StoredMessage]:
    """The context, decoding only rows after what `known` holds (store/known_context.py)."""
    top = known_context.newest_seq(known)
    still: int | set[int] = db.execute(f"SELECT count(*) {_IN_CONTEXT} AND seq <= ?",
                                       (conversation_pk, top)).fetchone()[0]
    if still != len(known.messages):
        still = {r[0] for r in db.execute(f"SELECT seq {_IN_CONTEXT} AND seq <= ?",
                                          (conversation_pk, top))}
    new = [_message(r) for r in db.execute(
        f"{_MSG} WHERE conversation_pk = ? AND in_context = 1 AND superseded = 0 AND seq > ?"
        " ORDER BY seq", (conversation_pk, top))]
    return known_context.merge(known, still, new)



class SQLiteTurns:
    lanes: SQLiteLanes

    async def begin_turn(self, conversation_pk: int, turn_id: str, request_hash: str,
                         idempotency_key: str | None, inputs: list[NewMessage],
                         supersede_from_seq: int | None = None, *,
                         parent_seq: int | None = None, move: bool = False) -> int:
        """One transaction: move the active path (optional), open the turn, append the
        inputs under `parent_seq`.

        Returns `first_seq`: the seq of the first input, or the next free seq when none.
        """
        now = time.time()

        def run(db: sqlite3.Connection) -> int:
            if supersede_from_seq is not None:
                truncate_after(db, conversation_pk, supersede_from_seq - 1)
            if parent_seq is not None:
                if move:
                    move_path(db, conversation_pk, parent_seq)
                else:
                    truncate_after(db, conversation_pk, parent_seq)
            agent_pk, first_seq = _next_seq(db, conversation_pk)
            if parent_seq is not None:
                parent = parent_seq
            else:  # the row before the superseded ones, else the newest row
                parent = first_seq - 1 if supersede_from_seq is None else supersede_from_seq - 1
            follows = first_seq + len(inputs) - 1 if inputs else parent
            db.execute("INSERT INTO turns (turn_id, conversation_pk, status, request_hash,"
                       " idempotency_key, created_at, first_seq, parent_seq)"
                       " VALUES (?, ?, 'open', ?, ?, ?, ?, ?)",
                       (turn_id, conversation_pk, request_hash, idempotency_key, now, first_seq,
                        follows))
            _insert_messages(db, conversation_pk, agent_pk, turn_id, first_seq, inputs, now,
                             parent)
            return first_seq

        return await self.lanes.write_fast(run)

    async def load_turn_state(self, agent_pk: int, conversation_pk: int,
                              known: KnownContext | None = None) -> TurnState:
        """Six indexed reads in one snapshot, on the fast lane; with `known` (what this
        process loaded last time), only the context rows added since are decoded."""
        def run(db: sqlite3.Connection) -> TurnState:
            row = db.execute(f"{_CONV} WHERE pk = ?", (conversation_pk,)).fetchone()
            if row is None:
                raise LookupError(f"no conversation with pk {conversation_pk}")
            epoch = db.execute("SELECT value FROM conversation_epoch").fetchone()[0]
            last = db.execute(f"{_TURN} WHERE conversation_pk = ? ORDER BY rowid DESC LIMIT 1",
                              (conversation_pk,)).fetchone()
            blocks = [Block(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in db.execute(
                "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
                " WHERE agent_pk = ? ORDER BY rowid", (agent_pk,))]
            counts = db.execute("SELECT recall_count, passage_count FROM agents WHERE pk = ?",
                                (agent_pk,)).fetchone() or (0, 0)
            conversation = _conversation(row)
            if known is not None and known_context.usable(known, epoch, conversation.created_at):
                context = _context_since(db, conversation_pk, known)
            else:
                context = [_message(r) for r in db.execute(SQL_CONTEXT, (conversation_pk,))]
            return TurnState(conversation, _turn(last), blocks, counts[0], counts[1], context,
                             epoch)

        return await self.lanes.read_fast(run)

    async def finish_turn(self, turn_id: str, conversation_pk: int, agent_pk: int,
                          result: TurnResult) -> int:
        """One transaction: mark the turn done, append its messages, upsert blocks (recording
        their revisions), add passages (no more than `result.max_passages` allows, counted
        inside the transaction: writes are serialised). Raises LookupError (writing nothing)
        if the turn is unknown or already done, so a turn's output can never be stored
        twice. Returns the number of passages stored."""
        now = time.time()

        def run(db: sqlite3.Connection) -> int:
            follows = db.execute(
                "UPDATE turns SET status = 'done', finished_at = ?, response = ?"
                " WHERE turn_id = ? AND conversation_pk = ? AND status != 'done'"
                " RETURNING parent_seq", (now, _dumps(result.response), turn_id, conversation_pk),
            ).fetchall()
            if len(follows) != 1:
                raise LookupError(f"turn {turn_id!r} is unknown or already finished")
            if result.messages:
                _, first_seq = _next_seq(db, conversation_pk)
                _insert_messages(db, conversation_pk, agent_pk, turn_id, first_seq,
                                 result.messages, now, follows[0][0])
            if result.blocks:
                _upsert_blocks(db, agent_pk, result.blocks, now)
            if result.revisions:
                insert_revisions(db, agent_pk, result.revisions, turn_id, now)
            passages = result.passages
            if passages and result.max_passages:
                count = db.execute("SELECT passage_count FROM agents WHERE pk = ?",
                                   (agent_pk,)).fetchone()
                passages = passages[:max(0, result.max_passages - (count[0] if count else 0))]
            if passages:
                db.executemany(_INSERT_PASSAGE, ((agent_pk, text, _dumps(list(tags)), now)
                                                 for text, tags in passages))
            return len(passages)

        return await self.lanes.write_fast(run)

    async def fail_turn(self, turn_id: str, error: dict) -> None:
        """Mark an open (or failed) turn failed with `error`; a done turn is left alone."""
        await self._execute("UPDATE turns SET status = 'failed', finished_at = ?, error = ?"
                            " WHERE turn_id = ? AND status != 'done'",
                            (time.time(), _dumps(error), turn_id))

    async def discard_turn(self, turn_id: str, error: dict) -> None:
        """Fail a turn and take its messages out of transcript and context (kept as superseded).

        For a request the upstream rejected as invalid: the conversation is as it was before.
        """
        def work(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT conversation_pk, first_seq FROM turns WHERE turn_id = ?"
                             " AND status != 'done'", (turn_id,)).fetchone()
            if row is None:
                return
            db.execute("UPDATE turns SET status = 'failed', finished_at = ?, error = ?"
                       " WHERE turn_id = ?", (time.time(), _dumps(error), turn_id))
            db.execute("UPDATE messages SET superseded = 1, in_context = 0"
                       " WHERE conversation_pk = ? AND seq >= ? AND turn_id = ?",
                       (row[0], row[1] or 0, turn_id))

        await self.lanes.write_fast(work)

    async def reopen_turn(self, turn_id: str) -> None:
        """failed -> open (the stored error is kept for audit); other states are unchanged."""
        await self._execute("UPDATE turns SET status = 'open', finished_at = NULL"
                            " WHERE turn_id = ? AND status = 'failed'", (turn_id,))

    async def find_turn(self, conversation_pk: int, *, idempotency_key: str | None = None,
                        request_hash: str | None = None) -> Turn | None:
        """Newest turn with that idempotency key if one is given, else with that request hash
        (newest = highest rowid, the tail of both lookup indexes)."""
        if idempotency_key is not None:
            sql = f"{_TURN} WHERE conversation_pk = ? AND idempotency_key = ?"
            key: str = idempotency_key
        elif request_hash is not None:
            sql = f"{_TURN} WHERE conversation_pk = ? AND request_hash = ?"
            key = request_hash
        else:
            return None
        return _turn(await self._fetch_one(f"{sql} ORDER BY rowid DESC LIMIT 1",
                                           (conversation_pk, key)))

    async def last_turn(self, conversation_pk: int) -> Turn | None:
        return _turn(await self._fetch_one(
            f"{_TURN} WHERE conversation_pk = ? ORDER BY rowid DESC LIMIT 1", (conversation_pk,)))
