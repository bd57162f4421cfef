"""Numbered schema migrations, applied at start-up and recorded in `schema_migrations`.

Each `Migration` carries its statements per SQL dialect, so a backend looks up its own dialect
under the same version number: the Postgres store adds a `"postgres"` entry to every migration
(and must ship one for each version) while sharing this list, its numbering and its names.
Statements are kept separate (not one script) because trigger bodies contain semicolons and
because they must run inside one explicit transaction.

Postgres statements may contain the placeholder `{fts_config}`: `apply_postgres` replaces it
with the database's text-search configuration as a quoted literal (see v1_initial_schema.py).

Each migration's statements are in their own module (`v<version>_<name>.py`) that imports
nothing: a shipped migration must run the same statements forever, so it cannot depend on code
that goes on changing (the runtime modules keep their own copies of what they need).
Rules: never edit a migration that has shipped; append a new version instead.
tests/store/test_migrations_frozen.py pins the SQL of each.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import (
    v1_initial_schema,
    v2_conversation_heads,
    v3_block_revisions,
    v4_embedding_vectors,
    v5_constant_time_turn_state,
    v6_conversation_trees,
    v7_api_key_admin,
    v8_responses,
    v9_message_names_searchable,
    v10_summary_jobs,
    v11_forgetting,
    v12_lease_releases,
    v13_message_tsv_by_trigger,
    v14_context_leavers_counted,
    v15_message_terms_after_the_turn,
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: Mapping[str, Sequence[str]]
    """dialect ("sqlite", "postgres") -> statements, executed in order in one transaction."""

    def statements(self, dialect: str) -> Sequence[str]:
        try:
            return self.sql[dialect]
        except KeyError:
            raise RuntimeError(
                f"migration {self.version} ({self.name}) has no {dialect} statements"
            ) from None


MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema",
              {"sqlite": v1_initial_schema.SQLITE, "postgres": v1_initial_schema.POSTGRES}),
    Migration(2, "conversation heads",
              {"sqlite": v2_conversation_heads.SQLITE, "postgres": v2_conversation_heads.POSTGRES}),
    Migration(3, "block revisions",
              {"sqlite": v3_block_revisions.SQLITE, "postgres": v3_block_revisions.POSTGRES}),
    Migration(4, "embedding vectors",
              {"sqlite": v4_embedding_vectors.SQLITE, "postgres": v4_embedding_vectors.POSTGRES}),
    Migration(5, "turn state in constant time",
              {"sqlite": v5_constant_time_turn_state.SQLITE,
               "postgres": v5_constant_time_turn_state.POSTGRES}),
    Migration(6, "conversation trees",
              {"sqlite": v6_conversation_trees.SQLITE, "postgres": v6_conversation_trees.POSTGRES}),
    Migration(7, "api key admin flag",
              {"sqlite": v7_api_key_admin.SQLITE, "postgres": v7_api_key_admin.POSTGRES}),
    Migration(8, "responses and api conversations",
              {"sqlite": v8_responses.SQLITE, "postgres": v8_responses.POSTGRES}),
    Migration(9, "message names searchable",
              {"sqlite": v9_message_names_searchable.SQLITE,
               "postgres": v9_message_names_searchable.POSTGRES}),
    Migration(10, "background summary jobs",
              {"sqlite": v10_summary_jobs.SQLITE, "postgres": v10_summary_jobs.POSTGRES}),
    Migration(11, "forgetting",
              {"sqlite": v11_forgetting.SQLITE, "postgres": v11_forgetting.POSTGRES}),
    Migration(12, "lease releases counted",
              {"sqlite": v12_lease_releases.SQLITE, "postgres": v12_lease_releases.POSTGRES}),
    Migration(13, "message tsvector by trigger",
              {"sqlite": v13_message_tsv_by_trigger.SQLITE,
               "postgres": v13_message_tsv_by_trigger.POSTGRES}),
    Migration(14, "context leavers counted",
              {"sqlite": v14_context_leavers_counted.SQLITE,
               "postgres": v14_context_leavers_counted.POSTGRES}),
    Migration(15, "message terms after the turn",
              {"sqlite": v15_message_terms_after_the_turn.SQLITE,
               "postgres": v15_message_terms_after_the_turn.POSTGRES}),
]


_BOOKKEEPING_SQLITE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL)"""


def apply_sqlite(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the pending migrations in one IMMEDIATE transaction; return their versions.

    Runs on the writer connection (autocommit mode). Safe when several processes start at
    once: the write lock is taken before the applied versions are read.
    """
    db.execute(_BOOKKEEPING_SQLITE)
    db.execute("BEGIN IMMEDIATE")
    try:
        applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        done: list[int] = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in applied:
                continue
            for statement in migration.statements("sqlite"):
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
            done.append(migration.version)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return done


_BOOKKEEPING_POSTGRES = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at double precision NOT NULL)"""

MIGRATION_LOCK_KEY = 0x6D656D70726F7879  # b"memproxy": the advisory lock held while migrating

_CONFIG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def check_fts_config(name: str) -> str:
    """`name` if it is a plausible text-search configuration name (`english`, `public.x`)."""
    if not isinstance(name, str) or not _CONFIG_NAME.match(name):
        raise ValueError(f"invalid text search configuration name {name!r}")
    return name


async def apply_postgres(conn: Any, migrations: Sequence[Migration] = MIGRATIONS, *,
                         fts_config: str = "english") -> list[int]:
    """Apply the pending migrations on an asyncpg connection, in one transaction; return
    their versions.

    Safe when several processes start at once: a transaction-level advisory lock is taken
    before anything is read or created, so the others wait and then find nothing to do.
    `fts_config` fills `{fts_config}` for a new database; an existing one keeps the
    configuration recorded in its `store_settings` (its indexes were built with it).
    """
    done: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_BOOKKEEPING_POSTGRES)
        applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if await conn.fetchval("SELECT to_regclass('store_settings') IS NOT NULL"):
            stored = await conn.fetchval(
                "SELECT value FROM store_settings WHERE key = 'fts_config'")
            fts_config = stored or fts_config
        literal = "'" + check_fts_config(fts_config).replace("'", "''") + "'"
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in applied:
                continue
            for statement in migration.statements("postgres"):
                await conn.execute(statement.replace("{fts_config}", literal))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version, migration.name, time.time(),
            )
            done.append(migration.version)
    return done
