"""Export and import of a whole agent on the Postgres store (a mixin of `PostgresStore`).

Export reads in one read-only REPEATABLE READ transaction (one snapshot); import writes in one
transaction with one statement per table, every batch as arrays (`unnest ... WITH ORDINALITY`,
so identity columns such as block `pos` and turn `ord` follow the document's order).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ...core.messages import message_text
from ...core.types import Agent, BlockRevision
from ..admin_types import (
    AgentDump,
    AgentExistsError,
    ConversationDump,
    TurnRecord,
    import_revisions,
    turn_renames,
)
from ..forget_types import check_import_passages
from .admin import INSERT_REVISIONS, block_row, revision_arrays, snapshot
from .forget import check_agent_quota
from .sql import (
    AGENT,
    MSG,
    agent_row,
    clean,
    conversation_row,
    dumps,
    jsonb,
    message_row,
    passage_row,
)
from .tree import backfill_trees

if TYPE_CHECKING:
    import contextlib

    import asyncpg

    from .message_terms import TermsIndexer

_INSERT_BLOCKS = (
    "INSERT INTO blocks (agent_pk, label, value, description, lim, read_only, updated_at)"
    " SELECT $1, u.label, u.value, u.description, u.lim, u.read_only, u.updated_at"
    " FROM unnest($2::text[], $3::text[], $4::text[], $5::integer[], $6::boolean[],"
    " $7::float8[]) WITH ORDINALITY AS u(label, value, description, lim, read_only,"
    " updated_at, i) ORDER BY u.i"
)
_INSERT_CONVERSATIONS = (
    "INSERT INTO conversations (agent_pk, conversation_id, created_at, summary, resends_history,"
    " head_hash) SELECT $1, u.cid, u.created_at, u.summary, u.resends, u.head"
    " FROM unnest($2::text[], $3::float8[], $4::text[], $5::boolean[], $6::text[])"
    " WITH ORDINALITY AS u(cid, created_at, summary, resends, head, i) ORDER BY u.i"
    " RETURNING conversation_id, pk"
)
_INSERT_MESSAGES = (
    "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text, created_at,"
    " in_context, visible, superseded, tokens, visible_hash, parent_seq)"
    " SELECT u.cpk, $1, u.seq, u.turn_id, u.role, u.data, u.text, u.created_at, u.in_context,"
    " u.visible, u.superseded, u.tokens, u.visible_hash, u.parent_seq FROM unnest($2::bigint[],"
    " $3::integer[], $4::text[], $5::text[], $6::json[], $7::text[], $8::float8[],"
    " $9::boolean[], $10::boolean[], $11::boolean[], $12::integer[], $13::text[],"
    " $14::integer[]) AS u(cpk, seq, turn_id, role, data, text, created_at, in_context,"
    " visible, superseded, tokens, visible_hash, parent_seq)"
)
_INSERT_TURNS = (
    "INSERT INTO turns (turn_id, conversation_pk, status, request_hash, idempotency_key,"
    " created_at, finished_at, response, first_seq) SELECT u.turn_id, u.cpk, u.status, u.hash,"
    " u.idem, u.created_at, u.finished_at, u.response, u.first_seq FROM unnest($1::text[],"
    " $2::bigint[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[],"
    " $8::json[], $9::integer[]) WITH ORDINALITY AS u(turn_id, cpk, status, hash, idem,"
    " created_at, finished_at, response, first_seq, i) ORDER BY u.i"
)
_INSERT_PASSAGES = (
    "INSERT INTO passages (agent_pk, text, tags, created_at) SELECT $1, u.text, u.tags,"
    " u.created_at FROM unnest($2::text[], $3::jsonb[], $4::float8[]) WITH ORDINALITY"
    " AS u(text, tags, created_at, i) ORDER BY u.i"
)


async def _export(conn: asyncpg.Connection, agent_pk: int) -> AgentDump | None:
    row = await conn.fetchrow(f"{AGENT} WHERE pk = $1", agent_pk)
    if row is None:
        return None
    blocks = [block_row(r) for r in await conn.fetch(
        "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
        " WHERE agent_pk = $1 ORDER BY pos", agent_pk)]
    revisions = [BlockRevision(r[1], r[2], r[3], r[4], r[5], r[6], r[0]) for r in await conn.fetch(
        "SELECT pk, label, old_value, new_value, source, turn_id, created_at"
        " FROM block_revisions WHERE agent_pk = $1 ORDER BY pk", agent_pk)]
    convs = await conn.fetch(
        "SELECT pk, agent_pk, conversation_id, created_at, summary, resends_history, head_hash"
        " FROM conversations WHERE agent_pk = $1 ORDER BY pk", agent_pk)
    pks = [c[0] for c in convs]
    messages: dict[int, list[Any]] = defaultdict(list)
    for r in await conn.fetch(
            f"SELECT conversation_pk, {MSG.removeprefix('SELECT ')}"
            " WHERE conversation_pk = ANY($1::bigint[]) ORDER BY conversation_pk, seq", pks):
        messages[r[0]].append(message_row(r[1:]))
    turns: dict[int, list[TurnRecord]] = defaultdict(list)
    for r in await conn.fetch(
            "SELECT conversation_pk, turn_id, status, request_hash, idempotency_key, created_at,"
            " finished_at, response, first_seq FROM turns"
            " WHERE conversation_pk = ANY($1::bigint[]) ORDER BY ord", pks):
        response = None if r[7] is None else json.loads(r[7])
        turns[r[0]].append(TurnRecord(r[1], r[2], r[3], r[4], r[5], r[6], response, r[8]))
    conversations = [ConversationDump(conversation_row(c[:6]), c[6], messages[c[0]], turns[c[0]])
                     for c in convs]
    passages = [passage_row(r) for r in await conn.fetch(
        "SELECT pk, text, tags, created_at, NULL FROM passages WHERE agent_pk = $1 ORDER BY pk",
        agent_pk)]
    return AgentDump(agent_row(row), blocks, revisions, conversations, passages)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    cols: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


async def _import(conn: asyncpg.Connection, tenant: str, agent_id: str, dump: AgentDump,
                  replace: bool, now: float, max_agents: int = 0, max_passages: int = 0
                  ) -> Agent:
    await check_agent_quota(conn, tenant, agent_id, max_agents)
    check_import_passages(dump, max_passages)
    old_pk = await conn.fetchval("SELECT pk FROM agents WHERE tenant = $1 AND agent_id = $2"
                                 " FOR UPDATE", tenant, agent_id)
    old_values: dict[str, str] = {}
    if old_pk is not None:
        if not replace:
            raise AgentExistsError(agent_id)
        old_values = {r[0]: r[1] for r in await conn.fetch(
            "SELECT label, value FROM blocks WHERE agent_pk = $1", old_pk)}
        await conn.execute("DELETE FROM agents WHERE pk = $1", old_pk)
    agent = dump.agent
    pk = await conn.fetchval(
        "INSERT INTO agents (tenant, agent_id, created_at, settings)"
        " VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (tenant, agent_id) DO NOTHING RETURNING pk",
        tenant, agent_id, agent.created_at, jsonb(agent.settings))
    if pk is None:  # created concurrently
        raise AgentExistsError(agent_id)
    await conn.execute(_INSERT_BLOCKS, pk, *_columns(
        [(clean(b.label), clean(b.value), clean(b.description), int(b.limit), bool(b.read_only),
          b.updated_at) for b in dump.blocks], 6))
    ids = [t.turn_id for c in dump.conversations for t in c.turns]
    existing = {r[0] for r in await conn.fetch(
        "SELECT turn_id FROM turns WHERE turn_id = ANY($1::text[])", ids)}
    rename = turn_renames(existing, dump)

    def tid(turn_id: str | None) -> str | None:
        return None if turn_id is None else rename.get(turn_id, turn_id)

    history = [BlockRevision(r.label, r.old_value, r.new_value, r.source, tid(r.turn_id),
                             r.created_at) for r in dump.revisions]
    revisions = [*history, *import_revisions(dump, old_values)]
    if revisions:
        await conn.execute(INSERT_REVISIONS, pk, *revision_arrays(revisions, None, now))
    convs = [c.conversation for c in dump.conversations]
    created = {r[0]: r[1] for r in await conn.fetch(_INSERT_CONVERSATIONS, pk, *_columns(
        [(c.conversation_id, c.created_at, clean(c.summary), c.resends_history, d.head_hash)
         for c, d in zip(convs, dump.conversations, strict=True)], 5))}
    await conn.execute(_INSERT_MESSAGES, pk, *_columns(
        [(created[d.conversation.conversation_id], m.seq, tid(m.turn_id),
          clean(str(m.data.get("role", ""))), dumps(m.data), clean(message_text(m.data)),
          m.created_at, m.in_context, m.visible, m.superseded, m.tokens, m.visible_hash,
          m.parent_seq) for d in dump.conversations for m in d.messages], 13))
    await conn.execute(_INSERT_TURNS, *_columns(
        [(tid(t.turn_id), created[d.conversation.conversation_id], t.status, t.request_hash,
          t.idempotency_key, t.created_at, t.finished_at,
          None if t.response is None else dumps(t.response), t.first_seq)
         for d in dump.conversations for t in d.turns], 9))
    await backfill_trees(conn, list(created.values()))  # path hashes (and parents an older
    # export lacks)
    await conn.execute(_INSERT_PASSAGES, pk, *_columns(
        [(clean(p.text), jsonb(list(p.tags)), p.created_at) for p in dump.passages], 3))
    return Agent(pk=pk, tenant=tenant, agent_id=agent_id, created_at=agent.created_at,
                 settings=json.loads(jsonb(agent.settings)))


class PostgresDumpMixin:
    """`export_agent` / `import_agent` of `PostgresStore`."""

    if TYPE_CHECKING:  # provided by PostgresStore
        terms: TermsIndexer

        def _wrote(self, rows: dict[str, int]) -> None: ...

        @property
        def pool(self) -> asyncpg.Pool: ...
        def _transaction(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def export_agent(self, agent_pk: int) -> AgentDump | None:
        async with snapshot(self.pool) as conn:
            return await _export(conn, agent_pk)

    async def import_agent(self, tenant: str, agent_id: str, dump: AgentDump, *,
                           replace: bool = False, max_agents: int = 0, max_passages: int = 0
                           ) -> Agent:
        """One transaction; a large import then has its tables analyzed in the background
        (statistics.py): until then a turn would plan with no or stale statistics."""
        async with self._transaction() as conn:
            agent = await _import(conn, tenant, agent_id, dump, replace, time.time(),
                                  max_agents, max_passages)
        conversations = dump.conversations
        self._wrote({
            "agents": 1, "blocks": len(dump.blocks), "block_revisions": len(dump.revisions),
            "conversations": len(conversations), "passages": len(dump.passages),
            "messages": sum(len(c.messages) for c in conversations),
            "turns": sum(len(c.turns) for c in conversations)})
        # searchable before the import returns, as when the vectors were written with the rows
        await self.terms.drain()
        return agent
