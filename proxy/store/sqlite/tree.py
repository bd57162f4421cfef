"""The conversation tree in the SQLite store (core/tree.py, docs/conversation-tree.md):
moving the active path, locating a request among the stored paths, and building the trees of
conversations stored before there were trees.

The active path is the rows not superseded, so a turn's context stays one partial-index range
(`messages_context`). Moving the path to another node supersedes the active rows after the
point where the two paths meet and restores the other path's rows; both paths' rows keep their
seqs, which grow along every path, so "active rows in seq order" is always the path in order.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from ...core.tree import ROOT_SEQ, Node
from .. import tree_backfill
from .rows import _loads

if TYPE_CHECKING:
    from .lanes import SQLiteLanes

_NODE = ("SELECT m.seq, m.path_hash, m.role, m.superseded, m.turn_id, m.conversation_pk,"
         " c.conversation_id FROM messages m JOIN conversations c ON c.pk = m.conversation_pk")
_MAX_PARAMS = 500  # hashes per lookup statement
_ANCHOR_CANDIDATES = 8


def _node(r: tuple) -> Node:
    return Node(r[0], r[1] or "", r[2], active=not r[3], turn_id=r[4], conversation_pk=r[5],
                conversation_id=r[6])


def _coverage(db: sqlite3.Connection, conversation_pk: int) -> tuple[int, str]:
    """(seq, summary) of the active path's newest summary, or (0, "") when it has none."""
    row = db.execute("SELECT seq, summary FROM messages WHERE conversation_pk = ?"
                     " AND summary IS NOT NULL AND superseded = 0 ORDER BY seq DESC LIMIT 1",
                     (conversation_pk,)).fetchone()
    return (row[0], row[1]) if row else (ROOT_SEQ, "")


def truncate_after(db: sqlite3.Connection, conversation_pk: int, seq: int) -> int:
    """Supersede the active path after `seq` (a regenerate, an edit): kept as a branch."""
    return db.execute("UPDATE messages SET superseded = 1, in_context = 0"
                      " WHERE conversation_pk = ? AND seq > ? AND superseded = 0",
                      (conversation_pk, seq)).rowcount


def move_path(db: sqlite3.Connection, conversation_pk: int, parent_seq: int) -> None:
    """Make the path ending at `parent_seq` the active one, in the caller's transaction.

    Walks up from `parent_seq` through superseded rows to the first active one (where the two
    paths meet), supersedes the active rows after it, restores the walked rows, and, if the
    summary the active path had is no longer on it, takes the newest summary of the new path
    and puts exactly the rows after it back in context.

    Rows coming back into context break what a KnownContext of another process relies on
    (store/known_context.py: flags only go from in to out), so such a move bumps the
    conversation epoch, as a delete does: every process reads its contexts in full once."""
    restore: list[int] = []
    meet = ROOT_SEQ
    if parent_seq != ROOT_SEQ:
        walked = db.execute(
            "WITH RECURSIVE up(seq, parent_seq, superseded) AS ("
            " SELECT seq, parent_seq, superseded FROM messages"
            " WHERE conversation_pk = ?1 AND seq = ?2"
            " UNION ALL SELECT m.seq, m.parent_seq, m.superseded FROM messages m JOIN up"
            " ON m.conversation_pk = ?1 AND m.seq = up.parent_seq WHERE up.superseded = 1)"
            " SELECT seq, superseded FROM up", (conversation_pk, parent_seq)).fetchall()
        restore = [seq for seq, superseded in walked if superseded]
        meet = next((seq for seq, superseded in walked if not superseded), ROOT_SEQ)
    before = _coverage(db, conversation_pk)
    truncate_after(db, conversation_pk, meet)
    db.executemany("UPDATE messages SET superseded = 0, in_context = 1"
                   " WHERE conversation_pk = ? AND seq = ?",
                   ((conversation_pk, seq) for seq in restore))
    after = _coverage(db, conversation_pk)
    if after != before:
        covered, summary = after
        db.execute("UPDATE conversations SET summary = ? WHERE pk = ?", (summary, conversation_pk))
        db.execute("UPDATE messages SET in_context = (seq > ?1) WHERE conversation_pk = ?2"
                   " AND superseded = 0 AND in_context != (seq > ?1)", (covered, conversation_pk))
    if restore or after != before:
        db.execute("UPDATE conversation_epoch SET value = value + 1 WHERE id = 1")


class SQLiteTree:
    """Tree lookups of `SQLiteStore` (see proxy/store/base.py for the contract)."""

    lanes: SQLiteLanes

    async def find_nodes(self, agent_pk: int, path_hashes: list[str], *,
                         conversation_pk: int | None = None) -> list[Node]:
        where = " AND m.conversation_pk = ?" if conversation_pk is not None else ""

        def run(db: sqlite3.Connection) -> list[Node]:
            found: list[Node] = []
            unique = list(dict.fromkeys(path_hashes))
            for start in range(0, len(unique), _MAX_PARAMS):
                part = unique[start:start + _MAX_PARAMS]
                marks = ", ".join("?" * len(part))
                args: list = [agent_pk, *part]
                if conversation_pk is not None:
                    args.append(conversation_pk)
                found += [_node(r) for r in db.execute(
                    f"{_NODE} WHERE m.agent_pk = ? AND m.visible = 1"
                    f" AND m.path_hash IN ({marks}){where}", args)]
            return found

        return await self.lanes.read_fast(run)

    async def find_anchor(self, agent_pk: int, visible_hashes: list[str], *,
                          conversation_pk: int | None = None) -> Node | None:
        """The stored message whose visible ancestors end with exactly `visible_hashes`
        (oldest first), preferring the active path, then the newest."""
        if not visible_hashes:
            return None
        where = " AND m.conversation_pk = ?" if conversation_pk is not None else ""
        wanted = list(reversed(visible_hashes))

        def run(db: sqlite3.Connection) -> Node | None:
            args: list = [agent_pk, visible_hashes[-1]]
            if conversation_pk is not None:
                args.append(conversation_pk)
            candidates = db.execute(
                f"{_NODE} WHERE m.agent_pk = ? AND m.visible = 1 AND m.visible_hash = ?{where}"
                f" ORDER BY m.superseded, m.pk DESC LIMIT {_ANCHOR_CANDIDATES}", args).fetchall()
            for r in candidates:
                seen = [h for (h,) in db.execute(
                    "WITH RECURSIVE up(seq, parent_seq, visible, visible_hash, n) AS ("
                    " SELECT seq, parent_seq, visible, visible_hash, 1 FROM messages"
                    " WHERE conversation_pk = ?1 AND seq = ?2"
                    " UNION ALL SELECT m.seq, m.parent_seq, m.visible, m.visible_hash,"
                    " up.n + m.visible FROM messages m JOIN up"
                    " ON m.conversation_pk = ?1 AND m.seq = up.parent_seq WHERE up.n < ?3)"
                    " SELECT visible_hash FROM up WHERE visible = 1 ORDER BY seq DESC LIMIT ?3",
                    (r[5], r[0], len(wanted)))]
                if seen == wanted:
                    return _node(r)
            return None

        return await self.lanes.read_fast(run)

    async def path_tip(self, conversation_pk: int) -> Node | None:
        def run(db: sqlite3.Connection) -> Node | None:
            r = db.execute(f"{_NODE} WHERE m.conversation_pk = ? AND m.superseded = 0"
                           " ORDER BY m.seq DESC LIMIT 1", (conversation_pk,)).fetchone()
            return None if r is None else _node(r)

        return await self.lanes.read_fast(run)


# --- building the trees of older conversations --------------------------------------------
def backfill_trees(db: sqlite3.Connection, conversation_pks: list[int] | None = None) -> int:
    """Build the trees of the conversations listed in `tree_backfill` (or of
    `conversation_pks`, in the caller's transaction), removing them from the list. Returns how
    many were built. Without `conversation_pks`, each batch is its own transaction."""
    own = conversation_pks is None
    built = 0
    while True:
        pks = conversation_pks if not own else [r[0] for r in db.execute(
            "SELECT conversation_pk FROM tree_backfill ORDER BY conversation_pk LIMIT ?",
            (tree_backfill.BATCH,))]
        if not pks:
            return built
        if own:
            db.execute("BEGIN IMMEDIATE")
        try:
            for pk in pks:
                _backfill_one(db, pk)
            db.executemany("DELETE FROM tree_backfill WHERE conversation_pk = ?",
                           ((pk,) for pk in pks))
            if own:
                db.execute("COMMIT")
        except BaseException:
            if own and db.in_transaction:
                db.execute("ROLLBACK")
            raise
        built += len(pks)
        if not own:
            return built


def _backfill_one(db: sqlite3.Connection, conversation_pk: int) -> None:
    summary = db.execute("SELECT summary FROM conversations WHERE pk = ?",
                         (conversation_pk,)).fetchone()
    if summary is None:
        return
    rows = [tree_backfill.StoredRow(r[0], r[1], r[2], bool(r[3]), bool(r[4]), bool(r[5]), r[6],
                                    {} if r[7] is None else _loads(r[7]), r[8])
            for r in db.execute(
                "SELECT seq, turn_id, role, visible, superseded, in_context, visible_hash,"
                " CASE WHEN visible_hash IS NULL AND visible = 1 THEN data END, parent_seq"
                " FROM messages WHERE conversation_pk = ? ORDER BY seq", (conversation_pk,))]
    update = tree_backfill.plan_tree(rows, summary[0])
    db.executemany("UPDATE messages SET parent_seq = ?, path_hash = ?, visible_hash ="
                   " CASE WHEN visible = 1 THEN coalesce(visible_hash, ?) ELSE visible_hash END"
                   " WHERE conversation_pk = ? AND seq = ?",
                   ((p, h, v, conversation_pk, s) for p, h, v, s in update.rows))
    if update.summary_seq is not None:
        db.execute("UPDATE messages SET summary = ? WHERE conversation_pk = ? AND seq = ?",
                   (summary[0], conversation_pk, update.summary_seq))

