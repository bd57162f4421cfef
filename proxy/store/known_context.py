"""Loading a conversation's context again without decoding it again.

Every turn reads its conversation's context: the messages still in the window, which can be
hundreds. Decoding them (JSON, then objects) was the largest part of reading a turn's state,
and almost all of it is what the previous turn of the same conversation already decoded. So the
turn hands the store what it loaded last time (`KnownContext`) and the store reads:

- how many of the rows up to the newest known seq are still in context — a count over the
  partial index, no row decoded;
- only if that count is lower (a page-out, a regenerate), which of those seqs are left;
- the rows after the newest known seq, decoded as usual.

On Postgres even that count is skipped while it cannot have moved: each conversation counts
the rows that ever left its context (`conversations.left_context`, kept by triggers for every
writer, migration 14), and the known context carries the count it was read with. Equal counts
mean no row left since: the count is the known one, and no row up to the newest known seq is
read.

This is exact because of how rows change: a message's data never changes after it is written;
its in-context and superseded flags only ever go from in to out; seqs only grow within a
conversation. So the in-context rows up to the known newest seq are a subset of the known
ones, and equal counts mean equal sets. The one thing that could break it is a conversation's
pk coming back with different messages under it: that needs a delete (of the conversation or
its agent, e.g. an import that replaces the agent), and every delete of a conversation row
bumps the store's **conversation epoch** (a trigger, whoever deletes), which invalidates every
known context in every process. The other is moving a conversation's active path to another
branch (the stores' `tree.move_path`), which brings rows back into context: a move that does
bumps the epoch too.
"""

from __future__ import annotations

from collections.abc import Collection

from ..core.types import KnownContext, StoredMessage


def usable(known: KnownContext | None, epoch: int, created_at: float) -> bool:
    """Whether `known` describes this very conversation row (see the module docstring)."""
    return known is not None and known.epoch == epoch and known.created_at == created_at


def newest_seq(known: KnownContext) -> int:
    """The seq after which rows must be read from the store (0: read them all)."""
    return known.messages[-1].seq if known.messages else 0


def merge(known: KnownContext, still_in: int | Collection[int],
          new: list[StoredMessage]) -> list[StoredMessage]:
    """The context now: the known messages still in it, then the `new` rows.

    `still_in` is the count of in-context rows with seq <= `newest_seq(known)` — when it equals
    the known count, nothing left — or else the collection of those seqs."""
    if isinstance(still_in, int):
        if still_in != len(known.messages):
            raise ValueError("a count that differs needs the seqs that are left")
        kept = list(known.messages)
    else:
        kept = [m for m in known.messages if m.seq in still_in]
    return kept + new
