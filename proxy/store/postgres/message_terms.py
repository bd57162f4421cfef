"""Messages indexed for search after their turn (migration 15; docs/storage.md, "Search
vectors after the turn").

A turn's statements queue their new visible messages in `message_terms_pending` (the insert
statement trigger does, so every writer does); `TermsIndexer` moves them, in batches, to
`message_terms`, the table of vectors the GIN index covers. The answer never waits for a
vector: the queue insert costs the turn a short B-tree entry, where the vector and its GIN
entries cost it 0.1 ms (30 words) to 0.4 ms (300 words) per message.

Searches read both halves (`matching_vectors`): the indexed rows through the GIN index, and
the agent's queued rows with their vectors computed on the spot by `memproxy_message_vector`,
the function the indexer stores. A row queued again while it has a vector (its text was
forgotten, say) counts as queued only. So what a search finds, and its scores, do not depend
on how far the indexer has got; only its cost does, and the queue holds a few milliseconds
of turns.

A batch is one call of `memproxy_index_message_terms` (migration 15): it takes the rows from
the queue in one statement and computes the vectors in the next, whose snapshot is then later
than every change to those messages that committed before they were taken; a change still
running holds its queue row (the stale trigger locks it), so the indexer skips the row until
that change commits. The batch commits without waiting for the WAL flush: a crash of the
Postgres server can lose it only together with its removal from the queue, and the next pass
does it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

BATCH = 500  # queued messages indexed per transaction
# After a kick: gathers a burst's messages into one batch, and keeps the queue short, since
# every search computes the vectors of its agent's queued rows (with 0.1 s a client sending
# turns back to back kept ~60 rows queued, and batches of 0.1 s of turns raised the bench's
# p99 by 1-3 ms; 5 ms brought it back)
DELAY_S = 0.005
VACUUM_EVERY = 20_000  # queue rows removed between two VACUUMs of the queue (autovacuum may be off)
CLOSE_WAIT_S = 10.0

# One batch (migration 15's function): $1 rows at most; returns how many it took
INDEX_BATCH = "SELECT memproxy_index_message_terms($1)"


# A messages row `m` that is queued again (its stored vector, if any, is being replaced)
_QUEUED = ("EXISTS (SELECT FROM message_terms_pending pq WHERE pq.agent_pk = m.agent_pk"
           " AND pq.message_pk = m.pk)")


def _indexed(tsquery: str, where: str, columns: str) -> str:
    return (f"SELECT m.pk, t.tsv, {columns} FROM message_terms t"
            " JOIN messages m ON m.pk = t.message_pk"
            f" WHERE t.tsv @@ {tsquery} AND m.agent_pk = $1 AND {where} AND NOT {_QUEUED}")


def _queued(tsquery: str, where: str, columns: str) -> str:
    return (f"SELECT m.pk, v.tsv, {columns} FROM message_terms_pending p"
            " JOIN messages m ON m.pk = p.message_pk AND m.agent_pk = p.agent_pk"
            " CROSS JOIN LATERAL (SELECT memproxy_message_vector(m.agent_pk, m.text, m.data)"
            f" AS tsv) v WHERE p.agent_pk = $1 AND m.visible AND {where} AND v.tsv @@ {tsquery}")


def matching_vectors(tsquery: str, where: str, columns: str) -> str:
    """SELECT (pk, tsv, `columns`) of agent $1's messages (`m`, filtered by `where`) whose
    vector matches `tsquery` (which holds the agent's scope lexeme, so the GIN index does the
    agent's part): the indexed rows not queued again, then the queued ones, vectors computed.
    `columns` are more output columns over `m`."""
    return (f"{_indexed(tsquery, where, columns)}"
            f" UNION ALL {_queued(tsquery, where, columns)}")


# Automatic recall ranks the agent's newest `n` matches (search.py). Reading every match
# through the GIN index to keep the newest costs as many rows as the query's words are in: a
# query of common words matched all 10,000 rows of an agent, 12-28 ms. So the newest
# `WINDOW_PER_MATCH` x n vectors of the agent are read first, newest first from
# `message_terms_newest`, and tested; the GIN index is read for older matches only when the
# window held fewer than n (rare words: few matches). Same rows either way: every match
# older than the window is older than every match in it.
WINDOW_PER_MATCH = 8


def newest_ctes(keep: str, n: str, window: str) -> str:
    """CTEs `win`, agent $1's newest `window` stored vectors, and `win_hits` (pk, tsv, keep,
    at), the newest `n` of them matching `q.scoped` whose message is searchable and not
    queued again, read newest first until there are `n` (to put after `q`, with a comma)."""
    return ("win AS NOT MATERIALIZED (SELECT t.message_pk, t.tsv FROM message_terms t"
            f" WHERE t.agent_pk = $1 ORDER BY t.message_pk DESC LIMIT {window}),"
            f" win_hits AS MATERIALIZED (SELECT m.pk, win.tsv, {keep} AS keep,"
            " m.created_at AS at FROM win JOIN messages m ON m.pk = win.message_pk"
            " WHERE win.tsv @@ (SELECT scoped FROM q) AND m.visible AND NOT m.superseded"
            f" AND NOT {_QUEUED} ORDER BY win.message_pk DESC LIMIT {n}),")


def newest_matches(keep: str, n: str, window: str) -> str:
    """SELECT (pk, tsv, keep, at): agent $1's newest `n` searchable matches of `q.scoped`,
    after `newest_ctes`: the window's, older ones through the GIN index only if the window
    was full and held fewer than `n`, and the queued rows."""
    where = "m.visible AND NOT m.superseded"
    columns = f"{keep} AS keep, m.created_at AS at"
    older = (f"{_indexed('q.scoped', where, columns)}"
             f" AND (SELECT count(*) FROM win_hits) < {n}"
             f" AND (SELECT count(*) FROM win) = {window}"
             " AND t.message_pk < (SELECT min(message_pk) FROM win)")
    return (f"SELECT * FROM (SELECT pk, tsv, keep, at FROM win_hits UNION ALL {older}"
            f" UNION ALL {_queued('q.scoped', where, columns)}) u"
            f" ORDER BY u.pk + 0 DESC LIMIT {n}")


# A message's current vector (`m`: a messages row): computed if it is queued, else its stored one
CURRENT_VECTOR = (
    "CASE WHEN EXISTS (SELECT FROM message_terms_pending p WHERE p.agent_pk = m.agent_pk"
    " AND p.message_pk = m.pk) THEN memproxy_message_vector(m.agent_pk, m.text, m.data)"
    " ELSE (SELECT t.tsv FROM message_terms t WHERE t.message_pk = m.pk) END"
)


Connect = Callable[[], Awaitable[asyncpg.Connection]]


class TermsIndexer:
    """Indexes the queued messages in the background, a batch per call, whenever `kick` says
    rows were queued (and once at open, for rows a stopped process queued). The background
    batches run on a connection of their own, so they never take a pooled connection from a
    turn (which would then wait, or open and prepare another)."""

    def __init__(self, batch: int = BATCH, delay_s: float = DELAY_S,
                 wrote: Callable[[int], None] | None = None) -> None:
        self.batch, self.delay_s = batch, delay_s
        self._wrote = wrote  # told how many vectors each batch stored (for ANALYZE)
        self._pool: asyncpg.Pool | None = None
        self._connect: Connect | None = None
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._busy = False  # a batch is running (close lets it finish)
        self._since_vacuum = 0

    def start(self, pool: asyncpg.Pool, connect: Connect) -> None:
        """Serve `drain` from `pool`, the background batches from a connection `connect`
        opens when first needed."""
        self._pool, self._connect = pool, connect
        self.kick()

    def kick(self) -> None:
        """Rows were queued: index them soon. A dictionary lookup on a turn's way out."""
        if self._pool is None:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pool is not None:
            self._again = False
            await asyncio.sleep(self.delay_s)
            try:
                self._busy = True
                if self._conn is None or self._conn.is_closed():
                    assert self._connect is not None
                    self._conn = await self._connect()
                while self._pool is not None and await self.index_batch(self._conn) == self.batch:
                    pass
            except Exception as exc:  # a background task: log; the next kick tries again
                log.warning("indexing messages for search failed (searches still find them): %s",
                            exc)
                await self._disconnect()
                return
            finally:
                self._busy = False
            if not self._again:
                return

    async def index_batch(self, db: asyncpg.Pool | asyncpg.Connection) -> int:
        """Index up to `batch` queued rows (one call, its own transaction); returns how many
        it took."""
        taken = int(await db.fetchval(INDEX_BATCH, self.batch) or 0)
        if taken and self._wrote is not None:
            self._wrote(taken)
        self._since_vacuum += taken
        if self._since_vacuum >= VACUUM_EVERY:
            self._since_vacuum = 0
            try:  # the queue's dead rows, which nothing else may remove
                await db.execute("VACUUM message_terms_pending")
            except asyncpg.PostgresError as exc:
                log.warning("could not vacuum message_terms_pending: %s", exc)
        return taken

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=CLOSE_WAIT_S)

    async def drain(self) -> int:
        """Index everything queued now (after an import, and in tests); returns the count."""
        total = 0
        if self._pool is not None:
            while n := await self.index_batch(self._pool):
                total += n
        return total

    async def settle(self) -> None:
        """Wait for the background pass, if one is running."""
        while self._task is not None and not self._task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def close(self) -> None:
        """Let a running batch finish (bounded), else stop at once; the queue keeps the rest
        for the next open of any process."""
        self._pool = None
        task, self._task = self._task, None
        if task is not None and not task.done():
            if not self._busy:
                task.cancel()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, CLOSE_WAIT_S)
        await self._disconnect()
