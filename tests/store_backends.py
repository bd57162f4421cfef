"""Store backends for the contract tests: one fixture, parametrized over SQLite and Postgres.

- `store_backend`: a `Backend` with a fresh, empty database for this test — a file in
  `tmp_path` (SQLite) or a new database `memproxy_test_<time>_<pid>_<random>` created on the
  server of `MEMPROXY_TEST_POSTGRES_URL` (default `postgresql://postgres@127.0.0.1:5432/test`)
  and dropped at teardown, so tests are isolated and can run in parallel.
- `postgres_url`: the same fresh Postgres database alone, for Postgres-specific tests.

If no Postgres server is usable (none reachable, no right to create a database, or asyncpg
missing) the Postgres variants are SKIPPED with a reason saying how to run them (README.md,
"Tests"; docs/testing.md), so `python -m pytest` passes in a fresh clone with nothing beside
it. CI sets `MEMPROXY_REQUIRE_POSTGRES=1` (.ci/run): then the same problem FAILS those tests,
so a broken server cannot pass as a skip. `MEMPROXY_TEST_POSTGRES=skip` skips them without
trying the server (and fails them when Postgres is required).

Use: in a test module, `store_backend = store_backends.store_backend` (a module attribute
registers the fixture), then `def test_x(store_backend: Backend): store_backend.run(body)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from proxy.core.types import Block, NewMessage, TurnResult
from proxy.store import open_store

POSTGRES_URL_ENV = "MEMPROXY_TEST_POSTGRES_URL"
POSTGRES_MODE_ENV = "MEMPROXY_TEST_POSTGRES"
REQUIRE_POSTGRES_ENV = "MEMPROXY_REQUIRE_POSTGRES"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DATABASE_PREFIX = "memproxy_test_"
STALE_AFTER_S = 6 * 3600  # databases left behind by killed runs are dropped after this

BACKENDS = ("sqlite", "postgres")


def run_with_store(store: Any, body: Callable[[Any], Awaitable[Any]]) -> Any:
    """Open `store`, `await body(store)` in a fresh event loop, close the store."""
    async def main() -> Any:
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())
async def waiting_on_a_lock(store: Any, what: str = "a lock") -> None:
    """Until some backend of `store`'s Postgres database waits for a lock: a statement
    started in a task is blocked by another connection's open transaction (a race made
    deterministic: the other transaction commits only once this returns)."""
    for _ in range(500):
        if await store.pool.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE NOT l.granted AND a.datname = current_database()"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the statement never waited for {what}")


DEFAULT_BLOCKS = [Block("persona", "I am a helpful assistant."), Block("human", "")]


def user(text: str, **kw: Any) -> NewMessage:
    return NewMessage({"role": "user", "content": text}, **kw)


def assistant(text: str, **kw: Any) -> NewMessage:
    return NewMessage({"role": "assistant", "content": text}, **kw)


def result(*messages: NewMessage, blocks=(), passages=(), response=None) -> TurnResult:
    return TurnResult(list(messages), list(blocks), list(passages), response or {"id": "r"})


async def setup(store: Any, agent_id: str = "alice", conversation_id: str = "default"):
    """An agent `agent_id` of tenant t1 with the default blocks, and one conversation."""
    agent = await store.ensure_agent("t1", agent_id, DEFAULT_BLOCKS)
    conv = await store.ensure_conversation(agent.pk, conversation_id)
    return agent, conv


@dataclass
class Backend:
    """A store backend with a fresh database: open stores on it and run raw SQL."""

    name: str
    url: str
    integrity_error: type[BaseException]
    """What a UNIQUE violation raises (e.g. a duplicate turn id)."""

    def store(self) -> Any:
        """A new, unopened store on this database."""
        return open_store(self.url)

    def run(self, body: Callable[[Any], Awaitable[Any]]) -> Any:
        """Open a store, `await body(store)` in a fresh event loop, close the store."""
        return run_with_store(self.store(), body)

    async def sql(self, store: Any, sql: str, *params: Any) -> list[tuple]:
        """Run one statement with `?` placeholders (in its own transaction); return the rows."""
        if self.name == "sqlite":
            return await store._write(lambda db: db.execute(sql, params).fetchall())
        counter = iter(range(1, 10_000))
        pg_sql = re.sub(r"\?", lambda _: f"${next(counter)}", sql)
        return [tuple(r) for r in await store.pool.fetch(pg_sql, *params)]


def _postgres_mode_skip() -> bool:
    return os.environ.get(POSTGRES_MODE_ENV, "").strip().lower() == "skip"


def postgres_required() -> bool:
    """True when a missing Postgres must fail the tests instead of skipping them (CI)."""
    return os.environ.get(REQUIRE_POSTGRES_ENV, "").strip().lower() in {"1", "true", "yes"}


def postgres_unavailable(reason: str) -> None:
    """Skip the calling test with `reason` and how to run it, or fail it when required."""
    how = (f"To run the Postgres variants, start a server where the test user may CREATE "
           f"DATABASE (`bash .ci/postgres` starts the local one) or point {POSTGRES_URL_ENV} "
           "at one; see README.md, section Tests, and docs/testing.md.")
    if postgres_required():
        pytest.fail(f"{reason}. {how} ({REQUIRE_POSTGRES_ENV} is set, so these tests may not "
                    "be skipped.)", pytrace=False)
    pytest.skip(f"no Postgres: {reason}. {how}")


def postgres_server_url() -> str:
    return os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def _admin(url: str, statements: list[str], drop_stale: bool = False) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        if drop_stale:
            rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                    DATABASE_PREFIX + "%")
            for row in rows:
                match = re.match(rf"{DATABASE_PREFIX}(\d+)_", row[0])
                if match and int(match.group(1)) < time.time() - STALE_AFTER_S:
                    with contextlib.suppress(asyncpg.PostgresError):
                        await conn.execute(f'DROP DATABASE IF EXISTS "{row[0]}" WITH (FORCE)')
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


_stale_checked = False
_unusable: str | None = None
"""Why the server could not be used, once found: later tests skip without trying again (a
server that times out would otherwise cost every Postgres test its connect timeout). When
Postgres is required every test tries again, as each must fail on its own evidence."""


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh database on the test server; yield its URL; drop it afterwards. Without
    a usable server, skip the calling test (fail it when Postgres is required)."""
    global _stale_checked, _unusable
    if _postgres_mode_skip():
        postgres_unavailable(f"{POSTGRES_MODE_ENV}=skip skips the Postgres variants explicitly")
    server = postgres_server_url()
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        postgres_unavailable("asyncpg is not installed (pip install -e '.[test]')")
    if _unusable is not None and not postgres_required():
        postgres_unavailable(_unusable)
    name = f"{DATABASE_PREFIX}{int(time.time())}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        asyncio.run(_admin(server, [f'CREATE DATABASE "{name}"'], drop_stale=not _stale_checked))
    except Exception as exc:  # any failure here means "no usable server"
        _unusable = f"Postgres is not usable at {_redacted(server)}: {type(exc).__name__}: {exc}"
        postgres_unavailable(_unusable)
    _stale_checked = True
    try:
        yield _with_database(server, name)
    finally:
        asyncio.run(_admin(server, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh Postgres database for this test (dropped afterwards)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A `Backend` with a fresh database, once per backend (test ids `[sqlite]`,
    `[postgres]`)."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path}/memproxy.db", sqlite3.IntegrityError)
        return
    with postgres_database() as url:
        import asyncpg

        yield Backend("postgres", url, asyncpg.UniqueViolationError)
