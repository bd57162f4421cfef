"""Persistence: the `Store` protocol and `open_store(url)` to pick a backend by URL."""

from __future__ import annotations

import os

from .base import Store
from .sqlite.store import SQLiteStore

__all__ = ["Store", "open_store", "sqlite_path"]


def sqlite_path(url: str) -> str:
    """The file path in `sqlite:///relative.db`, `sqlite:////absolute.db` or a bare path."""
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:"):]
        if not rest.startswith("///"):
            raise ValueError(
                f"invalid SQLite URL {url!r}: use sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        path = rest[3:].split("?", 1)[0]
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unsupported database URL scheme {scheme!r} (use sqlite:/// or postgresql://)")
    else:
        path = url
    if not path:
        raise ValueError(f"database URL {url!r} has no file path")
    if path == ":memory:":
        raise ValueError("in-memory SQLite is not supported (the store opens two connections); "
                         "use a file path")
    return os.path.expanduser(path)


def open_store(url: str, *, sqlite_synchronous: str = "NORMAL",
               postgres_input_commit: str = "durable") -> Store:
    """A store for `url`, not yet opened: the caller awaits `store.open()`.

    `sqlite_synchronous` is `[database] sqlite_synchronous` ("NORMAL" or "FULL"), the SQLite
    store's `PRAGMA synchronous`; Postgres has its own durability settings and ignores it.
    `postgres_input_commit` is `[database] postgres_input_commit` ("durable" or "fast"),
    whether a turn's input waits for Postgres's WAL flush; SQLite ignores it."""
    if url.startswith(("postgresql://", "postgres://")):
        # Imported lazily: asyncpg is an optional dependency, needed only for Postgres.
        try:
            from .postgres.store import PostgresStore
        except ImportError as exc:
            raise ValueError(
                f"Postgres URLs need the asyncpg driver ({exc}): "
                "pip install 'memproxy[postgres]'"
            ) from exc
        # `?fts=simple` (or another text-search configuration) is read by PostgresStore and
        # removed from the URL handed to asyncpg; the default is english.
        return PostgresStore(url, input_commit=postgres_input_commit)
    return SQLiteStore(sqlite_path(url), synchronous=sqlite_synchronous)
