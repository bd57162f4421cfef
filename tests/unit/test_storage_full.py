"""Which failures mean "the storage is full" (api/storage_full.py): real exceptions of the
drivers, raised by real operations where that is possible here."""

from __future__ import annotations

import errno
import sqlite3

import asyncpg
import pytest

from proxy.api.storage_full import StorageHealth, is_storage_full
from proxy.errors import InternalError


def sqlite_full_error(tmp_path) -> sqlite3.Error:
    """SQLite's own SQLITE_FULL: a database capped by `max_page_count` that must grow."""
    db = sqlite3.connect(tmp_path / "capped.db")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.Error) as caught:
        db.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    db.close()
    return caught.value


def test_the_drivers_full_errors_are_recognised_anywhere_in_the_chain(tmp_path):
    full = sqlite_full_error(tmp_path)
    assert full.sqlite_errorcode == sqlite3.SQLITE_FULL
    assert is_storage_full(full)
    assert is_storage_full(asyncpg.exceptions.DiskFullError("could not extend file"))
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("the write failed") from inner
    except RuntimeError as outer:
        assert is_storage_full(outer)


def test_other_failures_are_not_a_full_disk(tmp_path):
    assert not is_storage_full(sqlite3.OperationalError("database is locked"))
    assert not is_storage_full(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not is_storage_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_storage_full(ValueError("x"))


def test_the_answer_is_a_507_and_readiness_follows_the_free_space(tmp_path):
    health = StorageHealth(str(tmp_path / "memproxy.db"))
    assert isinstance(health.error_for(ValueError("a bug")), InternalError)
    error = health.error_for(sqlite_full_error(tmp_path))
    assert error.status == 507 and error.code == "insufficient_storage"
    assert error.body["error"]["type"] == "server_error"
    # tmp_path has room: readiness is ready again at once (the disk-full e2e test fills one)
    assert health.check() == "ok" and health.full_at is None


def test_without_a_visible_disk_readiness_waits_after_a_failure():
    health = StorageHealth()  # Postgres: no file system to look at
    assert health.check() == "ok"
    health.error_for(asyncpg.exceptions.DiskFullError("could not extend file"))
    assert health.check() == "error: storage full"
