"""Hybrid search: full-text hits and vector hits fused by their normalised scores.

`HybridSearch` is a `SearchBackend` (proxy/core/tools.py), so the memory tools use it exactly
as they use the store. Per search:

1. full-text top-N (the store's FTS5 / tsvector search, unchanged) and, concurrently, the query
   embedding (bounded by `[embeddings] query_timeout_s`) followed by vector top-N over the
   agent's vectors with the same filters (tags; roles and dates; hidden and superseded
   messages left out);
2. both lists fused by `core.ranking.score_fuse`: each side's scores standardised over its
   own candidates, 0.7 × full-text + 0.3 × vector (why, and not reciprocal rank fusion:
   core/ranking.py, docs/search.md);
3. the top k of the fused list, its fused score (0..1) as `score`. For messages the search
   service (embeddings/search.py) takes both lists (`message_lists`), each read as deep as
   full-text alone reads, re-ranks them with neighbours and dates, and keeps full-text's
   first result first.

If the query cannot be embedded (timeout, error, no key) or the agent has no vectors yet, the
result is the full-text result alone, in its order and with its scores; a blank query is
always full-text (newest first). N = CANDIDATES(k): enough depth for fusion to matter,
bounded so a search stays cheap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ..core.ranking import hit_order, passage_order, score_fuse
from ..core.types import MessageHit, Passage
from ..store.vector_base import MESSAGE, PASSAGE, ROLE_CODES
from .client import EmbeddingError
from .index import VectorIndex

log = logging.getLogger(__name__)

MIN_CANDIDATES = 40
MAX_CANDIDATES = 200
QUERY_CACHE_SIZE = 256
# After the embeddings endpoint timed out or could not be reached, searches skip the query
# embedding for this long instead of each waiting `query_timeout_s` for the same outcome.
QUERY_BACKOFF_S = 15.0
MESSAGE_ROUNDS = 4  # widening rounds when hidden/superseded messages crowd the vector top-N

def candidates(k: int) -> int:
    """How deep each ranking is read for a top-`k` result: 4k, within [40, 200], and never
    less than k (a deep page of the agents API asks for more)."""
    return max(k, min(MAX_CANDIDATES, max(MIN_CANDIDATES, 4 * k)))


def _hit_key(hit: MessageHit) -> tuple[str, int]:
    return (hit.conversation_id, hit.seq)


class HybridSearch:
    """A `SearchBackend` fusing the store's full-text search with vector search."""

    def __init__(self, store: Any, index: VectorIndex,
                 embed_query: Callable[[str], Awaitable[np.ndarray]], *, timeout_s: float,
                 metrics: Any | None = None, pgvector: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.index = index
        self.embed_query = embed_query
        self.timeout_s = timeout_s
        self.metrics = metrics
        self.pgvector = pgvector
        self.clock = clock
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._skip_until = 0.0

    # --- the SearchBackend protocol ---------------------------------------------------------
    async def search_passages(self, agent_pk: int, query: str, *, tags: list[str] | None = None,
                              top_k: int = 5) -> list[Passage]:
        if not query.strip():
            return await self.store.search_passages(agent_pk, query, tags=tags, top_k=top_k)
        depth = candidates(top_k)
        # The vector side starts first: its cache check is a quick read that should not queue
        # behind the full-text query (one reader connection on SQLite); its scoring then runs
        # while the database ranks the full-text matches.
        vec, fts = await asyncio.gather(
            self._guard(self._passage_vectors(agent_pk, query, tags, depth)),
            self.store.search_passages(agent_pk, query, tags=tags, top_k=depth))
        if not vec:
            return fts[:top_k]
        found = {p.pk: p for p in vec}
        found.update({p.pk: p for p in fts})
        fused = score_fuse([(p.pk, p.score or 0.0) for p in fts],
                           [(p.pk, p.score or 0.0) for p in vec], text_complete=len(fts) < depth)
        # the deterministic order before the cut, so a longer page starts with a shorter one
        return passage_order([found[pk].rescored(score) for pk, score in fused])[:top_k]

    async def search_messages(self, agent_pk: int, query: str, *,
                              roles: list[str] | None = None, limit: int = 10,
                              start: float | None = None,
                              end: float | None = None, newest: int | None = None,
                              depth: int | None = None) -> list[MessageHit]:
        """`depth`: how deep each side is read (default `candidates(limit)`)."""
        if not query.strip():
            return await self.store.search_messages(agent_pk, query, roles=roles, limit=limit,
                                                    start=start, end=end)
        fts, fused = await self.message_lists(agent_pk, query, roles=roles, start=start,
                                              end=end, newest=newest,
                                              depth=depth or candidates(limit))
        return (fused or fts)[:limit]

    async def message_lists(self, agent_pk: int, query: str, *, depth: int,
                            roles: list[str] | None = None, start: float | None = None,
                            end: float | None = None, newest: int | None = None
                            ) -> tuple[list[MessageHit], list[MessageHit]]:
        """The full-text top `depth` and every fused candidate (both sides read `depth` deep),
        the fused list in `hit_order` with its fused scores; no fused list ([]) when the
        vector side has nothing (no vectors, the query could not be embedded, an error). The
        search service ranks both with the neighbour and date steps and keeps full-text's
        first (core/ranking.py `keep_first`). A non-blank `query`."""
        vec, fts = await asyncio.gather(
            self._guard(self._message_vectors(agent_pk, query, roles, start, end, depth)),
            self.store.search_messages(agent_pk, query, roles=roles, limit=depth, start=start,
                                       end=end, newest=newest))
        if not vec:
            return fts, []
        found = {_hit_key(h): h for h in vec}
        found.update({_hit_key(h): h for h in fts})
        fused = score_fuse([(_hit_key(h), h.score) for h in fts],
                           [(_hit_key(h), h.score) for h in vec], text_complete=len(fts) < depth)
        return fts, hit_order([found[key].rescored(score) for key, score in fused])

    # --- the vector side ----------------------------------------------------------------------
    async def _guard(self, work: Awaitable[list[Any]]) -> list[Any]:
        """The vector side never fails a search: any error means full-text alone."""
        try:
            return await work
        except Exception as exc:  # noqa: BLE001 - logged; the full-text result still stands
            log.warning("vector search failed, using full-text alone: %s", type(exc).__name__)
            self._count_failure("search")
            return []

    def _count_failure(self, stage: str) -> None:
        if self.metrics is not None:
            self.metrics.embedding_failures.labels(stage).inc()

    async def _query_vector(self, query: str) -> np.ndarray | None:
        """The query's embedding (cached), or None if it cannot be had within the timeout."""
        cached = self._queries.get(query)
        if cached is not None:
            self._queries.move_to_end(query)
            return cached
        if self.clock() < self._skip_until:
            return None
        try:
            matrix = await asyncio.wait_for(self.embed_query(query), self.timeout_s)
        except (TimeoutError, EmbeddingError) as exc:
            code = exc.code if isinstance(exc, EmbeddingError) else "timeout"
            if code in ("timeout", "unreachable"):
                self._skip_until = self.clock() + QUERY_BACKOFF_S
            log.warning("could not embed a search query (%s); full-text results only", code)
            self._count_failure("query")
            return None
        vector = np.asarray(matrix, dtype=np.float32).reshape(-1)
        self._queries[query] = vector
        if len(self._queries) > QUERY_CACHE_SIZE:
            self._queries.popitem(last=False)
        return vector

    async def _nearest(self, kind: str, agent_pk: int, query: str, n: int, skip: int, *,
                       tags: list[str] | None = None, roles: list[str] | None = None,
                       start: float | None = None,
                       end: float | None = None) -> list[tuple[int, float]]:
        """(item pk, similarity) of the nearest allowed vectors, ranks skip..skip+n."""
        if self.pgvector:
            state = await self.store.vector_state(kind, agent_pk)
            if state.rows == 0:
                return []
            vector = await self._query_vector(query)
            if vector is None:
                return []
            codes = [ROLE_CODES[r] for r in roles or () if r in ROLE_CODES]
            if roles and not codes:
                return []
            try:
                found = await self.store.pgvector_top(
                    kind, agent_pk, self.index.model, vector, skip + n, roles=codes or None,
                    start=start, end=end, tags=tags)
                return found[skip:]
            except Exception as exc:  # noqa: BLE001 - the in-process path still works
                log.warning("pgvector search failed (%s); scoring in-process from now on",
                            type(exc).__name__)
                self.pgvector = False
        vectors = await self.index.get(kind, agent_pk)
        if vectors is None or vectors.count == 0:
            return []
        mask = (vectors.tag_mask(tags) if kind == PASSAGE
                else vectors.message_mask(roles, start, end))
        if mask is not None and not mask.any():
            return []
        vector = await self._query_vector(query)
        if vector is None:
            return []
        return vectors.top(vector, n, mask, skip=skip)

    async def _passage_vectors(self, agent_pk: int, query: str, tags: list[str] | None,
                               n: int) -> list[Passage]:
        nearest = await self._nearest(PASSAGE, agent_pk, query, n, 0, tags=tags)
        similarity = dict(nearest)
        found = await self.store.passages_by_pks(agent_pk, [pk for pk, _ in nearest])
        return [p.rescored(similarity[p.pk]) for p in found]

    async def _message_vectors(self, agent_pk: int, query: str, roles: list[str] | None,
                               start: float | None, end: float | None,
                               n: int) -> list[MessageHit]:
        """Vector hits among searchable messages: candidates that turn out hidden or
        superseded are replaced by reading further down the ranking."""
        hits: list[MessageHit] = []
        skip, batch = 0, n
        for _ in range(MESSAGE_ROUNDS):
            nearest = await self._nearest(MESSAGE, agent_pk, query, batch, skip, roles=roles,
                                          start=start, end=end)
            similarity = dict(nearest)
            found = await self.store.message_hits_by_pks(agent_pk, [pk for pk, _ in nearest])
            hits += [hit.rescored(similarity[pk]) for pk, hit in found]
            if len(hits) >= n or len(nearest) < batch:
                break
            skip, batch = skip + batch, batch * 2
        return hits[:n]
