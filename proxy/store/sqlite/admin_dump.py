"""Export and import of a whole agent on the SQLite store (a mixin of `SQLiteStore`).

Export reads every table of the agent inside one read transaction on the reader connection,
so the dump is one consistent snapshot even while turns are being written. Import writes
everything in one IMMEDIATE transaction on the writer: an import that fails leaves nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from ...core.messages import message_text
from ...core.types import Agent, Block, BlockRevision
from ..admin_types import (
    AgentDump,
    AgentExistsError,
    ConversationDump,
    TurnRecord,
    import_revisions,
    turn_renames,
)
from ..forget_types import check_import_passages
from . import rows as core
from .admin import insert_revisions
from .forget import check_agent_quota
from .fts import index_pending
from .tree import backfill_trees

if TYPE_CHECKING:
    from collections.abc import Callable

_TURNS = ("SELECT turn_id, status, request_hash, idempotency_key, created_at, finished_at,"
          " response, first_seq FROM turns WHERE conversation_pk = ? ORDER BY rowid")
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_pk, agent_pk, seq, turn_id, role, data, text, created_at,"
    " in_context, visible, superseded, tokens, visible_hash, parent_seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TURN = (
    "INSERT INTO turns (turn_id, conversation_pk, status, request_hash, idempotency_key,"
    " created_at, finished_at, response, first_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _turn_record(r: tuple) -> TurnRecord:
    response = None if r[6] is None else json.loads(r[6])
    return TurnRecord(r[0], r[1], r[2], r[3], r[4], r[5], response, r[7])


def _export(db: sqlite3.Connection, agent_pk: int) -> AgentDump | None:
    db.execute("BEGIN")  # one snapshot for every read below
    try:
        row = db.execute(f"{core._AGENT} WHERE pk = ?", (agent_pk,)).fetchone()
        if row is None:
            return None
        blocks = [Block(r[0], r[1], r[2], r[3], bool(r[4]), r[5]) for r in db.execute(
            "SELECT label, value, description, lim, read_only, updated_at FROM blocks"
            " WHERE agent_pk = ? ORDER BY rowid", (agent_pk,))]
        revisions = [
            BlockRevision(r[1], r[2], r[3], r[4], r[5], r[6], r[0]) for r in db.execute(
                "SELECT pk, label, old_value, new_value, source, turn_id, created_at"
                " FROM block_revisions WHERE agent_pk = ? ORDER BY pk", (agent_pk,))]
        conversations = []
        for c in db.execute(
                "SELECT pk, agent_pk, conversation_id, created_at, summary, resends_history,"
                " head_hash FROM conversations WHERE agent_pk = ? ORDER BY pk",
                (agent_pk,)).fetchall():
            messages = [core._message(r) for r in db.execute(
                f"{core._MSG} WHERE conversation_pk = ? ORDER BY seq", (c[0],))]
            turns = [_turn_record(r) for r in db.execute(_TURNS, (c[0],))]
            conversations.append(ConversationDump(core._conversation(c[:6]), c[6], messages,
                                                  turns))
        passages = [core._passage(r) for r in db.execute(
            "SELECT pk, text, tags, created_at, NULL FROM passages WHERE agent_pk = ?"
            " ORDER BY pk", (agent_pk,))]
        return AgentDump(core._agent(row), blocks, revisions, conversations, passages)
    finally:
        db.execute("COMMIT")


def _import(db: sqlite3.Connection, tenant: str, agent_id: str, dump: AgentDump, replace: bool,
            now: float, max_agents: int = 0, max_passages: int = 0) -> Agent:
    check_agent_quota(db, tenant, agent_id, max_agents)
    check_import_passages(dump, max_passages)
    row = db.execute("SELECT pk FROM agents WHERE tenant = ? AND agent_id = ?",
                     (tenant, agent_id)).fetchone()
    old_values: dict[str, str] = {}
    if row is not None:
        if not replace:
            raise AgentExistsError(agent_id)
        old_values = dict(db.execute("SELECT label, value FROM blocks WHERE agent_pk = ?",
                                     (row[0],)).fetchall())
        db.execute("DELETE FROM agents WHERE pk = ?", (row[0],))
    agent = dump.agent
    pk = db.execute("INSERT INTO agents (tenant, agent_id, created_at, settings)"
                    " VALUES (?, ?, ?, ?)", (tenant, agent_id, agent.created_at,
                                             core._dumps(agent.settings))).lastrowid
    db.executemany(
        "INSERT INTO blocks (agent_pk, label, value, description, lim, read_only, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((pk, b.label, b.value, b.description, b.limit, int(b.read_only), b.updated_at)
         for b in dump.blocks))
    ids = [t.turn_id for c in dump.conversations for t in c.turns]
    existing = {r[0] for r in db.execute(
        "SELECT turn_id FROM turns WHERE turn_id IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),))}
    rename = turn_renames(existing, dump)

    def tid(turn_id: str | None) -> str | None:
        return None if turn_id is None else rename.get(turn_id, turn_id)

    history = [BlockRevision(r.label, r.old_value, r.new_value, r.source, tid(r.turn_id),
                             r.created_at) for r in dump.revisions]
    insert_revisions(db, pk, [*history, *import_revisions(dump, old_values)], None, now)
    for conv in dump.conversations:
        c = conv.conversation
        cpk = db.execute(
            "INSERT INTO conversations (agent_pk, conversation_id, created_at, summary,"
            " resends_history, head_hash) VALUES (?, ?, ?, ?, ?, ?)",
            (pk, c.conversation_id, c.created_at, c.summary,
             None if c.resends_history is None else int(c.resends_history),
             conv.head_hash)).lastrowid
        db.executemany(_INSERT_MESSAGE, (
            (cpk, pk, m.seq, tid(m.turn_id), m.role, core._dumps(m.data), message_text(m.data),
             m.created_at, int(m.in_context), int(m.visible), int(m.superseded), m.tokens,
             m.visible_hash, m.parent_seq) for m in conv.messages))
        db.executemany(_INSERT_TURN, (
            (tid(t.turn_id), cpk, t.status, t.request_hash, t.idempotency_key, t.created_at,
             t.finished_at, None if t.response is None else core._dumps(t.response),
             t.first_seq) for t in conv.turns))
        backfill_trees(db, [cpk])  # path hashes (and parents an older export lacks)
    db.executemany("INSERT INTO passages (agent_pk, text, tags, created_at) VALUES (?, ?, ?, ?)",
                   ((pk, p.text, core._dumps(list(p.tags)), p.created_at)
                    for p in dump.passages))
    index_pending(db)  # an imported history is searchable as soon as the import commits
    return Agent(pk=pk, tenant=tenant, agent_id=agent_id, created_at=agent.created_at,
                 settings=dict(agent.settings))


class SQLiteDumpMixin:
    """`export_agent` / `import_agent` of `SQLiteStore`."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        async def _read(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def _write(self, fn: Callable[..., Any], *args: Any) -> Any: ...

    async def export_agent(self, agent_pk: int) -> AgentDump | None:
        return await self._read(_export, agent_pk)

    async def import_agent(self, tenant: str, agent_id: str, dump: AgentDump, *,
                           replace: bool = False, max_agents: int = 0, max_passages: int = 0
                           ) -> Agent:
        return await self._write(_import, tenant, agent_id, dump, replace, time.time(),
                                 max_agents, max_passages)
