"""The SQLite store: aiosqlite, WAL, one writer connection and one reader connection.

Every store call is one hop to a connection's worker thread: the whole transaction (BEGIN
IMMEDIATE ... COMMIT, ROLLBACK on any error) runs there as one plain function. That costs a
thread round trip per call instead of one per statement, and a coroutine cancelled while it
waits (a client that disconnects) can never leave the writer inside a half-done transaction.
Writes are additionally serialised by an asyncio.Lock; reads go to the reader connection, which
in WAL mode sees committed data only and never waits for the writer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiosqlite

try:  # decoding stored messages is the bulk of reading a context; orjson is ~3x faster
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is an optional speed-up
    _loads = json.loads

from ..core.messages import message_text
from ..core.types import (
    Agent,
    Block,
    Conversation,
    MessageHit,
    NewMessage,
    Passage,
    StoredMessage,
    Turn,
    TurnResult,
    TurnState,
)
from .fts import message_search_sql, passage_search_sql
from .migrations import apply_sqlite
from .sqlite_admin import SQLiteAdminMixin, insert_revisions
from .sqlite_admin_dump import SQLiteDumpMixin
from .sqlite_vectors import SQLiteVectors

T = TypeVar("T")

_AGENT = "SELECT pk, tenant, agent_id, created_at, settings FROM agents"
_CONV = (
    "SELECT pk, agent_pk, conversation_id, created_at, summary, resends_history FROM conversations"
)
_MSG = (
    "SELECT pk, seq, data, turn_id, created_at, in_context, visible, superseded, tokens,"
    " visible_hash FROM messages"
)
_TURN = (
    "SELECT turn_id, conversation_pk, status, request_hash, idempotency_key, created_at,"
    " response, first_seq FROM turns"
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
    " in_context, visible, tokens, visible_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The FTS index of newly inserted messages, one statement per batch (see migrations.py).
_INDEX_MESSAGES = (
    "INSERT INTO messages_fts (rowid, text, fts_scope) SELECT pk, text, fts_scope FROM messages"
    " WHERE conversation_pk = ? AND seq >= ?"
)
_UPSERT_BLOCK = (
    "INSERT INTO blocks (agent_pk, label, value, description, lim, read_only, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_pk, label) DO UPDATE SET"
    " value = excluded.value, description = excluded.description, lim = excluded.lim,"
    " read_only = excluded.read_only, updated_at = excluded.updated_at"
)
_INSERT_PASSAGE = "INSERT INTO passages (agent_pk, text, tags, created_at) VALUES (?, ?, ?, ?)"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _agent(r: tuple) -> Agent:
    return Agent(pk=r[0], tenant=r[1], agent_id=r[2], created_at=r[3], settings=json.loads(r[4]))


def _conversation(r: tuple) -> Conversation:
    resends = None if r[5] is None else bool(r[5])
    return Conversation(r[0], r[1], r[2], r[3], summary=r[4], resends_history=resends)


def _message(r: tuple) -> StoredMessage:
    return StoredMessage(
        seq=r[1], data=_loads(r[2]), turn_id=r[3], created_at=r[4], in_context=bool(r[5]),
        visible=bool(r[6]), superseded=bool(r[7]), tokens=r[8], visible_hash=r[9], pk=r[0],
    )


def _turn(r: tuple | None) -> Turn | None:
    if r is None:
        return None
    response = None if r[6] is None else json.loads(r[6])
    return Turn(r[0], r[1], r[2], r[3], r[4], r[5], response=response, first_seq=r[7])


def _passage(r: tuple) -> Passage:
    return Passage(pk=r[0], text=r[1], tags=json.loads(r[2]), created_at=r[3], score=r[4])


def _insert_messages(
    db: sqlite3.Connection, conversation_pk: int, agent_pk: int, turn_id: str, first_seq: int,
    messages: Iterable[NewMessage], now: float,
) -> None:
    # A generator: a message that fails to serialise aborts the batch (and the transaction).
    db.executemany(_INSERT_MESSAGE, (
        (conversation_pk, agent_pk, first_seq + i, turn_id, str(m.data.get("role", "")),
         _dumps(m.data), message_text(m.data), now, int(m.in_context), int(m.visible),
         m.tokens, m.visible_hash)
        for i, m in enumerate(messages)
    ))
    db.execute(_INDEX_MESSAGES, (conversation_pk, first_seq))


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


def _transaction(db: sqlite3.Connection, fn: Callable[..., T], args: tuple) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db, *args)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


SYNCHRONOUS_MODES = ("NORMAL", "FULL")


def _configure(db: sqlite3.Connection, writer: bool, synchronous: str = "NORMAL") -> None:
    """WAL, and `synchronous` as configured (`[database] sqlite_synchronous`): in WAL mode,
    NORMAL loses nothing when the process dies, only possibly the last commits on a power loss
    or OS crash; FULL syncs the WAL on every commit so those survive too (docs/storage.md)."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(
            f"sqlite synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    db.execute("PRAGMA busy_timeout = 5000")
    if writer:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not switch SQLite to WAL mode (got {mode!r})")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    db.execute("PRAGMA foreign_keys = ON")
    if not writer:
        db.execute("PRAGMA query_only = ON")


def _call(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """Run `fn(sqlite3_connection, *args)` on the aiosqlite worker thread in one hop.

    Uses aiosqlite's `_execute` / `_conn` (stable since 0.17, present in 0.22): its public API
    costs a thread round trip per statement and cannot run a transaction as one unit.
    """
    return conn._execute(fn, conn._conn, *args)


class SQLiteStore(SQLiteAdminMixin, SQLiteDumpMixin, SQLiteVectors):
    """`Store` on one SQLite file. Create, then `await store.open()`.

    The operator API (agents REST, block history, export/import) is in the mixins."""

    dialect = "sqlite"

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous  # PRAGMA synchronous of both connections
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    # --- plumbing -------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the parent directory, connect writer and reader, apply migrations."""
        if self._writer is not None:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        writer = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await _call(writer, _configure, True, self.synchronous)
            await _call(writer, apply_sqlite)
            reader = await aiosqlite.connect(self.path, isolation_level=None)
            await _call(reader, _configure, False, self.synchronous)
        except BaseException:
            await writer.close()
            raise
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None:
            await reader.close()
        if writer is not None:
            async with self._lock:
                try:  # refresh planner statistics where useful, bounded in cost
                    await _call(writer, lambda db: db.executescript(
                        "PRAGMA analysis_limit = 400; PRAGMA optimize;"))
                finally:
                    await writer.close()

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return await _call(self._reader, fn, *args)

    async def _fetch(self, sql: str, params: tuple, convert: Callable[[tuple], T]) -> list[T]:
        return await self._read(lambda db: [convert(r) for r in db.execute(sql, params)])

    async def _fetch_one(self, sql: str, params: tuple) -> tuple | None:
        return await self._read(lambda db: db.execute(sql, params).fetchone())

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(db, *args)` as one IMMEDIATE transaction on the writer connection."""
        if self._writer is None:
            raise RuntimeError("store is not open")
        async with self._lock:
            return await _call(self._writer, _transaction, fn, args)

    async def _execute(self, sql: str, params: tuple) -> int:
        """One write statement in its own transaction; returns the number of rows changed."""
        return await self._write(lambda db: db.execute(sql, params).rowcount)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    # --- agents and blocks ----------------------------------------------------------------
    async def get_agent(self, tenant: str, agent_id: str) -> Agent | None:
        row = await self._fetch_one(f"{_AGENT} WHERE tenant = ? AND agent_id = ?",
                                    (tenant, agent_id))
        return None if row is None else _agent(row)

    async def ensure_agent(self, tenant: str, agent_id: str, default_blocks: list[Block]) -> Agent:
        """Read first (the common case costs no write); create race-free only if missing.

        INSERT ... ON CONFLICT DO NOTHING decides the winner; only the creating call inserts
        the default blocks, so concurrent first requests yield one agent with one set of blocks.
        """
        agent = await self.get_agent(tenant, agent_id)
        if agent is not None:
            return agent
        now = time.time()

        def create(db: sqlite3.Connection) -> Agent:
            cur = db.execute(
                "INSERT INTO agents (tenant, agent_id, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant, agent_id) DO NOTHING", (tenant, agent_id, now))
            if cur.rowcount == 1:
                _upsert_blocks(db, cur.lastrowid, default_blocks, now)
            sql = f"{_AGENT} WHERE tenant = ? AND agent_id = ?"
            return _agent(db.execute(sql, (tenant, agent_id)).fetchone())

        return await self._write(create)

    async def list_agents(self, tenant: str | None) -> list[Agent]:
        if tenant is None:
            return await self._fetch(f"{_AGENT} ORDER BY pk", (), _agent)
        return await self._fetch(f"{_AGENT} WHERE tenant = ? ORDER BY pk", (tenant,), _agent)

    async def update_agent_settings(self, agent_pk: int, settings: dict[str, Any]) -> None:
        """Replace the agent's settings JSON (not in the protocol yet)."""
        await self._execute("UPDATE agents SET settings = ? WHERE pk = ?",
                            (_dumps(settings), agent_pk))

    async def delete_agent(self, agent_pk: int) -> None:
        """Delete the agent; blocks, conversations, messages, turns and passages cascade."""
        await self._execute("DELETE FROM agents WHERE pk = ?", (agent_pk,))

    async def get_blocks(self, agent_pk: int) -> list[Block]:
        """The agent's blocks in insertion order (upserts keep a block's place)."""
        return await self._fetch(
            "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
            " WHERE agent_pk = ? ORDER BY rowid", (agent_pk,),
            lambda r: Block(r[0], r[1], r[2], r[3], bool(r[4]), r[5]))

    async def put_block(self, agent_pk: int, block: Block) -> None:
        """Insert or update one block; `updated_at` is set to now (block.updated_at ignored)."""
        await self._write(_upsert_blocks, agent_pk, [block], time.time())

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

        return await self._write(create)

    async def list_conversations(self, agent_pk: int) -> list[Conversation]:
        return await self._fetch(f"{_CONV} WHERE agent_pk = ? ORDER BY pk", (agent_pk,),
                                 _conversation)

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

    async def find_conversation_by_head(self, agent_pk: int, head_hash: str) -> Conversation | None:
        """The newest conversation of the agent whose first exchange hashes to `head_hash`."""
        row = await self._fetch_one(
            f"{_CONV} WHERE agent_pk = ? AND head_hash = ? ORDER BY pk DESC LIMIT 1",
            (agent_pk, head_hash))
        return None if row is None else _conversation(row)

    async def evict_messages(self, conversation_pk: int, through_seq: int, summary: str) -> int:
        """Page out: take messages with seq <= through_seq out of the context window and store
        the new summary, atomically (never one without the other). Returns rows evicted."""
        def run(db: sqlite3.Connection) -> int:
            n = db.execute("UPDATE messages SET in_context = 0 WHERE conversation_pk = ?"
                           " AND seq <= ? AND in_context = 1 AND superseded = 0",
                           (conversation_pk, through_seq)).rowcount
            db.execute("UPDATE conversations SET summary = ? WHERE pk = ?",
                       (summary, conversation_pk))
            return n

        return await self._write(run)

    async def context_messages(self, conversation_pk: int) -> list[StoredMessage]:
        return await self._fetch(SQL_CONTEXT, (conversation_pk,), _message)

    async def visible_transcript(self, conversation_pk: int) -> list[StoredMessage]:
        return await self._fetch(SQL_VISIBLE, (conversation_pk,), _message)

    async def list_messages(self, conversation_pk: int, *, after_seq: int = 0, limit: int = 100,
                            include_superseded: bool = False) -> list[StoredMessage]:
        """A page of the full transcript (internal steps included) by seq > after_seq."""
        hide = "" if include_superseded else " AND superseded = 0"
        return await self._fetch(
            f"{_MSG} WHERE conversation_pk = ? AND seq > ?{hide} ORDER BY seq LIMIT ?",
            (conversation_pk, after_seq, limit), _message)

    async def count_messages(self, agent_pk: int) -> int:
        """Messages in the agent's recall memory: visible and not superseded, all conversations.

        O(1): a counter on the agent row maintained by triggers (see migrations.py)."""
        row = await self._fetch_one("SELECT recall_count FROM agents WHERE pk = ?", (agent_pk,))
        return 0 if row is None else row[0]

    async def search_messages(self, agent_pk: int, query: str, *, roles: list[str] | None = None,
                              limit: int = 10, start: float | None = None,
                              end: float | None = None) -> list[MessageHit]:
        """bm25-ranked recall search (visible, not superseded, evicted included); a blank query
        lists the newest matching messages with score 0. `start`/`end` are inclusive."""
        sql, params = message_search_sql(agent_pk, query, roles, limit, start, end)
        return await self._fetch(sql, params, lambda r: MessageHit(*r))

    # --- turns ----------------------------------------------------------------------------
    async def begin_turn(self, conversation_pk: int, turn_id: str, request_hash: str,
                         idempotency_key: str | None, inputs: list[NewMessage],
                         supersede_from_seq: int | None = None) -> int:
        """One transaction: supersede (optional), open the turn, append the inputs.

        Returns `first_seq`: the seq of the first input, or the next free seq when none.
        """
        now = time.time()

        def run(db: sqlite3.Connection) -> int:
            if supersede_from_seq is not None:
                db.execute("UPDATE messages SET superseded = 1, in_context = 0"
                           " WHERE conversation_pk = ? AND seq >= ? AND superseded = 0",
                           (conversation_pk, supersede_from_seq))
            agent_pk, first_seq = _next_seq(db, conversation_pk)
            db.execute("INSERT INTO turns (turn_id, conversation_pk, status, request_hash,"
                       " idempotency_key, created_at, first_seq) VALUES (?, ?, 'open', ?, ?, ?, ?)",
                       (turn_id, conversation_pk, request_hash, idempotency_key, now, first_seq))
            _insert_messages(db, conversation_pk, agent_pk, turn_id, first_seq, inputs, now)
            return first_seq

        return await self._write(run)

    async def load_turn_state(self, agent_pk: int, conversation_pk: int) -> TurnState:
        """Six indexed reads in one hop to the reader thread."""
        def run(db: sqlite3.Connection) -> TurnState:
            row = db.execute(f"{_CONV} WHERE pk = ?", (conversation_pk,)).fetchone()
            if row is None:
                raise LookupError(f"no conversation with pk {conversation_pk}")
            last = db.execute(f"{_TURN} WHERE conversation_pk = ? ORDER BY rowid DESC LIMIT 1",
                              (conversation_pk,)).fetchone()
            blocks = [Block(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in db.execute(
                "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
                " WHERE agent_pk = ? ORDER BY rowid", (agent_pk,))]
            recall = db.execute("SELECT recall_count FROM agents WHERE pk = ?",
                                (agent_pk,)).fetchone()
            passages = db.execute("SELECT count(*) FROM passages WHERE agent_pk = ?",
                                  (agent_pk,)).fetchone()[0]
            context = [_message(r) for r in db.execute(SQL_CONTEXT, (conversation_pk,))]
            return TurnState(_conversation(row), _turn(last), blocks,
                             0 if recall is None else recall[0], passages, context)

        return await self._read(run)

    async def finish_turn(self, turn_id: str, conversation_pk: int, agent_pk: int,
                          result: TurnResult) -> None:
        """One transaction: mark the turn done, append its messages, upsert blocks (recording
        their revisions), add passages. Raises LookupError (writing nothing) if the turn is
        unknown or already done, so a turn's output can never be stored twice."""
        now = time.time()

        def run(db: sqlite3.Connection) -> None:
            cur = db.execute("UPDATE turns SET status = 'done', finished_at = ?, response = ?"
                             " WHERE turn_id = ? AND conversation_pk = ? AND status != 'done'",
                             (now, _dumps(result.response), turn_id, conversation_pk))
            if cur.rowcount != 1:
                raise LookupError(f"turn {turn_id!r} is unknown or already finished")
            if result.messages:
                _, first_seq = _next_seq(db, conversation_pk)
                _insert_messages(db, conversation_pk, agent_pk, turn_id, first_seq,
                                 result.messages, now)
            if result.blocks:
                _upsert_blocks(db, agent_pk, result.blocks, now)
            if result.revisions:
                insert_revisions(db, agent_pk, result.revisions, turn_id, now)
            if result.passages:
                db.executemany(_INSERT_PASSAGE, ((agent_pk, text, _dumps(list(tags)), now)
                                                 for text, tags in result.passages))

        await self._write(run)

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

        await self._write(work)

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
    async def insert_passage(self, agent_pk: int, text: str, tags: list[str]) -> Passage:
        now, tags = time.time(), list(tags)
        pk = await self._write(
            lambda db: db.execute(_INSERT_PASSAGE, (agent_pk, text, _dumps(tags), now)).lastrowid)
        return Passage(pk=pk, text=text, tags=tags, created_at=now)

    async def search_passages(self, agent_pk: int, query: str, *, tags: list[str] | None = None,
                              top_k: int = 5) -> list[Passage]:
        """bm25-ranked archival search; `tags` keeps passages having ALL of them. A blank
        query returns the newest (tag-filtered) passages with score 0."""
        sql, params = passage_search_sql(agent_pk, query, tags, top_k)
        return await self._fetch(sql, params, _passage)

    async def list_passages(self, agent_pk: int, *, limit: int = 100,
                            offset: int = 0) -> list[Passage]:
        """Oldest first (stable paging by offset); score is None."""
        return await self._fetch(
            "SELECT pk, text, tags, created_at, NULL FROM passages WHERE agent_pk = ?"
            " ORDER BY pk LIMIT ? OFFSET ?", (agent_pk, limit, offset), _passage)

    async def delete_passage(self, agent_pk: int, passage_pk: int) -> bool:
        """False when the passage does not exist or belongs to another agent."""
        return await self._execute("DELETE FROM passages WHERE pk = ? AND agent_pk = ?",
                                   (passage_pk, agent_pk)) == 1

    async def count_passages(self, agent_pk: int) -> int:
        row = await self._fetch_one("SELECT count(*) FROM passages WHERE agent_pk = ?",
                                    (agent_pk,))
        return row[0]

    # --- api keys and model stats ---------------------------------------------------------
    async def add_api_key(self, key_hash: str, tenant: str) -> None:
        """Store a hashed key; adding the same hash again re-assigns it to `tenant`."""
        await self._execute("INSERT INTO api_keys (key_hash, tenant, created_at) VALUES (?, ?, ?)"
                            " ON CONFLICT (key_hash) DO UPDATE SET tenant = excluded.tenant",
                            (key_hash, tenant, time.time()))

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        row = await self._fetch_one("SELECT tenant FROM api_keys WHERE key_hash = ?", (key_hash,))
        return None if row is None else row[0]

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
