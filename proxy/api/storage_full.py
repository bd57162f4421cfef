"""A full disk is the operator's problem, not a bug: a clear 507, and readiness says so.

A write that fails because the database's storage is full (SQLite's `SQLITE_FULL` — ENOSPC
on the file or `max_page_count` reached —, Postgres's `disk_full` 53100, or an `OSError` with
ENOSPC/EDQUOT anywhere in the exception's chain) is answered 507 `insufficient_storage` in the
OpenAI error shape instead of a generic 500 with a traceback. Nothing of the request was
stored: each store write is one transaction, and a turn whose writes fail is not acknowledged.

`StorageHealth` remembers the last such failure for `/health/readiness`, so an orchestrator
stops routing traffic here while the disk is full, and starts again without a restart:

- on SQLite readiness also looks at the free space of the database's file system, so it is
  "not ready" while fewer than `MIN_FREE_BYTES` are free and "ready" again once space returns;
- on Postgres (whose disk memproxy cannot see) it stays "not ready" for `RECHECK_S` after the
  last failure; traffic then resumes, and a write that still fails starts the wait again.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time

from ..errors import InternalError, MemproxyError, ProxyError

log = logging.getLogger("memproxy")

SQLITE_FULL = 13
POSTGRES_DISK_FULL = "53100"
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
MIN_FREE_BYTES = 256 * 1024
RECHECK_S = 15.0


def is_storage_full(exc: BaseException) -> bool:
    """Whether `exc`, or anything in its cause/context chain, says the storage is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error) and (
                getattr(current, "sqlite_errorcode", None) == SQLITE_FULL
                or "database or disk is full" in str(current)):
            return True
        if getattr(current, "sqlstate", None) == POSTGRES_DISK_FULL:  # asyncpg.DiskFullError
            return True
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def storage_full_error() -> ProxyError:
    return ProxyError(507, "memproxy's storage is full: nothing of this request was stored;"
                      " retry once space has been freed", type="server_error",
                      code="insufficient_storage")


def stream_failure_body(exc: BaseException, stream: str) -> dict:
    """The error event of a `stream` that failed after its headers went out: a full storage
    as 507's body, logged without a traceback; anything else logged with one, as a bare
    500's body (the client already has a 200 and can only read the event)."""
    if is_storage_full(exc):
        log.error("%s failed: the database's storage is full", stream)
        return storage_full_error().body
    log.exception("%s failed", stream)
    return InternalError().body


class StorageHealth:
    """The last storage-full failure, and what readiness makes of it (see module doc)."""

    def __init__(self, sqlite_file: str | None = None) -> None:
        self.sqlite_dir = os.path.dirname(os.path.abspath(sqlite_file)) if sqlite_file else None
        self.full_at: float | None = None

    def error_for(self, exc: BaseException) -> MemproxyError:
        """The answer to an unexpected exception: 507 when the storage is full (remembered
        for readiness, logged once without a traceback), else the bare 500."""
        if not is_storage_full(exc):
            return InternalError()
        if self.full_at is None:
            log.error("the database's storage is full: writes fail with 507 until space is"
                      " freed (%s)", type(exc).__name__)
        self.full_at = time.monotonic()
        return storage_full_error()

    def check(self) -> str:
        """`ok`, or `error: storage full` for the readiness checks."""
        if self.sqlite_dir is not None:
            try:
                stats = os.statvfs(self.sqlite_dir)
            except OSError:
                return "ok" if self.full_at is None else "error: storage full"
            if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
                return "error: storage full"
            self.full_at = None
            return "ok"
        if self.full_at is not None and time.monotonic() - self.full_at < RECHECK_S:
            return "error: storage full"
        self.full_at = None
        return "ok"
