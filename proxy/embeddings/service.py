"""`EmbeddingService`: what the rest of memproxy sees of embeddings.

- `search`: the `SearchService` every search goes through (memory tools, automatic recall, the
  REST API): the store's full-text search while embeddings are off, `HybridSearch` once started
  with `[embeddings] enabled = true`;
- `notify(agent_pk)`: new passages or messages were stored; embed them soon;
- `start()` / `aclose()`: from the app's lifespan (the background task, the HTTP client).

Created with the settings and never failing: with embeddings off, or a store without vector
support, it stays a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import Settings
from ..store.vector_base import CONTEXT_CHARS
from .client import EmbeddingClient
from .hybrid import HybridSearch
from .index import VectorIndex
from .search import SearchService
from .worker import EmbeddingWorker

log = logging.getLogger(__name__)

_VECTOR_METHODS = ("pending_texts", "put_vectors", "vector_state", "load_vectors",
                   "passages_by_pks", "message_hits_by_pks")


def model_key(model: str, dimensions: int | None, document_prefix: str = "",
              document_input_type: str | None = None, context_turns: int = 0) -> str:
    """What stored vectors are tagged with: the model, the dimensions when requested, and how
    documents were made (prefix, input_type, earlier turns embedded with a message) when they
    differ from the plain text, so changing any of them re-embeds in the background instead
    of mixing incomparable vectors. Plain documents keep the plain key, so vectors stored
    before these settings existed stay valid."""
    key = model if dimensions is None else f"{model}@{dimensions}"
    if document_prefix or document_input_type or context_turns:
        recipe: list[object] = [document_prefix, document_input_type]
        if context_turns:  # a third element only when set: older marked keys stay the same
            recipe.append({"context_turns": context_turns, "chars": CONTEXT_CHARS})
        marks = json.dumps(recipe).encode()
        key += "#doc-" + hashlib.sha256(marks).hexdigest()[:12]
    return key


class EmbeddingService:
    def __init__(self, settings: Settings, store: Any, metrics: Any | None = None) -> None:
        self.config = settings.embeddings
        self.upstream = settings.upstream
        self.store = store
        self.metrics = metrics
        self.model = model_key(self.config.model, self.config.dimensions,
                               self.config.document_prefix, self.config.document_input_type,
                               self.config.document_context_turns)
        self.search = SearchService(store)
        self.client: EmbeddingClient | None = None
        self.index: VectorIndex | None = None
        self.worker: EmbeddingWorker | None = None

    @property
    def active(self) -> bool:
        return self.worker is not None

    async def start(self) -> None:
        """Start background embedding and switch `search` to hybrid (if enabled)."""
        if not self.config.enabled or self.worker is not None:
            return
        missing = [m for m in _VECTOR_METHODS if not hasattr(self.store, m)]
        if missing:
            log.warning("embeddings are enabled but this store cannot hold vectors; "
                        "search stays full-text")
            return
        pgvector = False
        if hasattr(self.store, "detect_pgvector"):
            try:
                pgvector = bool(await self.store.detect_pgvector())
            except Exception as exc:  # noqa: BLE001 - in-process scoring works everywhere
                log.warning("could not check for pgvector (%s)", type(exc).__name__)
        self.client = EmbeddingClient(
            self.config.base_url or self.upstream.base_url,
            self.config.api_key or self.upstream.api_key,
            self.config.model, dimensions=self.config.dimensions,
            timeout_s=self.config.timeout_s)
        self.index = VectorIndex(self.store, self.model, self.config.cache_mb * 1024 * 1024)
        self.search = SearchService(self.store, HybridSearch(
            self.store, self.index, self._embed_query, timeout_s=self.config.query_timeout_s,
            metrics=self.metrics, pgvector=pgvector))
        self.worker = EmbeddingWorker(self.store, self._embed_texts, self.model,
                                      batch_size=self.config.batch_size,
                                      max_queue=self.config.max_queue, metrics=self.metrics,
                                      context_turns=self.config.document_context_turns)
        self.worker.start()
        log.info("hybrid search on: model %s%s", self.model,
                 ", pgvector" if pgvector else ", vectors scored in-process")

    async def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Documents (passages, messages), marked as the model wants documents marked."""
        assert self.client is not None
        prefix = self.config.document_prefix
        return await self.client.embed([prefix + t for t in texts] if prefix else texts,
                                       input_type=self.config.document_input_type)

    async def _embed_query(self, query: str) -> np.ndarray:
        """A search query, marked as the model wants queries marked."""
        assert self.client is not None
        return (await self.client.embed([self.config.query_prefix + query],
                                        timeout_s=self.config.query_timeout_s,
                                        input_type=self.config.query_input_type))[0]

    def notify(self, agent_pk: int | None = None) -> None:
        """Rows were written for `agent_pk`: wake the background embedding (no-op when off)."""
        if self.worker is not None:
            self.worker.notify(agent_pk)

    async def aclose(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.aclose()
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()
        self.search = SearchService(self.store)
