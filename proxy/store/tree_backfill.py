"""Building the trees of conversations stored before conversations were trees (migration 6),
and of imported ones: what to write, from what is stored (both backends run the SQL).

Hashing is Python (core/tree.py), not SQL, so a migration cannot do it: the migration lists
the conversations to build in `tree_backfill`, and the store builds them when it opens, one
conversation per transaction, each removed from the list in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core.messages import visible_hash
from ..core.tree import TreeRow, rebuild
from ..core.types import Message

BATCH = 50  # conversations per backfill transaction


@dataclass(frozen=True)
class StoredRow:
    seq: int
    turn_id: str
    role: str
    visible: bool
    superseded: bool
    in_context: bool
    visible_hash: str | None
    data: Message
    parent_seq: int | None = None


@dataclass(frozen=True)
class TreeUpdate:
    rows: list[tuple[int, str, str | None, int]]  # (parent_seq, path_hash, visible_hash, seq)
    summary_seq: int | None  # the row the conversation's summary covers through


def plan_tree(rows: Sequence[StoredRow], summary: str) -> TreeUpdate:
    """Parents and path hashes for every row (core.tree.rebuild), visible hashes where an old
    row has none, and the row the current summary belongs on: the last evicted row of the
    active path (the summary covers exactly the evicted rows). An internal row (a memory step)
    gets no visible hash, as when it is stored live (its path hash is its parent's)."""
    hashes = {r.seq: r.visible_hash or (visible_hash(r.data) if r.visible else None)
              for r in rows}
    built = rebuild([TreeRow(r.seq, r.turn_id, r.role, r.visible, r.superseded,
                             hashes[r.seq] or "", r.parent_seq) for r in rows])
    evicted = [r.seq for r in rows if not r.superseded and not r.in_context]
    summary_seq = max(evicted) if summary and evicted else None
    return TreeUpdate([(parent, path, hashes[seq], seq) for seq, parent, path in built],
                      summary_seq)
