"""The turns around a search hit: what was said just before and just after it.

A hit alone often lacks what answers the question: "When did Caroline go hiking?" matches
"Caroline: I went hiking!" while the date, the place or the reply is in the turn before or
after. Showing each hit's neighbouring turns (`[memory] search_neighbours`, docs/search.md)
raised recall@10 on LoCoMo by 2.2 points at the same amount of text (issue 18). The store
reads them for all hits in one query (`NeighbourSource`); this module only arranges them:

- a neighbour goes with the best-ranked hit it borders, once: two hits a turn apart do not
  show their shared turn twice, and a neighbour that is itself a hit shown elsewhere in the
  list is left out;
- neighbours are clipped shorter than hits (`NEIGHBOUR_CHARS`), and when a result list is
  over its budget the context of the lowest-ranked hits goes first, then those hits
  (core/tools.py), so the budget buys hits before context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .dates import stamp
from .types import MessageHit

NEIGHBOUR_CHARS = 300


class NeighbourSource(Protocol):
    """Where the neighbouring turns of hits are read (the store, both backends)."""

    async def message_neighbours(
        self, agent_pk: int, hits: Sequence[tuple[str, int]], count: int
    ) -> list[tuple[int, MessageHit]]:
        """For each (conversation_id, seq) of `hits`, at most `count` turns right before it
        and `count` right after it in its conversation, as (index of the hit in `hits`,
        message). A turn: a visible, not superseded message with text from the user, or from
        the assistant without tool calls (tool calls and results are not conversation)."""


@dataclass(frozen=True)
class Around:
    """A hit's neighbours, oldest first on each side."""

    before: tuple[MessageHit, ...] = ()
    after: tuple[MessageHit, ...] = ()


NOTHING = Around()


def arrange(hits: Sequence[MessageHit], neighbours: Sequence[tuple[int, MessageHit]], *,
            leave_out: Callable[[MessageHit], bool] = lambda _: False) -> list[Around]:
    """One `Around` per hit, in the order of `hits`. A neighbour that is one of `hits`, that
    `leave_out` rejects (e.g. a message the prompt holds already) or that a better-ranked hit
    shows already is left out; so is a row naming no hit of the list."""
    taken = {(h.conversation_id, h.seq) for h in hits}
    sides: list[tuple[list[MessageHit], list[MessageHit]]] = [([], []) for _ in hits]
    for index, message in sorted(neighbours, key=lambda n: (n[0], n[1].seq)):
        key = (message.conversation_id, message.seq)
        if not 0 <= index < len(hits) or key in taken or leave_out(message):
            continue
        hit = hits[index]
        if message.conversation_id != hit.conversation_id or message.seq == hit.seq:
            continue
        taken.add(key)
        sides[index][0 if message.seq < hit.seq else 1].append(message)
    return [Around(tuple(before), tuple(after)) for before, after in sides]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def entry(message: MessageHit, limit: int) -> dict[str, Any]:
    """A message as a search result shows it: its date, role, speaker name if it has one
    (the text may not say who spoke; the name is searchable, so it must be visible too) and
    (clipped) text."""
    shown = {"timestamp": stamp(message.created_at), "role": message.role}
    if message.name:
        shown["name"] = message.name
    shown["content"] = clip(message.text, limit)
    return shown


def hit_entry(hit: MessageHit, around: Around, limit: int) -> dict[str, Any]:
    """A `conversation_search` result: the hit, and with context its `before`/`after`
    turns (absent when there are none)."""
    result = entry(hit, limit)
    if around.before:
        result["before"] = [entry(m, NEIGHBOUR_CHARS) for m in around.before]
    if around.after:
        result["after"] = [entry(m, NEIGHBOUR_CHARS) for m in around.after]
    return result


def without_context(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("before", "after")}
