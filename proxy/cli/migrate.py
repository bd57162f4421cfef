"""`memproxy migrate`: bring the configured database's schema up to date and say where it is.

The store applies pending migrations whenever it opens (`serve` does the same at start-up);
this command does only that, so an operator can migrate before rolling out new processes,
and reads `schema_migrations` before and after to report what was applied.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3

from ..config import ConfigError
from ..store import open_store, sqlite_path
from ..store.migrations import MIGRATIONS
from .common import CliError, add_database_options, settings_from_args


async def applied_versions(url: str) -> set[int]:
    """The versions recorded in `schema_migrations`; empty for a new database."""
    if url.startswith(("postgresql://", "postgres://")):
        import asyncpg

        from ..store.postgres.store import split_url

        conn = await asyncpg.connect(split_url(url)[0], timeout=30)
        try:
            if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
                return set()
            return {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        finally:
            await conn.close()
    path = sqlite_path(url)
    if not os.path.exists(path):
        return set()
    db = sqlite3.connect(path)
    try:
        found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                           "name = 'schema_migrations'").fetchone()
        if found is None:
            return set()
        return {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
    finally:
        db.close()


async def migrate(url: str) -> tuple[list[int], int]:
    """Apply pending migrations; return (the versions applied now, the schema version)."""
    before = await applied_versions(url)
    store = open_store(url)
    await store.open()
    await store.close()
    after = await applied_versions(url)
    return sorted(after - before), max(after, default=0)


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        raise CliError(str(exc), code=2) from exc
    try:
        applied, version = asyncio.run(migrate(settings.database.url))
    except Exception as exc:  # every failure here is the database's (URL, server, driver)
        raise CliError(f"cannot migrate the database: {exc or type(exc).__name__}") from exc
    names = {m.version: m.name for m in MIGRATIONS}
    if applied:
        done = ", ".join(f"{v} ({names.get(v, '?')})" for v in applied)
        print(f"applied migrations {done}")
    else:
        print("no pending migrations")
    print(f"schema version {version}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    migrate_ = sub.add_parser(
        "migrate", help="apply pending database migrations",
        description="Apply pending schema migrations to the configured database (--config, "
        "--database-url, $MEMPROXY_DATABASE_URL) and print the schema version.",
    )
    add_database_options(migrate_)
    migrate_.set_defaults(func=cmd_migrate)
