"""A conversation is a tree of messages (docs/conversation-tree.md).

Chat UIs keep a tree (Open WebUI, LibreChat and ChatGPT store messages with parent ids; a
Responses API `previous_response_id` is a parent pointer too): a user edits message 3, switches
back to the old branch, regenerates a reply. memproxy keeps the same shape. Every stored message
has a parent (`parent_seq`, 0 for the root) and every row a `path_hash`: for a visible message
the hash of its parent's path hash and its own `visible_hash`, for an internal step (a memory
tool call or result) its parent's path hash unchanged, so the steps hang between the visible
messages they belong to without changing what a client's history hashes to.

Like a git commit id, a path hash names a whole path: a client's resent history is hashed the
same way (`chain`), and where it ends in what is stored is one indexed lookup of those hashes,
not a scan of the transcript with heuristics.

The rows of the conversation's *active path* are the ones not superseded; every other branch is
kept, superseded, and comes back when a client sends its path again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .messages import visible_hash
from .types import NewMessage

ROOT_SEQ = 0  # the parent of a conversation's first message
ROOT_HASH = ""  # the path hash of the empty path


def path_hash(parent: str, visible_hash: str) -> str:
    """The path hash of a visible message whose parent's path hash is `parent`."""
    return hashlib.blake2b(f"{parent}>{visible_hash}".encode(), digest_size=16).hexdigest()


def chain(visible_hashes: Iterable[str], start: str = ROOT_HASH) -> list[str]:
    """The path hashes of consecutive visible messages hanging from `start` (the root)."""
    out: list[str] = []
    current = start
    for h in visible_hashes:
        current = path_hash(current, h)
        out.append(current)
    return out


@dataclass(frozen=True)
class Node:
    """A stored visible message, as locating a request in the tree sees it."""

    seq: int
    path_hash: str
    role: str
    active: bool  # on the conversation's active path (not superseded)
    turn_id: str = ""
    conversation_pk: int = 0
    conversation_id: str = ""  # filled by lookups across an agent's conversations


def prefer(nodes: Iterable[Node]) -> Node | None:
    """Of nodes with the same path (an identical reply regenerated, say), the one on the active
    path, else the newest."""
    best: Node | None = None
    for node in nodes:
        if best is None or (node.active, node.seq) > (best.active, best.seq):
            best = node
    return best


# --- building the tree of rows stored before it existed -------------------------------------
@dataclass(frozen=True)
class TreeRow:
    """What (re)building a conversation's tree needs of a stored row."""

    seq: int
    turn_id: str
    role: str
    visible: bool
    superseded: bool
    visible_hash: str
    parent_seq: int | None = None  # None: not recorded (rows of an older release)


def rebuild(rows: Sequence[TreeRow]) -> list[tuple[int, int, str]]:
    """`(seq, parent_seq, path_hash)` for every row, in seq order.

    A recorded `parent_seq` is kept. Otherwise (a database made before conversations were
    trees, or an export without parents) the parent is inferred from the line the rows were
    stored in: the active path is exactly the rows not superseded, in seq order; a superseded
    row continues the row before it, except that a superseded turn starting with the role of the
    superseded row before it (a reply regenerated again, an edit edited again) is that row's
    sibling. Rows superseded together are thus kept as the branches they were.
    """
    ordered = sorted(rows, key=lambda r: r.seq)
    ordered_by_seq = {r.seq: r for r in ordered}
    hashes: dict[int, str] = {ROOT_SEQ: ROOT_HASH}
    parents: dict[int, int] = {}
    out: list[tuple[int, int, str]] = []
    last_active = ROOT_SEQ
    previous: TreeRow | None = None
    for row in ordered:
        parent = row.parent_seq
        if parent is None or parent not in hashes:
            parent = _inferred_parent(row, previous, last_active, parents, ordered_by_seq)
        parents[row.seq] = parent
        own = path_hash(hashes[parent], row.visible_hash) if row.visible else hashes[parent]
        hashes[row.seq] = own
        out.append((row.seq, parent, own))
        if not row.superseded:
            last_active = row.seq
        previous = row
    return out


def _inferred_parent(row: TreeRow, previous: TreeRow | None, last_active: int,
                     parents: dict[int, int], rows: dict[int, TreeRow]) -> int:
    if not row.superseded or previous is None:
        return last_active
    if row.turn_id != previous.turn_id and previous.superseded and previous.role == row.role:
        # a sibling: the same message made again, under what the previous one answered (past
        # the memory steps of its own turn that came before it)
        first = previous
        while (above := rows.get(parents[first.seq])) is not None and (
                above.turn_id == previous.turn_id and not above.visible):
            first = above
        return parents[first.seq]
    return previous.seq


def hang(messages: Iterable[NewMessage], start: str) -> str:
    """Give messages about to be stored, in order, their path hashes as a chain under the
    path `start`; returns the path hash of the last (`start` when there are none)."""
    current = start
    for m in messages:
        if m.visible:
            if m.visible_hash is None:
                m.visible_hash = visible_hash(m.data)
            current = path_hash(current, m.visible_hash)
        m.path_hash = current
    return current
