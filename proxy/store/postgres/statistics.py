"""Planner statistics for the tables a turn reads: ANALYZE when they are missing or stale.

Why. Without statistics Postgres guesses: a table never analyzed (or vacuumed) is assumed to
fill at least 10 pages, so the one-row `conversation_epoch` counts as ~2,000 rows, and the
lateral subqueries of `load_turn_state` it is joined with are costed ~2,000 times over. The
plan's cost then passes `jit_above_cost` and every turn JIT-compiled its query: 20-350 ms of
compiling for a query that runs in 0.2 ms (issue 19). Autovacuum does not save us: it is off
on some servers and after bulk loads, and even when on it analyzes a table only after
50 + 10% of its rows changed, which the one-row epoch table never reaches. The pool turns JIT
off (store.py), so a bad guess no longer costs milliseconds, but plans still rest on these
estimates; so the store keeps its own tables analyzed:

- at open, synchronously, before the store serves anything: every table after a migration
  ran, plus the tables the tree backfill rewrote, plus any table that has no statistics or
  has changed by more than autovacuum's threshold since it was last analyzed (one catalog
  query decides). Only one of several processes opening at once does it (a try-lock);
- after large loads, in the background: the store counts the rows it writes per table — in
  bulk (imports, archival passages) and by turns (their messages, turns, passages, block
  revisions), so that a database that only ever grows by chatting, with autovacuum off, is
  analyzed too — and when a table has grown past the same threshold (50 rows + 10% of what it
  held when last analyzed: a number of ANALYZEs logarithmic in the table's size), one
  background task analyzes it. A turn never
  waits for it: ANALYZE takes a lock that conflicts only with DDL, VACUUM and other ANALYZEs,
  and it reads a fixed-size sample (300 x default_statistics_target rows), so its cost does
  not grow with the table; the turns that run before it lands plan without the new
  statistics, which with JIT off costs fractions of a millisecond.

Failures are logged and ignored (e.g. a role that does not own the tables gets a warning from
ANALYZE and no statistics): statistics make plans better, never make a call fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable

import asyncpg

log = logging.getLogger(__name__)

# The tables a turn reads or writes (api key, agent, conversation, tree lookups, lease, turn
# state, the turn's writes, memory search, the Responses API's chains and conversation items);
# the others (settings, migrations, backfill list, model stats) are read by primary key or not
# at all while serving.
TABLES = ("agents", "api_keys", "blocks", "block_revisions", "conversations",
          "conversation_epoch", "leases", "messages", "message_terms", "message_terms_pending",
          "turns", "passages", "message_vectors",
          "passage_vectors", "vector_state", "responses", "api_conversations",
          "api_conversation_items", "response_items")
_TRACKED = frozenset(TABLES)
# autovacuum's defaults (autovacuum_analyze_threshold, autovacuum_analyze_scale_factor)
THRESHOLD_ROWS = 50
SCALE_FACTOR = 0.1
ANALYZE_LOCK_KEY = 0x6D656D7374617473  # b"memstats": held by whoever analyzes at open
CLOSE_WAIT_S = 30.0  # close() lets a running ANALYZE finish for this long, then cancels it

# Per table: its row estimate (-1: never analyzed) and whether it needs ANALYZE now: no
# statistics (PG >= 14: reltuples < 0; PG 13: no pages recorded and never analyzed), or more
# rows changed since its last ANALYZE than autovacuum's threshold.
_STATE = (
    "SELECT c.relname::text, c.reltuples::float8, c.reltuples < 0"
    " OR (c.relpages = 0 AND s.last_analyze IS NULL AND s.last_autoanalyze IS NULL)"
    f" OR coalesce(s.n_mod_since_analyze, 0) > {THRESHOLD_ROWS} + {SCALE_FACTOR}"
    " * greatest(c.reltuples, 0)"
    " FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid"
    " WHERE c.oid IN (SELECT to_regclass(t) FROM unnest($1::text[]) AS t)"
)


def _due(written: int, reltuples: float) -> bool:
    return written > THRESHOLD_ROWS + SCALE_FACTOR * max(reltuples, 0.0)


class Statistics:
    """Keeps the statistics of one store's tables fresh (see the module doc)."""

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None
        self._reltuples: dict[str, float] = {}
        self._written: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def open(self, conn: asyncpg.Connection, pool: asyncpg.Pool, *, migrated: bool,
                   rewritten: Iterable[str] = ()) -> list[str]:
        """Analyze at open what needs it (all tables if `migrated`, the `rewritten` ones, the
        stale ones); returns the tables analyzed (empty if another process is doing it)."""
        self._pool = pool
        try:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)",
                                           ANALYZE_LOCK_KEY):
                    await self._refresh(conn)
                    return []
                state = await conn.fetch(_STATE, list(TABLES))
                wanted = set(rewritten) | {r[0] for r in state if migrated or r[2]}
                tables = [t for t in TABLES if t in wanted and t in {r[0] for r in state}]
                if tables:
                    started = time.perf_counter()
                    await conn.execute(f"ANALYZE {', '.join(tables)}")
                    log.info("analyzed %s in %.0f ms", ", ".join(tables),
                             (time.perf_counter() - started) * 1000)
            await self._refresh(conn)
            return tables
        except asyncpg.PostgresError as exc:
            log.warning("could not analyze memproxy's tables at open: %s", exc)
            return []

    async def _refresh(self, conn: asyncpg.Connection) -> None:
        self._reltuples = {r[0]: r[1] for r in await conn.fetch(_STATE, list(TABLES))}

    def wrote(self, rows: dict[str, int]) -> None:
        """Count rows written (in bulk, and by every turn); start the background ANALYZE if a
        table is due. A few dictionary operations: turns call it on their way out."""
        due = False
        for table, n in rows.items():
            if n > 0 and table in _TRACKED:
                written = self._written[table] = self._written[table] + n
                due = due or _due(written, self._reltuples.get(table, -1.0))
        if due and self._pool is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _due_tables(self) -> list[str]:
        return [t for t in TABLES
                if self._written[t] and _due(self._written[t], self._reltuples.get(t, -1.0))]

    async def _run(self) -> None:
        """Analyze the due tables, again while writes made more of them due meanwhile."""
        while self._pool is not None and (tables := self._due_tables()):
            for table in tables:
                self._written.pop(table, None)
            try:
                async with self._pool.acquire() as conn:
                    started = time.perf_counter()
                    await conn.execute(f"ANALYZE {', '.join(tables)}")
                    log.info("analyzed %s after a bulk load in %.0f ms", ", ".join(tables),
                             (time.perf_counter() - started) * 1000)
                    await self._refresh(conn)
            except Exception as exc:  # a background task: log, never raise into anyone
                log.warning("background ANALYZE of %s failed: %s", ", ".join(tables), exc)
                return

    async def settle(self) -> None:
        """Wait for the background ANALYZE, if one is running (tests, benchmarks, close)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Let a running ANALYZE finish (it is bounded: a sample), cancel it after
        CLOSE_WAIT_S; a later open finds what it did not do."""
        self._pool = None  # the running task stops after its current ANALYZE
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, CLOSE_WAIT_S)
