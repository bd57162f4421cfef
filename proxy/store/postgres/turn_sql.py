"""The statements of a turn's writes on Postgres: `begin_turn` (the input) and `finish_turn`
(the outcome), each one statement built from data-modifying CTEs (turns.py says why and how
they stay correct under concurrency).

`begin_ctes` is also part of the statement that reads a turn's state and stores an input
planned before it (turn_state.py, `load_sql(..., planned=True)`): there the begin's
placeholders come after the read's, and every write waits on a gate.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from .sql import NO_FLUSH, RELEASED

_NEXT_SEQ = (
    "s AS (SELECT coalesce(max(seq), 0) + 1 AS first FROM messages WHERE conversation_pk = $1)"
)


class Params:
    """Numbers the placeholders of a statement built from optional parts."""

    def __init__(self, fixed: int) -> None:
        self.n = fixed

    def __call__(self, *casts: str) -> list[str]:
        first, self.n = self.n + 1, self.n + len(casts)
        return [f"${first + k}::{cast}" for k, cast in enumerate(casts)]


class BeginSlots(NamedTuple):
    """Where begin's fixed arguments are in its statement ($1 is always the conversation)."""

    turn_id: str = "$2"
    now: str = "$3"
    request_hash: str = "$4"
    idempotency_key: str = "$5"


BEGIN_SLOTS = BeginSlots()  # begin_turn's own statement


def _unnest(p: Params | list[str], columns: tuple[str, ...], casts: tuple[str, ...] = ()
            ) -> str:
    """unnest of the next parameters (`p(*casts)`), or of the placeholders `p`."""
    arrays = p(*casts) if isinstance(p, Params) else p
    return (f"unnest({', '.join(arrays)}) WITH ORDINALITY"
            f" AS u({', '.join(columns)}, i)")


def _insert_messages(p: Params, agent_pk: str, parent: str, sources: str,
                     slots: BeginSlots = BEGIN_SLOTS) -> tuple[str, str]:
    """$1 conversation_pk, `slots` the turn_id and now; the next 8 parameters are
    message_arrays.

    The messages are a chain: the first follows `parent` (an expression over `sources`), each
    next one the one before. Returns the CTE and the placeholder of the first array."""
    arrays = p("text[]", "json[]", "text[]", "boolean[]", "boolean[]", "integer[]", "text[]",
               "text[]")
    source = _unnest(arrays, ("role", "data", "text", "in_context", "visible", "tokens",
                              "visible_hash", "path_hash"))
    return (
        "m AS (INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text,"
        " created_at, in_context, visible, tokens, visible_hash, parent_seq, path_hash)"
        f" SELECT $1, {agent_pk}, s.first + u.i - 1, {slots.turn_id}, u.role, u.data, u.text,"
        f" {slots.now}, u.in_context, u.visible, u.tokens, u.visible_hash,"
        f" CASE WHEN u.i = 1 THEN {parent} ELSE s.first + u.i - 2 END, u.path_hash"
        f" FROM {sources}, {source} ORDER BY u.i)"
    ), arrays[0]


def begin_ctes(p: Params, *, supersede: bool, parent: bool, moved: bool, messages: bool,
               slots: BeginSlots = BEGIN_SLOTS, gate: str | None = None, turn: str = "t",
               ) -> list[str]:
    """begin_turn's CTEs `c` (the conversation, locked), `s` (the first free seq), `x` (the
    superseded rows), `m` (the inputs) and the turn (named `turn`), taking supersede_from_seq
    (if `supersede`), parent_seq (if `parent`) and the message arrays (if `messages`) from `p`.
    With `gate` (a condition), nothing is written unless it holds: `c` has no row then, and
    every write depends on `c`."""
    lock = f" AND {gate}" if gate else ""
    ctes = [f"c AS (SELECT agent_pk FROM conversations WHERE pk = $1{lock} FOR NO KEY UPDATE)",
            _NEXT_SEQ]
    supersede_from = p("integer")[0] if supersede else None
    # without parent_seq: under the row before supersede_from_seq, else the newest row
    under = p("integer")[0] if parent else (
        "s.first - 1" if supersede_from is None else f"{supersede_from} - 1")
    cut = None
    if parent and not moved:
        cut = under if supersede_from is None else f"least({under}, {supersede_from} - 1)"
    elif supersede_from is not None:
        cut = f"{supersede_from} - 1"
    if cut is not None:  # sees the statement's snapshot: never the inputs inserted below
        # `seq > cut` is "after the newest message" (no row) only to a plan that knows `cut`:
        # a generic plan guessed a third of the conversation, and in a database of one long
        # conversation (`conversation_pk = $1` is then every row) it scanned all of messages,
        # 5.4 ms a turn at 10,000 messages. The upper bound, always true, makes the clause a
        # range, which a generic plan guesses at 0.5% of the rows: an index scan. begin_turn's
        # own statement is still re-planned with its values on every turn (a few tables:
        # planning is cheap next to the generic plan's guess); the read that stores an input
        # planned ahead (turn_state.load_sql) settles on its generic plan, whose planning
        # took 1.3 ms a turn at 10,000 messages.
        gated = " AND EXISTS (SELECT FROM c)" if gate else ""
        ctes.append("x AS (UPDATE messages SET superseded = true, in_context = false"
                    f" WHERE conversation_pk = $1 AND seq > {cut} AND seq <= 2147483647"
                    f" AND NOT superseded{gated})")
    follows = under  # the message the turn's reply will follow: its last input, else parent
    if messages:
        insert, roles = _insert_messages(p, "c.agent_pk", under, "c, s", slots)
        ctes.append(insert)
        follows = f"s.first + cardinality({roles}) - 1"
    ctes.append(f"{turn} AS (INSERT INTO turns (turn_id, conversation_pk, status, request_hash,"
                " idempotency_key, created_at, first_seq, parent_seq)"
                f" SELECT {slots.turn_id}, $1, 'open', {slots.request_hash},"
                f" {slots.idempotency_key}, {slots.now}, s.first, {follows} FROM c, s)")
    return ctes


@functools.cache
def begin_sql(supersede: bool, parent: bool, moved: bool, messages: bool,
              flush: bool = True) -> str:
    """$1 conversation_pk, $2 turn_id, $3 now, $4 request_hash, $5 idempotency_key, then
    supersede_from_seq (if `supersede`), parent_seq (if `parent`) and the message arrays (if
    `messages`). The inputs chain under parent_seq (default: the newest row); the active rows
    after it (from supersede_from_seq on, with that) are superseded, unless `moved`: then the
    caller moved the active path already (tree.move_path), in the same transaction.
    Without `flush` (`[database] postgres_input_commit = "fast"`), its commit does not wait
    for the WAL flush (docs/storage.md, "Durability: Postgres")."""
    # without flush, `c` depends on `nf`, so it runs whenever anything is written
    ctes = begin_ctes(Params(5), supersede=supersede, parent=parent, moved=moved,
                      messages=messages, gate=None if flush else "EXISTS (SELECT FROM nf)")
    if not flush:
        ctes.insert(0, NO_FLUSH)
    return f"WITH {', '.join(ctes)} SELECT s.first FROM c, s"


@functools.cache
def finish_sql(messages: bool, blocks: bool, passages: bool, revisions: bool,
               lease: bool = False, capped: bool = False) -> str:
    """$1 conversation_pk, $2 turn_id, $3 now, $4 agent_pk, $5 response; then the arrays of
    the parts present: messages, blocks, passages (with `capped`, followed by the agent's
    passage cap), revisions; then, with `lease`, the owner whose lease of the conversation
    the statement releases (held_leases.py). Returns the number of passages stored, or no
    row (nothing written) if the turn is unknown or already done.

    With `capped` the agent's row is locked before its passages are counted: a concurrent
    turn's insert waits, and this statement then reads the count that turn left (READ
    COMMITTED re-reads a locked row's newest version), so two turns can't overshoot."""
    p = Params(5)
    ctes = ["t AS (UPDATE turns SET status = 'done', finished_at = $3, response = $5::json"
            " WHERE turn_id = $2 AND conversation_pk = $1 AND status <> 'done'"
            " RETURNING conversation_pk, parent_seq)",
            # by primary key ($1 is t's conversation too): a join with `t` was planned as a
            # scan of every conversation when the planner had no statistics
            "c AS (SELECT v.agent_pk FROM conversations v WHERE v.pk = $1"
            " AND EXISTS (SELECT FROM t) FOR NO KEY UPDATE OF v)"]
    if messages:
        # they chain from the message begin_turn recorded (NULL: a turn of an older release)
        ctes += [_NEXT_SEQ, _insert_messages(p, "$4", "coalesce(t.parent_seq, s.first - 1)",
                                             "c, s, t")[0]]
    if blocks:
        source = _unnest(p, ("label", "value", "description", "lim", "read_only"),
                         ("text[]", "text[]", "text[]", "integer[]", "boolean[]"))
        ctes.append(
            "b AS (INSERT INTO blocks (agent_pk, label, value, description, lim, read_only,"
            " updated_at) SELECT $4, u.label, u.value, u.description, u.lim, u.read_only, $3"
            f" FROM c, {source} ORDER BY u.i"
            " ON CONFLICT (agent_pk, label) DO UPDATE SET value = excluded.value,"
            " description = excluded.description, lim = excluded.lim,"
            " read_only = excluded.read_only, updated_at = excluded.updated_at)")
    if passages:
        source = _unnest(p, ("text", "tags"), ("text[]", "jsonb[]"))
        room = ""
        if capped:
            ctes.append("q AS (SELECT passage_count FROM agents a JOIN c ON a.pk = c.agent_pk"
                        " FOR NO KEY UPDATE OF a)")
            source = f"q, {source}"
            room = f" WHERE u.i <= {p('integer')[0]} - q.passage_count"
        ctes.append("p AS (INSERT INTO passages (agent_pk, text, tags, created_at)"
                    f" SELECT $4, u.text, u.tags, $3 FROM c, {source}{room} ORDER BY u.i"
                    " RETURNING 1)")
    if revisions:  # revision ids are handed out in array order
        source = _unnest(p, ("label", "old", "new", "source", "turn_id", "created_at"),
                         ("text[]", "text[]", "text[]", "text[]", "text[]", "float8[]"))
        ctes.append("r AS (INSERT INTO block_revisions (agent_pk, label, old_value, new_value,"
                    " source, turn_id, created_at) SELECT $4, u.label, u.old, u.new, u.source,"
                    f" u.turn_id, u.created_at FROM c, {source} ORDER BY u.i)")
    if lease:  # only once the turn is stored (`c` has a row): else the statement writes nothing
        ctes.append(f"l AS (UPDATE leases SET {RELEASED} WHERE conversation_pk = $1"
                    f" AND owner = {p('text')[0]} AND EXISTS (SELECT FROM c))")
    stored = "(SELECT count(*) FROM p)" if passages else "0"
    return f"WITH {', '.join(ctes)} SELECT {stored} FROM c"
