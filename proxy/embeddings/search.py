"""`SearchService`: the one ranking behind every search memproxy offers.

The memory tools (`archival_memory_search`, `conversation_search`), automatic recall
(turn/recall.py), the REST searches (`GET /v1/agents/{a}/messages?query=`,
`…/passages?query=`) and through them the CLI and the inspector all search through this object,
so the same question gets the same answer everywhere: hybrid (`HybridSearch`) while embeddings
are on, the store's full-text search otherwise.

It adds these to the backend's ranking:

- for messages, conversational context (`core.ranking.with_neighbours`): the backend is asked
  for more candidates than wanted (`context_depth`: about 100, from full-text alone or from
  each side of hybrid; automatic recall, whose search runs on every turn, 4 per wanted hit,
  half as many from each side of hybrid), each message's score is raised by a share of its
  adjacent turn's, and the best `limit` are kept;
- for messages, the dates the query names (`core.dates.named_periods`: "in May 2023", "on
  3 June, 2023"): candidates stored within them are raised (`core.ranking.in_periods`);
- for hybrid messages, full-text's first result stays first (`core.ranking.keep_first`:
  fusion orders the rest; why in core/ranking.py);
- a deterministic order among equal scores (the score, then the newest first, then the highest
  key), which neither SQL (ties come in whatever order the index walk yields) nor fusion define.
"""

from __future__ import annotations

from typing import Any

from ..core.dates import named_periods
from ..core.ranking import (
    adjacent_turns,
    hit_order,
    in_periods,
    keep_first,
    passage_order,
    with_neighbours,
)
from ..core.types import MessageHit, Passage, StoredMessage

MIN_CONTEXT_DEPTH = 100
MAX_CONTEXT_DEPTH = 200
# Automatic recall's depth: 4 candidates per wanted hit (32 for its 8) instead of 100, which
# would cost it about half a millisecond more per turn at 10k messages (bench overhead).
RECALL_DEPTH_FACTOR = 4


def context_depth(limit: int) -> int:
    """How many message candidates are re-ranked with their neighbours for a top-`limit`:
    twice as many, at least 100 (a neighbour ranked lower can still lift a hit), at most 200
    unless more were asked for."""
    return max(limit, min(MAX_CONTEXT_DEPTH, max(MIN_CONTEXT_DEPTH, 2 * limit)))


def kept_first(hits: list[MessageHit], first: MessageHit | None) -> list[MessageHit]:
    """`hits` with the message of `first` (full-text's best) first, at the best score
    (core.ranking.keep_first)."""
    by_key = {(h.conversation_id, h.seq): h for h in hits}
    ranked = keep_first([(key, h.score) for key, h in by_key.items()],
                        None if first is None else (first.conversation_id, first.seq))
    return [by_key[key].rescored(score) for key, score in ranked]


def in_context(hits: list[MessageHit], query: str = "") -> list[MessageHit]:
    """`hits` re-scored with their neighbours, then by the dates `query` names
    (core/ranking.py), best first."""
    by_key = {(h.conversation_id, h.seq): h for h in hits}
    raised = with_neighbours([((h.conversation_id, h.seq), h.score) for h in hits],
                             adjacent_turns)
    if periods := named_periods(query):
        raised = in_periods(raised, lambda key: by_key[key].created_at, periods)
    return [by_key[key].rescored(score) for key, score in raised]




class SearchService:
    """A `SearchBackend` (proxy/core/tools.py) over `backend` (the store, or `HybridSearch`),
    plus the REST API's whole-row search."""

    def __init__(self, store: Any, backend: Any | None = None) -> None:
        self.store = store
        self.backend = store if backend is None else backend

    @property
    def hybrid(self) -> bool:
        return self.backend is not self.store

    async def search_passages(self, agent_pk: int, query: str, *, tags: list[str] | None = None,
                              top_k: int = 5) -> list[Passage]:
        return passage_order(await self.backend.search_passages(agent_pk, query, tags=tags,
                                                                top_k=top_k))

    async def search_messages(self, agent_pk: int, query: str, *,
                              roles: list[str] | None = None, limit: int = 10,
                              start: float | None = None, end: float | None = None,
                              newest: int | None = None) -> list[MessageHit]:
        if not query.strip():  # the newest messages: nothing to rank
            return hit_order(await self.backend.search_messages(
                agent_pk, query, roles=roles, limit=limit, start=start, end=end))
        # Automatic recall (`newest`: a bounded search on every turn) re-ranks fewer
        # candidates: each one is a row read and a text decoded on the turn's path.
        depth = context_depth(limit) if newest is None else max(limit, RECALL_DEPTH_FACTOR * limit)
        if not self.hybrid:
            hits = await self.backend.search_messages(
                agent_pk, query, roles=roles, limit=depth, start=start, end=end, newest=newest)
            return hit_order(in_context(hits, query))[:limit]
        # Hybrid: each side as deep as full-text alone reads (automatic recall: half as deep,
        # to keep its cost), so the full-text ranking below is exactly full-text's; every
        # fused candidate is kept and re-ranked, and full-text's first stays first.
        fts, fused = await self.backend.message_lists(
            agent_pk, query, roles=roles, start=start, end=end, newest=newest,
            depth=depth if newest is None else max(limit, depth // 2))
        text = hit_order(in_context(fts, query))
        if not fused:
            return text[:limit]
        return kept_first(hit_order(in_context(fused, query)), text[0] if text else None)[:limit]

    async def agent_messages(self, agent_pk: int, query: str, *,
                             roles: list[str] | None = None, limit: int = 20,
                             start: float | None = None, end: float | None = None
                             ) -> list[tuple[str, StoredMessage, float]]:
        """`search_messages` as whole rows (conversation_id, message, score), for the REST API;
        a blank query lists the newest messages."""
        hits = await self.search_messages(agent_pk, query, roles=roles, limit=limit,
                                          start=start, end=end)
        rows = await self.store.messages_at(agent_pk, [(h.conversation_id, h.seq) for h in hits])
        return [(h.conversation_id, rows[key], h.score) for h in hits
                if (key := (h.conversation_id, h.seq)) in rows]
