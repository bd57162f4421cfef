"""Embedding vectors in Postgres: the `PostgresVectors` store mixin (the tables are migration 4's).

The same tables as SQLite (see sqlite/vectors.py): float32 vectors as `bytea`, scored
in-process with numpy, counters in `vector_state` kept by statement-level triggers (one
UPDATE per statement, as for `agents.recall_count`).

pgvector is used when it is there: migration 4 runs `CREATE EXTENSION vector` if the server
offers the extension (a failure, e.g. for lack of privilege, is ignored) and then adds an
`embedding vector` column to both tables. At `open()` the store notices the extension (see
`detect_pgvector`); from then on every vector is also written to `embedding`, an HNSW index
per dimension is built the first time vectors of that dimension are stored, and searches ask
the index (`pgvector_top`, with pgvector >= 0.8's iterative scans so per-agent filters still
fill the result). Any pgvector failure falls back to the in-process path (logged).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...core.types import MessageHit, Passage
from ..vector_base import (
    CONTEXT_CHARS,
    EMBED_ROLES,
    MAX_EMBED_CHARS,
    MESSAGE,
    PASSAGE,
    ROLE_CODES,
    SCAN_ROWS,
    PendingPage,
    PendingText,
    VectorRows,
    VectorState,
    document_text,
    pack,
)

log = logging.getLogger(__name__)

_TABLE = {PASSAGE: "passage_vectors", MESSAGE: "message_vectors"}
_ITEM = {PASSAGE: "passage_pk", MESSAGE: "message_pk"}
PGVECTOR_MIN = (0, 8)  # iterative index scans: filtered HNSW searches return enough rows

_ROLES = "ARRAY[" + ", ".join(f"'{r}'" for r in EMBED_ROLES) + "]::text[]"
_ROLE_CASE = ("CASE m.role " + " ".join(f"WHEN '{r}' THEN {c}" for r, c in ROLE_CODES.items())
              + " END")
_PENDING = {
    PASSAGE: (
        f"SELECT p.pk, p.agent_pk, left(p.text, {MAX_EMBED_CHARS}) FROM passages p"
        " WHERE p.pk > $1 AND p.pk <= $2 AND p.text <> ''"
        " AND NOT EXISTS (SELECT 1 FROM passage_vectors v WHERE v.passage_pk = p.pk"
        " AND v.model = $3) ORDER BY p.pk LIMIT $4"
    ),
    MESSAGE: (
        f"SELECT m.pk, m.agent_pk, left(m.text, {MAX_EMBED_CHARS}) FROM messages m"
        " WHERE m.pk > $1 AND m.pk <= $2 AND m.visible AND NOT m.superseded"
        f" AND m.role = ANY({_ROLES}) AND m.text <> ''"
        " AND NOT EXISTS (SELECT 1 FROM message_vectors v WHERE v.message_pk = m.pk"
        " AND v.model = $3) ORDER BY m.pk LIMIT $4"
    ),
}
# With `context_turns` > 0, a message's earlier turns in its conversation (newest first: the
# last CONTEXT_CHARS of each); a turn as in search.py's neighbours query, read through the
# messages_visible index (conversation, seq).
_CONTEXT = (
    "ARRAY(SELECT right(p.text, {chars}) FROM messages p"
    " WHERE p.conversation_pk = m.conversation_pk AND p.seq < m.seq AND p.visible"
    " AND NOT p.superseded AND p.text <> '' AND (p.role = 'user' OR (p.role = 'assistant'"
    " AND p.data -> 'tool_calls' IS NULL)) ORDER BY p.seq DESC LIMIT {turns})"
)


def _pending_sql(kind: str, context_turns: int) -> str:
    if kind != MESSAGE or context_turns <= 0:
        return _PENDING[kind]
    context = _CONTEXT.format(chars=CONTEXT_CHARS, turns=int(context_turns))
    return _PENDING[MESSAGE].replace(" FROM messages m", f", {context} FROM messages m", 1)


_MAX_PK = {PASSAGE: "SELECT max(pk) FROM passages", MESSAGE: "SELECT max(pk) FROM messages"}


def insert_sql(kind: str, with_embedding: bool) -> str:
    """INSERT of vectors for $1 item pks, $4 dims, $5 blobs (and $6 pgvector texts): rows
    deleted meanwhile are skipped by the join, rows another process stored are kept."""
    extra_col, extra_val, extra_arg, extra_name = (
        (", embedding", ", u.embedding::vector", ", $6::text[]", ", embedding")
        if with_embedding else ("", "", "", ""))
    table, item = _TABLE[kind], _ITEM[kind]
    if kind == PASSAGE:
        columns, values, source = "", "", "JOIN passages m ON m.pk = u.pk"
    else:
        columns = ", role, message_created_at"
        values = f", {_ROLE_CASE}, m.created_at"
        source = f"JOIN messages m ON m.pk = u.pk AND m.role = ANY({_ROLES})"
    return (f"INSERT INTO {table} ({item}, agent_pk{columns}, model, dim, vector, created_at"
            f"{extra_col}) SELECT u.pk, m.agent_pk{values}, $2, u.dim, u.vector, $3{extra_val}"
            f" FROM unnest($1::bigint[], $4::integer[], $5::bytea[]{extra_arg})"
            f" AS u(pk, dim, vector{extra_name}) {source}"
            f" ON CONFLICT ({item}) DO NOTHING")


_LOAD = {
    PASSAGE: (
        "SELECT v.id, v.passage_pk, v.model = $1, CASE WHEN v.model = $1 THEN v.vector END,"
        " p.tags FROM passage_vectors v JOIN passages p ON p.pk = v.passage_pk"
        " WHERE v.agent_pk = $2 AND v.id > $3 ORDER BY v.id"
    ),
    MESSAGE: (
        "SELECT id, message_pk, model = $1, CASE WHEN model = $1 THEN vector END, role,"
        " message_created_at FROM message_vectors WHERE agent_pk = $2 AND id > $3 ORDER BY id"
    ),
}
_STATE = "SELECT rows, changes, removals FROM vector_state WHERE agent_pk = $1 AND kind = $2"


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text input form, '[0.1,0.2,...]' (float32 values round-trip exactly)."""
    return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"


def hnsw_index_sql(kind: str, dim: int) -> str:
    """The HNSW index for vectors of `dim` dimensions (pgvector needs a fixed dimension)."""
    table = _TABLE[kind]
    return (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {table}_hnsw_{int(dim)} ON {table}"
            f" USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops)"
            f" WHERE dim = {int(dim)}")


def pgvector_top_sql(kind: str, dim: int, *, roles: bool = False, start: bool = False,
                     end: bool = False, tags: bool = False) -> str:
    """Nearest vectors of one agent by cosine distance: $1 query text, $2 agent, $3 model,
    $4 limit, then the optional filters in order ($5...)."""
    table, item, d = _TABLE[kind], _ITEM[kind], int(dim)
    expr = f"(v.embedding::vector({d}))"
    where = ["v.agent_pk = $2", "v.model = $3", f"v.dim = {d}"]
    n = 4
    join = ""
    if kind == MESSAGE:
        if roles:
            n += 1
            where.append(f"v.role = ANY(${n}::smallint[])")
        if start:
            n += 1
            where.append(f"v.message_created_at >= ${n}")
        if end:
            n += 1
            where.append(f"v.message_created_at <= ${n}")
    elif tags:
        n += 1
        join = " JOIN passages p ON p.pk = v.passage_pk"
        where.append(f"p.tags @> ${n}::jsonb")
    return (f"SELECT v.{item}, 1 - ({expr} <=> $1::vector({d})) FROM {table} v{join}"
            f" WHERE {' AND '.join(where)} ORDER BY {expr} <=> $1::vector({d}) LIMIT $4")


class PostgresVectors:
    """Vector methods for `PostgresStore` (a mixin: it uses the store's `pool`)."""

    pgvector: tuple[int, ...] | None = None  # the extension's version when usable
    _hnsw_dims: set[tuple[str, int]]

    async def detect_pgvector(self) -> tuple[int, ...] | None:
        """Use pgvector if the extension is installed, new enough and the column exists."""
        pool: Any = self.pool  # type: ignore[attr-defined]
        row = await pool.fetchrow(
            "SELECT e.extversion, (SELECT count(*) FROM information_schema.columns"
            " WHERE table_name IN ('passage_vectors', 'message_vectors')"
            " AND column_name = 'embedding') FROM pg_extension e WHERE e.extname = 'vector'")
        version: tuple[int, ...] | None = None
        if row is not None and row[1] == 2:
            try:
                version = tuple(int(x) for x in str(row[0]).split(".")[:2])
            except ValueError:
                version = None
        self.pgvector = version if version is not None and version >= PGVECTOR_MIN else None
        self._hnsw_dims = set()
        return self.pgvector

    async def pending_texts(self, kind: str, model: str, after_pk: int,
                            limit: int, context_turns: int = 0) -> PendingPage:
        """Rows of `kind` with pk > `after_pk` (within SCAN_ROWS) lacking a `model` vector;
        messages' texts with their `context_turns` earlier turns (vector_base.document_text)."""
        pool: Any = self.pool  # type: ignore[attr-defined]
        last = await pool.fetchval(_MAX_PK[kind]) or 0
        upper = after_pk + SCAN_ROWS
        rows = await pool.fetch(_pending_sql(kind, context_turns), after_pk, upper, model, limit)
        items = [PendingText(kind, r[0], r[1], r[2] if len(r) == 3
                             else document_text(r[2], list(r[3])[::-1])) for r in rows]
        if len(items) >= limit:
            return PendingPage(items, items[-1].pk, items[-1].pk >= last)
        return PendingPage(items, min(upper, last), upper >= last)

    async def put_vectors(self, kind: str, model: str,
                          vectors: Sequence[tuple[int, np.ndarray]]) -> int:
        """Store (item pk, vector) pairs for `model` in one transaction; returns rows added."""
        if not vectors:
            return 0
        pool: Any = self.pool  # type: ignore[attr-defined]
        pks = [int(pk) for pk, _ in vectors]
        args: list[Any] = [pks, model, time.time(), [int(v.shape[0]) for _, v in vectors],
                           [pack(v) for _, v in vectors]]
        use_pgvector = self.pgvector is not None
        if use_pgvector:
            args.append([vector_literal(v) for _, v in vectors])
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {_TABLE[kind]} WHERE {_ITEM[kind]} = ANY($1::bigint[])"
                               " AND model <> $2", pks, model)
            added = _count(await conn.execute(insert_sql(kind, use_pgvector), *args))
        if use_pgvector:
            await self._ensure_hnsw(kind, {int(v.shape[0]) for _, v in vectors})
        return added

    async def _ensure_hnsw(self, kind: str, dims: set[int]) -> None:
        pool: Any = self.pool  # type: ignore[attr-defined]
        for dim in dims:
            if (kind, dim) in self._hnsw_dims or dim > 2000:  # HNSW indexes up to 2,000 dims
                continue
            try:
                await pool.execute(hnsw_index_sql(kind, dim))
                self._hnsw_dims.add((kind, dim))
            except Exception as exc:  # noqa: BLE001 - searches still work without the index
                log.warning("could not build the HNSW index for %s vectors of %d dimensions:"
                            " %s", kind, dim, type(exc).__name__)

    async def pgvector_top(self, kind: str, agent_pk: int, model: str, query: np.ndarray,
                           limit: int, *, roles: list[int] | None = None,
                           start: float | None = None, end: float | None = None,
                           tags: list[str] | None = None) -> list[tuple[int, float]]:
        """(item pk, cosine similarity) of the agent's nearest vectors, through HNSW."""
        pool: Any = self.pool  # type: ignore[attr-defined]
        dim = int(query.shape[0])
        sql = pgvector_top_sql(kind, dim, roles=bool(roles), start=start is not None,
                               end=end is not None, tags=bool(tags))
        args: list[Any] = [vector_literal(query), agent_pk, model, limit]
        if kind == MESSAGE:
            args += [a for a in (roles or None, start, end) if a is not None]
        elif tags:
            args.append(json.dumps(list(tags)))
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            await conn.execute("SET LOCAL hnsw.ef_search = 200")
            rows = await conn.fetch(sql, *args)
        return [(r[0], float(r[1])) for r in rows]

    async def vector_state(self, kind: str, agent_pk: int) -> VectorState:
        pool: Any = self.pool  # type: ignore[attr-defined]
        row = await pool.fetchrow(_STATE, agent_pk, kind)
        return VectorState() if row is None else VectorState(row[0], row[1], row[2])

    async def load_vectors(self, kind: str, agent_pk: int, model: str,
                           after_id: int = 0) -> VectorRows:
        """The agent's vector rows with id > `after_id` and the state they correspond to, read
        in one snapshot (REPEATABLE READ)."""
        pool: Any = self.pool  # type: ignore[attr-defined]
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
            state = await conn.fetchrow(_STATE, agent_pk, kind)
            rows = await conn.fetch(_LOAD[kind], model, agent_pk, after_id)
        out = VectorRows(VectorState() if state is None else VectorState(*state),
                         scanned=len(rows), max_id=rows[-1][0] if rows else after_id)
        for row in rows:
            if not row[2]:
                continue
            out.pks.append(row[1])
            out.blobs.append(row[3])
            if kind == PASSAGE:
                out.tags.append([] if row[4] == "[]" else json.loads(row[4]))
            else:
                out.roles.append(row[4])
                out.created.append(row[5])
        return out

    async def passages_by_pks(self, agent_pk: int, pks: Sequence[int]) -> list[Passage]:
        """The agent's passages among `pks`, in the order of `pks` (missing ones left out)."""
        if not pks:
            return []
        pool: Any = self.pool  # type: ignore[attr-defined]
        rows = await pool.fetch("SELECT pk, text, tags, created_at FROM passages"
                                " WHERE agent_pk = $1 AND pk = ANY($2::bigint[])",
                                agent_pk, list(pks))
        found = {r[0]: Passage(r[0], r[1], json.loads(r[2]), r[3]) for r in rows}
        return [found[pk] for pk in pks if pk in found]

    async def message_hits_by_pks(self, agent_pk: int,
                                  pks: Sequence[int]) -> list[tuple[int, MessageHit]]:
        """(pk, hit) for the agent's searchable messages among `pks` (visible, not
        superseded), in the order of `pks`; score 0."""
        if not pks:
            return []
        pool: Any = self.pool  # type: ignore[attr-defined]
        rows = await pool.fetch(
            "SELECT m.pk, c.conversation_id, m.seq, m.role, m.text, m.created_at FROM messages m"
            " JOIN conversations c ON c.pk = m.conversation_pk WHERE m.agent_pk = $1"
            " AND m.visible AND NOT m.superseded AND m.pk = ANY($2::bigint[])",
            agent_pk, list(pks))
        found = {r[0]: MessageHit(r[1], r[2], r[3], r[4], r[5], 0.0) for r in rows}
        return [(pk, found[pk]) for pk in pks if pk in found]
