"""What a turn reads once it holds its conversation, in one statement (`load_sql`), and the
lease it holds it by, taken in that same statement (`lease`: one round trip fewer per turn).

Taking the lease in the read. A statement reads one snapshot, taken when it starts. The lease
is an upsert (ON CONFLICT ... DO UPDATE acts on the newest version of the row, waiting for a
writer of it), so if another process's turn releases the lease while this statement runs,
the lease is taken after that release but the state was read before it: it may lack that
turn's messages. Releases never delete the row; they count themselves on it (migration 12),
so the statement compares the count in its snapshot (`seen`) with the count on the row it
took (`l`): equal, the state is current; different, `fresh` is false and the caller reads the
state again, now under the lease. The statement also calls a state stale when its snapshot
shows another owner's live lease (a process of an older release deletes its row on release,
so no count would move).

Storing the input in the read (`planned`, `planned_ctes`). An input planned before the read
(turn/ahead.py) is stored by the same statement when its snapshot is fresh and shows the
conversation as the plan assumed; the statement is then a durable commit (the input's), and
a turn is two statements instead of three.
"""

from __future__ import annotations

import functools
from operator import itemgetter
from typing import Any

from ...core.types import Block, KnownContext, StoredMessage, TurnState
from .. import known_context
from .sql import DB_NOW, NO_FLUSH, TURN, conversation_row, fast_loads, turn_row
from .turn_sql import BeginSlots, Params, begin_ctes

# --- load_turn_state: one row -------------------------------------------------------------
# The blocks and the context come as one array per column (asyncpg decodes arrays of scalars
# fastest; measured against arrays of records and json_agg), aggregated from an ordered
# subquery; `_ordered` checks that order on the client. $1 conversation_pk, $2 agent_pk.
# With a KnownContext (store/known_context.py) that is still usable — $3 epoch, $4 created_at,
# checked in the query — only the context rows after its newest seq ($5) are sent, with the
# count of the rows up to it still in context and, only if that is not the known count ($6),
# their seqs. That count is not taken while the conversation's count of rows that left its
# context (`left_context`, migration 14) is the one the known context was read with ($7): then
# no row left, and the count is the known one.
# sql.CONV's columns, then the conversation's count of rows that left its context
_CONVERSATION = ("SELECT pk, agent_pk, conversation_id, created_at, summary, resends_history,"
                 " left_context FROM conversations")
_BLOCK_COLUMNS = ("pos", "label", "value", "description", "lim", "read_only", "updated_at")
_CONTEXT_COLUMNS = ("pk", "seq", "data", "turn_id", "created_at", "in_context", "visible",
                    "superseded", "tokens", "visible_hash", "parent_seq", "path_hash")
_IN_CONTEXT = "FROM messages WHERE conversation_pk = $1 AND in_context AND NOT superseded"


def _arrays(columns: tuple[str, ...], query: str) -> str:
    aggregates = ", ".join(f"array_agg({c})" for c in columns)
    return f"LATERAL (SELECT {aggregates} FROM ({query}) x)"


@functools.cache
def load_sql(known: bool, lease: bool = False, planned: bool = False, flush: bool = True) -> str:
    """The state's one statement; with `lease`, it takes the conversation's lease first
    ($8, $9 with `known`, else $3, $4: owner, seconds to live) and returns no row while
    another owner holds a live one, else the state and a column `fresh` (module
    docstring). The lease commits without a WAL flush, as `ACQUIRE_LEASE` (sql.py).

    With `planned` (and `lease`), the statement also stores an input planned before it
    (`planned_ctes`), and a last column holds its first seq, NULL if it stored nothing. Its
    commit then waits for the WAL flush unless `flush` is off (the input's durability,
    `[database] postgres_input_commit`)."""
    usable = "(e.value = $3 AND c.created_at = $4)"
    # the upper bound lets the generic plan price the range as narrow as it is (else it may
    # prefer reading all of `messages` in a database that holds one long conversation)
    since = (f" AND seq > CASE WHEN {usable} THEN $5 ELSE 0 END AND seq <= 2147483647"
             if known else "")
    blocks = f"SELECT {', '.join(_BLOCK_COLUMNS)} FROM blocks WHERE agent_pk = $2 ORDER BY pos"
    context = f"SELECT {', '.join(_CONTEXT_COLUMNS)} {_IN_CONTEXT}{since} ORDER BY seq"
    sql = ""
    if lease:
        owner, ttl = ("$8", "$9") if known else ("$3", "$4")
        no_flush = not planned or not flush
        sql = (
            f"WITH {NO_FLUSH + ', ' if no_flush else ''}l AS (INSERT INTO leases"
            f" (conversation_pk, owner, expires_at) SELECT $1, {owner}, {DB_NOW} + {ttl}"
            f"{' FROM nf' if no_flush else ''}"
            " ON CONFLICT (conversation_pk) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at"
            f" WHERE leases.owner = excluded.owner OR leases.expires_at < {DB_NOW}"
            " RETURNING releases),"
            f" seen AS (SELECT releases, owner <> {owner} AND expires_at >= {DB_NOW} AS held"
            " FROM leases WHERE conversation_pk = $1)"
        )
        sql += f", {', '.join(planned_ctes(9 if known else 4))} " if planned else " "
    sql += (
        "SELECT c.*, t.*, (SELECT recall_count FROM agents WHERE pk = $2),"
        " (SELECT passage_count FROM agents WHERE pk = $2), e.value, b.*, m.*"
    )
    if known:
        sql += (f", {usable}, k.n, CASE WHEN {usable} AND k.n <> $6 THEN"
                f" ARRAY(SELECT seq {_IN_CONTEXT} AND seq <= $5) END")
    if lease:
        sql += f", {_FRESH}"
    if lease and planned:
        sql += ", (SELECT s.first FROM c, s)"  # the CTEs: `c` has a row when it stored
    sql += (
        f" FROM ({_CONVERSATION} WHERE pk = $1) c"
        f" LEFT JOIN ({TURN} WHERE conversation_pk = $1 ORDER BY ord DESC LIMIT 1) t ON true,"
        " conversation_epoch e,"
        f" {_arrays(_BLOCK_COLUMNS, blocks)} b, {_arrays(_CONTEXT_COLUMNS, context)} m"
    )
    if known:
        # OFFSET 0: one evaluation of the count, not pulled up into the query and run twice
        sql += (f", LATERAL (SELECT CASE WHEN NOT {usable} THEN 0"
                " WHEN c.left_context = $7 THEN $6"
                f" ELSE (SELECT count(*) {_IN_CONTEXT} AND seq <= $5) END AS n OFFSET 0) k")
    if lease:  # a one-time filter: no lease, nothing else read
        sql += " WHERE EXISTS (SELECT FROM l)"
    return sql


def known_args(known: KnownContext) -> list[Any]:
    """`load_sql(known=True)`'s parameters $3-$7, describing `known`."""
    return [known.epoch, known.created_at, known_context.newest_seq(known),
            len(known.messages), known.left_context]


# the snapshot's state is current: no release committed after it, nobody else's live lease in it
_FRESH = ("(SELECT releases FROM l) = coalesce((SELECT releases FROM seen), 0)"
          " AND NOT coalesce((SELECT held FROM seen), false)")


def planned_ctes(after: int) -> list[str]:
    """The CTEs of `load_sql(planned=True)` that store the planned input, their parameters
    numbered from `after` + 1: turn_id, now, request_hash, idempotency_key (begin's slots);
    the assumed tip seq, tip path hash, last turn and resends_history (`Assumed`); then
    begin's parent_seq and message arrays.

    `ok` has a row only when the lease was taken (`l`), the snapshot is fresh, and the
    snapshot shows the conversation as assumed: then, and only then, the begin's CTEs
    (turn_sql.begin_ctes, gated on `ok`) write, exactly as `begin_turn` with the same plan
    would. Their rows are invisible to this statement's reads: the state it returns is the
    state before the input, as `load_turn_state` would read it. The turn's insert is named
    `t_begun` for the reader: the state's own last turn is `t` in the FROM list (and `c` there
    is the conversation's row, not the CTE)."""
    p = Params(after)
    slots = BeginSlots(*p("text", "float8", "text", "text"))
    tip_seq, tip_hash, last_turn, resends = p("integer", "text", "text", "boolean")
    ok = (
        f"ok AS (SELECT FROM l WHERE {_FRESH}"
        " AND EXISTS (SELECT FROM (SELECT seq, path_hash FROM messages WHERE conversation_pk"
        " = $1 AND in_context AND NOT superseded ORDER BY seq DESC LIMIT 1) z"
        f" WHERE z.seq = {tip_seq} AND z.path_hash = {tip_hash})"
        " AND EXISTS (SELECT FROM (SELECT turn_id, status FROM turns WHERE conversation_pk"
        f" = $1 ORDER BY ord DESC LIMIT 1) z WHERE z.turn_id = {last_turn}"
        " AND z.status = 'done')"
        " AND EXISTS (SELECT FROM conversations WHERE pk = $1"
        f" AND resends_history IS NOT DISTINCT FROM {resends}))"
    )
    return [ok, *begin_ctes(p, supersede=False, parent=True, moved=False, messages=True,
                            slots=slots, gate="EXISTS (SELECT FROM ok)", turn="t_begun")]


_EPOCH_AT = 18  # the columns: 7 conversation (left_context last), 9 turn, 2 counts, the epoch,
_BLOCKS_AT = _EPOCH_AT + 1  # then the block arrays, the context arrays,
_CONTEXT_AT = _BLOCKS_AT + len(_BLOCK_COLUMNS)
_KNOWN_AT = _CONTEXT_AT + len(_CONTEXT_COLUMNS)  # and (with `known`) usable, count, seqs


def _ordered(columns: Any, start: int, width: int, key: int) -> list[tuple]:
    """Rows from the `width` column arrays at `start`, sorted by column `key` (pos, seq).
    They arrive sorted (an ordered subquery); sorting a sorted list is one linear pass."""
    if columns[start] is None:  # no rows: array_agg of nothing is NULL
        return []
    rows = list(zip(*(columns[start + k] for k in range(width)), strict=True))
    rows.sort(key=itemgetter(key))
    return rows


def turn_state(r: Any, known: KnownContext | None = None) -> TurnState:
    """The TurnState of a `load_sql(known is not None)` row."""
    blocks = [Block(b[1], b[2], b[3], b[4], b[5], b[6])
              for b in _ordered(r, _BLOCKS_AT, len(_BLOCK_COLUMNS), 0)]
    context = [
        StoredMessage(seq=m[1], data=fast_loads(m[2]), turn_id=m[3], created_at=m[4],
                      in_context=m[5], visible=m[6], superseded=m[7], tokens=m[8],
                      visible_hash=m[9], pk=m[0], parent_seq=m[10], path_hash=m[11])
        for m in _ordered(r, _CONTEXT_AT, len(_CONTEXT_COLUMNS), 1)
    ]
    if known is not None and r[_KNOWN_AT]:  # usable: `context` holds the rows after it
        still = r[_KNOWN_AT + 1] if r[_KNOWN_AT + 2] is None else set(r[_KNOWN_AT + 2])
        context = known_context.merge(known, still, context)
    last = None if r[7] is None else turn_row(r[7:16])
    return TurnState(conversation_row(r), last, blocks, r[16] or 0, r[17] or 0, context,
                     r[_EPOCH_AT], r[6])

