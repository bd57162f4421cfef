"""In-process vector scoring: one float32 matrix per agent and kind, kept current cheaply.

Exact cosine scoring of 100k normalized vectors is one matrix-vector product (a few
milliseconds with numpy's BLAS), so no approximate index is needed at the sizes one agent
reaches; loading the matrix from the database is what costs, so it is cached.

Freshness without a scan: before each use, one primary-key read of `vector_state` (counters
kept by triggers in the database, so writes and deletes by any process count) is compared with
the counters the cached matrix was built from:
- equal → the matrix is current;
- only additions since → read just the vector rows with a higher id and append them (a turn
  adds two messages: the next search reads two rows, not 100k);
- any deletion (a passage deleted, a conversation removed, a re-embedding) → reload.
An append that does not account for every row the counters report (another process committed
an older id late) also falls back to a reload. Matrices are evicted least recently used first
once their total size passes `[embeddings] cache_mb`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ..store.vector_base import MESSAGE, PASSAGE, ROLE_CODES, VectorRows, VectorState, VectorStore

log = logging.getLogger(__name__)

_INITIAL_CAPACITY = 256


class AgentVectors:
    """One agent's vectors of one kind (rows of the current model only) with their filters:
    role and time for messages, tags for passages. Grows by doubling, like a list."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.state = VectorState()
        self.scanned = 0  # vector rows read so far, of any model (compared with state.rows)
        self.max_id = 0
        self.dim: int | None = None
        self.count = 0
        self._matrix = np.empty((0, 0), dtype=np.float32)
        self._pks = np.empty(0, dtype=np.int64)
        self._roles = np.empty(0, dtype=np.int8)
        self._created = np.empty(0, dtype=np.float64)
        self._tag_rows: dict[str, list[int]] = {}

    @property
    def nbytes(self) -> int:
        return self._matrix.nbytes + self._pks.nbytes + self._roles.nbytes + self._created.nbytes

    def _reserve(self, extra: int) -> None:
        need = self.count + extra
        if need <= self._pks.shape[0]:
            return
        capacity = max(_INITIAL_CAPACITY, self._pks.shape[0] * 2, need)
        matrix = np.empty((capacity, self.dim or 0), dtype=np.float32)
        if self.count:
            matrix[: self.count] = self._matrix[: self.count]
        self._matrix = matrix
        for name, dtype in (("_pks", np.int64), ("_roles", np.int8), ("_created", np.float64)):
            grown = np.empty(capacity, dtype=dtype)
            grown[: self.count] = getattr(self, name)[: self.count]
            setattr(self, name, grown)

    def extend(self, rows: VectorRows) -> None:
        """Append the rows read after `max_id` (rows of another dimension are skipped)."""
        self.scanned += rows.scanned
        self.max_id = max(self.max_id, rows.max_id)
        self.state = rows.state
        if not rows.blobs:
            return
        if self.dim is None:
            self.dim = len(rows.blobs[0]) // 4
        width = self.dim * 4
        keep = [i for i, blob in enumerate(rows.blobs) if len(blob) == width]
        if len(keep) != len(rows.blobs):
            log.warning("%d %s vectors of another dimension were skipped",
                        len(rows.blobs) - len(keep), self.kind)
        if not keep:
            return
        n = len(keep)
        every = n == len(rows.blobs)
        matrix = np.frombuffer(b"".join(rows.blobs if every else [rows.blobs[i] for i in keep]),
                               dtype="<f4").reshape(n, self.dim)
        start, end = self.count, self.count + n
        if start == 0:  # a full load adopts the joined buffer (read-only: growing copies it)
            self._matrix = matrix
            self._pks = np.empty(n, dtype=np.int64)
            self._roles = np.empty(n, dtype=np.int8)
            self._created = np.empty(n, dtype=np.float64)
        else:
            self._reserve(n)
            self._matrix[start:end] = matrix
        self._pks[start:end] = rows.pks if every else [rows.pks[i] for i in keep]
        if self.kind == MESSAGE:
            self._roles[start:end] = rows.roles if every else [rows.roles[i] for i in keep]
            self._created[start:end] = rows.created if every else [rows.created[i] for i in keep]
        else:
            for offset, i in enumerate(keep):
                for tag in rows.tags[i]:
                    self._tag_rows.setdefault(tag, []).append(start + offset)
        self.count = end

    def message_mask(self, roles: Sequence[str] | None, start: float | None,
                     end: float | None) -> np.ndarray | None:
        """Rows allowed by a conversation_search's roles and dates (None: all)."""
        mask: np.ndarray | None = None
        if roles:
            codes = [ROLE_CODES[r] for r in roles if r in ROLE_CODES]
            mask = np.isin(self._roles[: self.count], codes)
        created = self._created[: self.count]
        if start is not None:
            mask = (created >= start) if mask is None else mask & (created >= start)
        if end is not None:
            mask = (created <= end) if mask is None else mask & (created <= end)
        return mask

    def tag_mask(self, tags: Sequence[str] | None) -> np.ndarray | None:
        """Rows of passages having ALL of `tags` (None: all)."""
        if not tags:
            return None
        mask = np.zeros(self.count, dtype=bool)
        sets = [self._tag_rows.get(tag) for tag in set(tags)]
        if any(s is None for s in sets):
            return mask
        rows = sets[0]
        common = np.asarray(rows, dtype=np.int64)
        for other in sets[1:]:
            common = np.intersect1d(common, np.asarray(other, dtype=np.int64))
        mask[common] = True
        return mask

    def top(self, query: np.ndarray, n: int, mask: np.ndarray | None = None,
            skip: int = 0) -> list[tuple[int, float]]:
        """(item pk, cosine similarity) of the best rows `skip`..`skip + n`, best first."""
        if self.count == 0 or n <= 0 or self.dim is None or query.shape[0] != self.dim:
            return []
        # einsum, not `@`: a multi-threaded BLAS wakes its threads for every product, which
        # between sporadic searches costs more (~10 ms on a busy machine) than the product.
        scores = np.einsum("ij,j->i", self._matrix[: self.count],
                           query.astype(np.float32, copy=False))
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
            available = int(mask.sum())
        else:
            available = self.count
        want = min(skip + n, available)
        if want <= skip:
            return []
        if want < self.count:
            best = np.argpartition(-scores, want - 1)[:want]
        else:
            best = np.arange(self.count)
        best = best[np.argsort(-scores[best], kind="stable")][skip:want]
        return [(int(self._pks[i]), float(scores[i])) for i in best]


class VectorIndex:
    """Per-agent `AgentVectors`, loaded on demand from a `VectorStore` and kept fresh."""

    def __init__(self, store: VectorStore, model: str, max_bytes: int) -> None:
        self.store = store
        self.model = model
        self.max_bytes = max_bytes
        self._cache: OrderedDict[tuple[str, int], AgentVectors] = OrderedDict()
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.loads = 0  # full loads, for tests and the benchmark
        self.appends = 0

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._cache.values())

    async def get(self, kind: str, agent_pk: int) -> AgentVectors | None:
        """The agent's current vectors of `kind`, or None when it has none at all."""
        if kind not in (PASSAGE, MESSAGE):
            raise ValueError(f"unknown vector kind {kind!r}")
        key = (kind, agent_pk)
        state = await self.store.vector_state(kind, agent_pk)
        if state.rows == 0:
            self._cache.pop(key, None)
            return None
        cached = self._cache.get(key)
        if cached is not None and cached.state == state:
            self._cache.move_to_end(key)
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(key)
            if cached is not None and cached.state == state:
                return cached
            vectors = await self._refresh(kind, agent_pk, cached)
        self._locks.pop(key, None)
        self._remember(key, vectors)
        return vectors

    async def _refresh(self, kind: str, agent_pk: int,
                       cached: AgentVectors | None) -> AgentVectors:
        if cached is not None:
            rows = await self.store.load_vectors(kind, agent_pk, self.model, cached.max_id)
            if rows.state.removals == cached.state.removals:
                cached.extend(rows)
                if cached.scanned == rows.state.rows:
                    self.appends += 1
                    return cached
        rows = await self.store.load_vectors(kind, agent_pk, self.model, 0)
        vectors = AgentVectors(kind)
        vectors.extend(rows)
        self.loads += 1
        return vectors

    def _remember(self, key: tuple[str, int], vectors: AgentVectors) -> None:
        self._cache[key] = vectors
        self._cache.move_to_end(key)
        total = self.nbytes
        while total > self.max_bytes and len(self._cache) > 1:
            old_key, old = next(iter(self._cache.items()))
            if old_key == key:
                break
            del self._cache[old_key]
            total -= old.nbytes

    def forget(self, agent_pk: int | None = None) -> None:
        """Drop cached matrices (of one agent, or all)."""
        for key in [k for k in self._cache if agent_pk is None or k[1] == agent_pk]:
            del self._cache[key]
