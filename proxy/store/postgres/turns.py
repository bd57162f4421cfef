"""Turns on Postgres: what a stateful turn reads and writes, one round trip per call.

A mixin of `PostgresStore` (its pool and `_transaction`). `load_turn_state` is one query,
`begin_turn` and `finish_turn` are one statement each — a statement is its own transaction, so
there is no BEGIN/COMMIT round trip — built from data-modifying CTEs that all depend on the
row of a `c` CTE locking the conversation (`FOR NO KEY UPDATE`): if it is missing (unknown
conversation; for finish_turn, unknown or already finished turn) nothing is written.

Seqs under concurrency. A statement reads with the snapshot taken when it started, also in
the parts that run after it waited for the conversation's lock, so a statement that had to
wait for another writer of the same conversation numbers its messages from a stale
`max(seq)`. That never goes unnoticed: seqs are consecutive, so the first stale number is the
other writer's first message and the insert fails on UNIQUE (conversation_pk, seq), undoing
the whole statement. The call is then redone in a transaction that takes the lock first, so
that the numbering statement's snapshot is taken after it (`_locked_retry`). Turns hold the
conversation's lease, so only two writers of one conversation at once (callers without a
lease, or a lease that expired under a stalled turn) ever take that path. A `begin_turn`
without inputs writes no message that could collide: in such a race it takes effect as of
its snapshot (it supersedes the messages committed before it started, and returns the next
free seq as of then).

The tree (core/tree.py). The inputs chain under `parent_seq` and the turn records the message
its reply follows (`turns.parent_seq`), which `finish_turn` chains from: both inside the same
one statement. Only moving the active path to another branch (`move`, a branch switch: rare)
walks the tree; it runs in a transaction that locks the conversation first, so that the walk
reads what is committed after the lock, then the same begin statement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from ...core.types import (
    KnownContext,
    NewMessage,
    PlannedBegin,
    Turn,
    TurnResult,
    TurnState,
)
from ..leases import LeaseBusy, LeaseClaim
from .admin import revision_arrays
from .sql import (
    DISCARD,
    TURN,
    block_arrays,
    dumps,
    message_arrays,
    passage_arrays,
    turn_row,
)
from .tree import move_path, truncate_after
from .turn_sql import begin_sql, finish_sql
from .turn_state import known_args, load_sql, turn_state

if TYPE_CHECKING:
    from .held_leases import HeldLeases

T = TypeVar("T")

_SEQ_KEY = "messages_conversation_pk_seq_key"  # UNIQUE (conversation_pk, seq)
# What `_locked_retry` locks before it redoes a write, in the order the write's own statement
# locks them (no deadlock between the two forms): begin_turn the conversation ($1); finish_turn
# the turn ($2, of conversation $1), then its conversation.
_LOCK_BEGIN = "SELECT 1 FROM conversations WHERE pk = $1 FOR NO KEY UPDATE"
_LOCK_FINISH = (
    "WITH t AS (SELECT conversation_pk FROM turns WHERE turn_id = $2 AND conversation_pk = $1"
    " FOR NO KEY UPDATE) SELECT 1 FROM conversations v JOIN t ON v.pk = t.conversation_pk"
    " FOR NO KEY UPDATE OF v"
)

class PostgresTurnsMixin:
    """The turn calls of `PostgresStore` (see proxy/store/base.py for the contract)."""

    if TYPE_CHECKING:  # provided by PostgresStore
        @property
        def pool(self) -> asyncpg.Pool: ...
        def _transaction(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]: ...
        _leases: HeldLeases
        input_commit: str

        def _wrote(self, rows: dict[str, int]) -> None: ...

    async def _locked_retry(self, write: Callable[[Any], Awaitable[T]], lock: str,
                            *lock_args: Any) -> T:
        """`write(pool)`, one statement; if it numbered messages from a stale snapshot (see
        the module docstring), `write(conn)` again in a transaction that runs `lock` first."""
        try:
            return await write(self.pool)
        except asyncpg.UniqueViolationError as e:
            if e.constraint_name != _SEQ_KEY:
                raise
        async with self._transaction() as conn:
            await conn.execute(lock, *lock_args)
            return await write(conn)

    async def begin_turn(self, conversation_pk: int, turn_id: str, request_hash: str,
                         idempotency_key: str | None, inputs: list[NewMessage],
                         supersede_from_seq: int | None = None, *,
                         parent_seq: int | None = None, move: bool = False) -> int:
        """One statement: lock the conversation, supersede the active path after `parent_seq`
        (or from `supersede_from_seq`), open the turn, append the inputs under `parent_seq`.
        With `move` (a rare branch switch), a transaction instead: lock the conversation,
        supersede from `supersede_from_seq`, move the active path (tree.move_path), then the
        same statement without its supersede. Returns `first_seq`: the seq of the first input,
        or the next free seq."""
        moved = move and parent_seq is not None
        args: list[Any] = [conversation_pk, turn_id, time.time(), request_hash, idempotency_key]
        if supersede_from_seq is not None and not moved:
            args.append(supersede_from_seq)
        if parent_seq is not None:
            args.append(parent_seq)
        if inputs:
            args += message_arrays(inputs)  # may raise before anything is sent
        sql = begin_sql(supersede_from_seq is not None and not moved, parent_seq is not None,
                        moved, bool(inputs), self.input_commit == "durable")
        if moved:
            first = await self._moved_begin(conversation_pk, parent_seq, supersede_from_seq,
                                            sql, args)
        else:
            first = await self._locked_retry(lambda db: db.fetchval(sql, *args), _LOCK_BEGIN,
                                             conversation_pk)
        if first is None:
            raise LookupError(f"no conversation with pk {conversation_pk}")
        self._wrote({"turns": 1, "messages": len(inputs)})
        return first

    async def _moved_begin(self, conversation_pk: int, parent_seq: int,
                           supersede_from_seq: int | None, sql: str, args: list[Any]
                           ) -> int | None:
        """begin_turn with a move of the active path, in one transaction that locks the
        conversation first: every statement after it reads what is committed then."""
        async with self._transaction() as conn:
            if await conn.fetchval(_LOCK_BEGIN, conversation_pk) is None:
                return None
            if supersede_from_seq is not None:
                await truncate_after(conn, conversation_pk, supersede_from_seq - 1)
            await move_path(conn, conversation_pk, parent_seq)
            return await conn.fetchval(sql, *args)

    async def load_turn_state(self, agent_pk: int, conversation_pk: int,
                              known: KnownContext | None = None, *,
                              lease: LeaseClaim | None = None) -> TurnState:
        """One query (no transaction needed: the caller holds the conversation's lease);
        with `known` (what this process loaded last time), only the context rows added since
        are sent and decoded. With `lease`, the same query takes the conversation's lease
        first (turn_state.py) and raises LeaseBusy while another owner holds it; a state it
        finds was read before another turn's release is read again, under the lease."""
        args: list[Any] = [conversation_pk, agent_pk]
        if known is not None:
            args += known_args(known)
        if lease is None:
            row = await self.pool.fetchrow(load_sql(known is not None), *args)
        else:
            try:
                row = await self.pool.fetchrow(load_sql(known is not None, lease=True), *args,
                                               lease.owner, float(lease.ttl_s))
            except asyncpg.ForeignKeyViolationError:  # the lease of no conversation
                raise LookupError(f"no conversation with pk {conversation_pk}") from None
            if row is None:
                raise LeaseBusy(conversation_pk)
            self._leases.taken(conversation_pk, lease.owner)
            if not row[-1]:  # read before a release committed: read again, under the lease
                return await self.load_turn_state(agent_pk, conversation_pk, known)
        if row is None:
            raise LookupError(f"no conversation with pk {conversation_pk}")
        return turn_state(row, known)

    async def load_and_begin(self, agent_pk: int, conversation_pk: int,
                             known: KnownContext | None, *, lease: LeaseClaim,
                             planned: PlannedBegin) -> tuple[TurnState, int | None]:
        """`load_turn_state` with the lease, and in the same statement `begin_turn` of an
        input planned before the read (turn/ahead.py), when the conversation is as the plan
        assumed (turn_state.planned_ctes): one round trip fewer per turn. Returns the state
        (before the input, as `load_turn_state` reads it) and the input's first seq, or None
        when nothing was stored: the caller plans from the state and begins the turn itself.
        The lease is held either way; LeaseBusy and LookupError as `load_turn_state`."""
        args: list[Any] = [conversation_pk, agent_pk]
        if known is not None:
            args += known_args(known)
        assumed = planned.assumed
        args += [lease.owner, float(lease.ttl_s), planned.turn_id, time.time(),
                 planned.request_hash, None, assumed.tip_seq, assumed.tip_path_hash,
                 assumed.last_turn_id, assumed.resends_history, planned.parent_seq,
                 *message_arrays(planned.inputs)]  # may raise before anything is sent
        sql = load_sql(known is not None, lease=True, planned=True,
                       flush=self.input_commit == "durable")
        try:
            row = await self.pool.fetchrow(sql, *args)
        except asyncpg.ForeignKeyViolationError:  # the lease of no conversation
            raise LookupError(f"no conversation with pk {conversation_pk}") from None
        except asyncpg.UniqueViolationError as e:
            if e.constraint_name != _SEQ_KEY:
                raise
            # A writer without the lease numbered messages after this statement's snapshot
            # (module docstring): the statement was undone, lease and all. Read as usual.
            return await self.load_turn_state(agent_pk, conversation_pk, known,
                                              lease=lease), None
        if row is None:
            raise LeaseBusy(conversation_pk)
        self._leases.taken(conversation_pk, lease.owner)
        if not row[-2]:  # read before a release committed (nothing stored): read again
            return await self.load_turn_state(agent_pk, conversation_pk, known), None
        first = row[-1]
        if first is not None:
            self._wrote({"turns": 1, "messages": len(planned.inputs)})
        return turn_state(row, known), first

    async def finish_turn(self, turn_id: str, conversation_pk: int, agent_pk: int,
                          result: TurnResult) -> int:
        """One statement: mark the turn done, lock the conversation, append the turn's
        messages, upsert blocks (recording their revisions), add passages (within
        `result.max_passages`), and release the conversation's lease if this store holds it
        (held_leases.py). Raises LookupError (writing nothing) if the turn is unknown or
        already done, so a turn's output can never be stored twice. Returns the number of
        passages stored."""
        now = time.time()
        # Everything is serialised first: a value that cannot be encoded fails the call
        # before any statement runs.
        parts = (message_arrays(result.messages), block_arrays(result.blocks),
                 passage_arrays(result.passages),
                 revision_arrays(result.revisions, turn_id, now))
        args: list[Any] = [conversation_pk, turn_id, now, agent_pk, dumps(result.response)]
        capped = bool(result.passages) and result.max_passages > 0
        for arrays in parts:
            if arrays[0]:
                args += arrays
                if capped and arrays is parts[2]:
                    args.append(result.max_passages)
        owner = self._leases.for_finish(conversation_pk)
        if owner is not None:
            args.append(owner)
        sql = finish_sql(*(bool(arrays[0]) for arrays in parts), lease=owner is not None,
                         capped=capped)
        try:
            locked = await self._locked_retry(lambda db: db.fetchval(sql, *args), _LOCK_FINISH,
                                              conversation_pk, turn_id)
        except BaseException:
            if owner is not None:
                self._leases.restore(conversation_pk, owner)
            raise
        if locked is None:
            if owner is not None:
                self._leases.restore(conversation_pk, owner)
            raise LookupError(f"turn {turn_id!r} is unknown or already finished")
        self._wrote({"messages": len(result.messages), "passages": int(locked),
                               "block_revisions": len(result.revisions)})
        return int(locked)

    async def fail_turn(self, turn_id: str, error: dict) -> None:
        """Mark an open (or failed) turn failed with `error`; a done turn is left alone."""
        await self.pool.execute("UPDATE turns SET status = 'failed', finished_at = $1,"
                                " error = $2::json WHERE turn_id = $3 AND status <> 'done'",
                                time.time(), dumps(error), turn_id)

    async def discard_turn(self, turn_id: str, error: dict) -> None:
        """Fail a turn and take its messages out of transcript and context (kept as superseded),
        in one statement. For a request the upstream rejected as invalid."""
        await self.pool.execute(DISCARD, turn_id, time.time(), dumps(error))

    async def reopen_turn(self, turn_id: str) -> None:
        """failed -> open (the stored error is kept for audit); other states are unchanged."""
        await self.pool.execute("UPDATE turns SET status = 'open', finished_at = NULL"
                                " WHERE turn_id = $1 AND status = 'failed'", turn_id)

    async def find_turn(self, conversation_pk: int, *, idempotency_key: str | None = None,
                        request_hash: str | None = None) -> Turn | None:
        """Newest turn with that idempotency key if one is given, else with that request hash
        (newest = highest `ord`, the tail of both lookup indexes)."""
        if idempotency_key is not None:
            sql = f"{TURN} WHERE conversation_pk = $1 AND idempotency_key = $2"
            key: str = idempotency_key
        elif request_hash is not None:
            sql = f"{TURN} WHERE conversation_pk = $1 AND request_hash = $2"
            key = request_hash
        else:
            return None
        return turn_row(await self.pool.fetchrow(f"{sql} ORDER BY ord DESC LIMIT 1",
                                                 conversation_pk, key))

    async def last_turn(self, conversation_pk: int) -> Turn | None:
        return turn_row(await self.pool.fetchrow(
            f"{TURN} WHERE conversation_pk = $1 ORDER BY ord DESC LIMIT 1", conversation_pk))

