"""The conversation tree in the Postgres store (core/tree.py, docs/conversation-tree.md):
moving the active path, locating a request among the stored paths, and building the trees of
conversations stored before there were trees. The same semantics as sqlite/tree.py.

The active path is the rows not superseded, so a turn's context stays one partial-index range
(`messages_context`). Moving the path to another node supersedes the active rows after the
point where the two paths meet and restores the other path's rows; seqs grow along every path,
so "active rows in seq order" is always the path in order.

Every call here is one statement: a lookup is one indexed query (`messages_path`,
`messages_anchor`; the walks are recursive CTEs), and `move_path` one statement that the
caller runs in a transaction that locked the conversation first (turns.py), so that its
snapshot (a statement's reads, also in its later parts) is taken after that lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...core.tree import Node
from .. import tree_backfill
from .sql import fast_loads

if TYPE_CHECKING:
    import asyncpg

_NODE = ("SELECT m.seq, m.path_hash, m.role, m.superseded, m.turn_id, m.conversation_pk,"
         " c.conversation_id FROM messages m JOIN conversations c ON c.pk = m.conversation_pk")
_ANCHOR_CANDIDATES = 8  # as in sqlite/tree.py

# $1 conversation_pk, $2 seq
TRUNCATE = ("UPDATE messages SET superseded = true, in_context = false"
            " WHERE conversation_pk = $1 AND seq > $2 AND NOT superseded")

# The active path's newest summary (`messages_summaries`), before a move and after it (the
# rows active then: those up to where the paths meet, and the restored ones).
_COVERAGE = ("SELECT m.seq, m.summary FROM messages m{} WHERE m.conversation_pk = $1"
             " AND m.summary IS NOT NULL AND {} ORDER BY m.seq DESC LIMIT 1")
_BEFORE = _COVERAGE.format("", "NOT m.superseded")
_AFTER = _COVERAGE.format(", w", "((NOT m.superseded AND m.seq <= w.meet)"
                                 " OR m.seq = ANY(w.restore))")

# $1 conversation_pk, $2 parent_seq. `up` walks from parent_seq through superseded rows to
# the first active one (`meet`, where the two paths meet; 0: the root); `b`/`a` are the
# active path's summary before/after the move. One UPDATE supersedes the active rows after
# `meet`, restores the walked rows and, if the summary changed (`k.changed`), puts exactly the
# rows after the new one in context; the conversation takes the new summary.
#
# Rows coming back into context break what a KnownContext of another process relies on
# (store/known_context.py: flags only go from in to out), so such a move bumps the
# conversation epoch, as a delete does: every process reads its contexts in full once.
MOVE = (
    "WITH RECURSIVE up(seq, parent_seq, superseded) AS ("
    " SELECT seq, parent_seq, superseded FROM messages WHERE conversation_pk = $1 AND seq = $2"
    " UNION ALL SELECT m.seq, m.parent_seq, m.superseded FROM up JOIN messages m"
    " ON m.conversation_pk = $1 AND m.seq = up.parent_seq WHERE up.superseded),"
    " w AS (SELECT coalesce(array_agg(seq) FILTER (WHERE superseded), '{}') AS restore,"
    " coalesce(max(seq) FILTER (WHERE NOT superseded), 0) AS meet FROM up),"
    f" b AS ({_BEFORE}), a AS ({_AFTER}),"
    " k AS (SELECT w.restore, w.meet, coalesce(a.seq, 0) AS covered,"
    " coalesce(a.summary, '') AS summary, (coalesce(a.seq, 0), coalesce(a.summary, ''))"
    " IS DISTINCT FROM (coalesce(b.seq, 0), coalesce(b.summary, '')) AS changed"
    " FROM w LEFT JOIN a ON true LEFT JOIN b ON true),"
    # the rows that may change: after `meet` (restored ones too: seqs grow along a path), all
    # of the conversation's when the summary changed
    " r AS (SELECT k.*, CASE WHEN k.changed THEN 0 ELSE k.meet END AS low FROM k),"
    " u AS (UPDATE messages m SET superseded = (m.seq > k.meet AND m.seq <> ALL(k.restore)),"
    " in_context = CASE WHEN m.seq > k.meet AND m.seq <> ALL(k.restore) THEN false"
    " WHEN k.changed THEN m.seq > k.covered ELSE m.in_context OR m.seq = ANY(k.restore) END"
    " FROM r k WHERE m.conversation_pk = $1 AND m.seq > k.low AND (m.seq = ANY(k.restore)"
    " OR (NOT m.superseded AND (m.seq > k.meet"
    " OR (k.changed AND m.in_context <> (m.seq > k.covered)))))),"
    " v AS (UPDATE conversations SET summary = k.summary FROM k WHERE pk = $1 AND k.changed),"
    " e AS (UPDATE conversation_epoch SET value = value + 1 FROM k"
    " WHERE id = 1 AND (k.changed OR cardinality(k.restore) > 0))"
    " SELECT k.meet FROM k"
)


def _node(r: Any) -> Node:
    return Node(r[0], r[1] or "", r[2], active=not r[3], turn_id=r[4], conversation_pk=r[5],
                conversation_id=r[6])


async def truncate_after(conn: Any, conversation_pk: int, seq: int) -> None:
    """Supersede the active path after `seq` (a regenerate, an edit): kept as a branch."""
    await conn.execute(TRUNCATE, conversation_pk, seq)


async def move_path(conn: Any, conversation_pk: int, parent_seq: int) -> int:
    """Make the path ending at `parent_seq` the active one (sqlite/tree.py::move_path), in the
    caller's transaction, which has locked the conversation. Returns where the paths meet."""
    return await conn.fetchval(MOVE, conversation_pk, parent_seq)


def _anchor_sql(in_conversation: bool) -> str:
    """$1 agent_pk, $2 the newest visible hash, $3 how many, $4 all of them newest first,
    ($5 conversation_pk). The candidates (`messages_anchor`: active first, then newest) each
    walk up their parents (`up`) until they saw $3 visible rows; the first whose visible
    hashes are exactly $4 wins."""
    where = " AND m.conversation_pk = $5" if in_conversation else ""
    return (
        "WITH RECURSIVE cand AS (SELECT m.seq, m.path_hash, m.role, m.superseded, m.turn_id,"
        " m.conversation_pk, m.parent_seq FROM messages m WHERE m.agent_pk = $1 AND m.visible"
        f" AND m.visible_hash = $2{where} ORDER BY m.superseded, m.pk DESC"
        f" LIMIT {_ANCHOR_CANDIDATES}),"
        " up(conversation_pk, start, seq, parent_seq, visible, visible_hash, n) AS ("
        " SELECT conversation_pk, seq, seq, parent_seq, true, $2::text, 1 FROM cand"
        " UNION ALL SELECT up.conversation_pk, up.start, m.seq, m.parent_seq, m.visible,"
        " m.visible_hash, up.n + m.visible::int FROM up JOIN messages m"
        " ON m.conversation_pk = up.conversation_pk AND m.seq = up.parent_seq"
        " WHERE up.n < $3::int),"
        " seen AS (SELECT conversation_pk, start, array_agg(visible_hash ORDER BY seq DESC) AS h"
        " FROM up WHERE visible GROUP BY conversation_pk, start)"
        " SELECT x.seq, x.path_hash, x.role, x.superseded, x.turn_id, x.conversation_pk,"
        " c.conversation_id FROM cand x JOIN seen"
        " ON seen.conversation_pk = x.conversation_pk AND seen.start = x.seq"
        " JOIN conversations c ON c.pk = x.conversation_pk WHERE seen.h = $4::text[]"
        " ORDER BY x.superseded, x.seq DESC LIMIT 1"
    )


_ANCHOR = {flag: _anchor_sql(flag) for flag in (False, True)}


class PostgresTreeMixin:
    """Tree lookups of `PostgresStore` (see proxy/store/base.py for the contract)."""

    if TYPE_CHECKING:  # provided by PostgresStore
        @property
        def pool(self) -> asyncpg.Pool: ...

    async def find_nodes(self, agent_pk: int, path_hashes: list[str], *,
                         conversation_pk: int | None = None) -> list[Node]:
        """One query on `messages_path` (agent_pk, path_hash) WHERE visible."""
        unique = list(dict.fromkeys(path_hashes))
        if not unique:
            return []
        sql = f"{_NODE} WHERE m.agent_pk = $1 AND m.visible AND m.path_hash = ANY($2::text[])"
        if conversation_pk is None:
            rows = await self.pool.fetch(sql, agent_pk, unique)
        else:
            rows = await self.pool.fetch(f"{sql} AND m.conversation_pk = $3", agent_pk, unique,
                                         conversation_pk)
        return [_node(r) for r in rows]

    async def find_anchor(self, agent_pk: int, visible_hashes: list[str], *,
                          conversation_pk: int | None = None) -> Node | None:
        """The stored message whose visible ancestors end with exactly `visible_hashes`
        (oldest first), preferring the active path, then the newest: one query."""
        if not visible_hashes:
            return None
        args: list[Any] = [agent_pk, visible_hashes[-1], len(visible_hashes),
                           list(reversed(visible_hashes))]
        if conversation_pk is not None:
            args.append(conversation_pk)
        r = await self.pool.fetchrow(_ANCHOR[conversation_pk is not None], *args)
        return None if r is None else _node(r)

    async def path_tip(self, conversation_pk: int) -> Node | None:
        r = await self.pool.fetchrow(f"{_NODE} WHERE m.conversation_pk = $1"
                                     " AND NOT m.superseded ORDER BY m.seq DESC LIMIT 1",
                                     conversation_pk)
        return None if r is None else _node(r)


# --- building the trees of older conversations --------------------------------------------
_CLAIM = (  # a batch of the list, taken in the caller's transaction; other processes skip it
    "DELETE FROM tree_backfill WHERE conversation_pk IN (SELECT conversation_pk"
    " FROM tree_backfill ORDER BY conversation_pk LIMIT $1 FOR UPDATE SKIP LOCKED)"
    " RETURNING conversation_pk"
)
_ROWS = (
    "SELECT conversation_pk, seq, turn_id, role, visible, superseded, in_context,"
    " visible_hash, CASE WHEN visible_hash IS NULL AND visible THEN data END, parent_seq"
    " FROM messages WHERE conversation_pk = ANY($1::bigint[]) ORDER BY conversation_pk, seq"
)
_WRITE = (
    "UPDATE messages m SET parent_seq = u.parent, path_hash = u.path, visible_hash ="
    " CASE WHEN m.visible THEN coalesce(m.visible_hash, u.vh) ELSE m.visible_hash END,"
    " summary = coalesce(u.summary, m.summary) FROM unnest($1::bigint[], $2::integer[],"
    " $3::integer[], $4::text[], $5::text[], $6::text[])"
    " AS u(cpk, seq, parent, path, vh, summary)"
    " WHERE m.conversation_pk = u.cpk AND m.seq = u.seq"
)


async def backfill_trees(conn: asyncpg.Connection,
                         conversation_pks: list[int] | None = None) -> int:
    """Build the trees of the conversations listed in `tree_backfill` (or of
    `conversation_pks`, in the caller's transaction), removing them from the list. Returns how
    many were built. Without `conversation_pks`, each batch is its own transaction."""
    if conversation_pks is not None:
        await _build(conn, conversation_pks)
        await conn.execute("DELETE FROM tree_backfill WHERE conversation_pk = ANY($1::bigint[])",
                           conversation_pks)
        return len(conversation_pks)
    built = 0
    while True:
        async with conn.transaction():
            pks = [r[0] for r in await conn.fetch(_CLAIM, tree_backfill.BATCH)]
            if not pks:
                return built
            await _build(conn, pks)
        built += len(pks)


async def _build(conn: asyncpg.Connection, pks: list[int]) -> None:
    """Two reads and one write for a batch of conversations, locked first (so that no turn
    writes in them meanwhile)."""
    summaries = {r[0]: r[1] for r in await conn.fetch(
        "SELECT pk, summary FROM conversations WHERE pk = ANY($1::bigint[]) ORDER BY pk"
        " FOR NO KEY UPDATE", pks)}
    rows: dict[int, list[tree_backfill.StoredRow]] = {pk: [] for pk in summaries}
    for r in await conn.fetch(_ROWS, list(summaries)):
        rows[r[0]].append(tree_backfill.StoredRow(
            r[1], r[2], r[3], r[4], r[5], r[6], r[7], {} if r[8] is None else fast_loads(r[8]),
            r[9]))
    cols: list[list[Any]] = [[], [], [], [], [], []]
    for pk, stored in rows.items():
        update = tree_backfill.plan_tree(stored, summaries[pk])
        for parent, path, vh, seq in update.rows:
            for col, value in zip(cols, (pk, seq, parent, path, vh,
                                         summaries[pk] if seq == update.summary_seq else None),
                                  strict=True):
                col.append(value)
    if cols[0]:
        await conn.execute(_WRITE, *cols)
