"""Embeddings and hybrid search (docs/search.md).

- `client`: `EmbeddingClient` for an OpenAI-compatible `POST /embeddings`;
- `worker`: `EmbeddingWorker`, the background task that embeds new and old rows;
- `index`: `VectorIndex`, per-agent float32 matrices scored in-process with numpy;
- `hybrid`: `HybridSearch`, the `SearchBackend` fusing full-text and vector hits;
- `search`: `SearchService`, the one ranking every search uses (tools, recall, REST);
- `service`: `EmbeddingService`, which wires them from `[embeddings]`.
"""

from .client import EmbeddingClient, EmbeddingError
from .hybrid import HybridSearch
from .index import AgentVectors, VectorIndex
from .search import SearchService
from .service import EmbeddingService, model_key
from .worker import EmbeddingWorker

__all__ = [
    "AgentVectors",
    "EmbeddingClient",
    "EmbeddingError",
    "EmbeddingService",
    "EmbeddingWorker",
    "HybridSearch",
    "SearchService",
    "VectorIndex",
    "model_key",
]
