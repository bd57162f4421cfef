"""The Responses and Conversations APIs' state in SQLite (`ResponseStore`, proxy/store/base.py).

A mixin of `SQLiteStore`. What every Responses request does (store its response, read one,
read its chain) runs on the fast lane like a turn's own statements; the rest (conversation
items, listings, deletes) on the thread lane (`_read` / `_write`, lanes.py), like the agents
REST API's. A write is one IMMEDIATE transaction, so the id checks and the inserts that follow
them cannot interleave with another writer. The tables are migration 8's.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from ..response_types import (
    ApiConversation,
    IdConflictError,
    StoredResponse,
    check_order,
    item_ids,
    item_in,
    response_item_ids,
    without_cycle,
)
from .rows import _dumps, _loads

if TYPE_CHECKING:
    from collections.abc import Callable

_COLUMNS = ("response_id, tenant, status, previous_response_id, conversation_id, agent_id,"
            " input_items, body, created_at, expires_at")
_RESPONSE = f"SELECT {_COLUMNS} FROM responses"
_PUT = (
    f"INSERT INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (tenant, response_id) DO UPDATE SET status = excluded.status,"
    " previous_response_id = excluded.previous_response_id,"
    " conversation_id = excluded.conversation_id, agent_id = excluded.agent_id,"
    " input_items = excluded.input_items, body = excluded.body,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at RETURNING pk"
)
_ITEMS_OF = "DELETE FROM response_items WHERE response_pk = ?"
_ITEM = "INSERT INTO response_items (response_pk, tenant, item_id) VALUES (?, ?, ?)"
# ?1 tenant, ?2 response id, ?3 depth limit: each step one lookup of UNIQUE (tenant,
# response_id), the tenant checked at every step; newest at depth 1.
_CHAIN = (
    "WITH RECURSIVE chain(pk, previous, depth) AS ("
    " SELECT pk, previous_response_id, 1 FROM responses WHERE tenant = ?1 AND response_id = ?2"
    " UNION ALL SELECT r.pk, r.previous_response_id, chain.depth + 1 FROM chain"
    " JOIN responses r ON r.tenant = ?1 AND r.response_id = chain.previous"
    " WHERE chain.depth < ?3)"
    f" SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}"
    " FROM chain JOIN responses r ON r.pk = chain.pk ORDER BY chain.depth DESC"
)
_CONVERSATION = "SELECT conversation_id, tenant, metadata, created_at FROM api_conversations"
_CONVERSATION_PK = "SELECT pk FROM api_conversations WHERE tenant = ? AND conversation_id = ?"
_INSERT_ITEM = ("INSERT INTO api_conversation_items (conversation_pk, position, item_id, data,"
                " created_at) VALUES (?, ?, ?, ?, ?)")


def response_row(r: tuple) -> StoredResponse:
    return StoredResponse(response_id=r[0], tenant=r[1], status=r[2], previous_response_id=r[3],
                          conversation_id=r[4], agent_id=r[5], input_items=_loads(r[6]),
                          body=_loads(r[7]), created_at=r[8], expires_at=r[9])


def conversation_row(r: tuple) -> ApiConversation:
    return ApiConversation(conversation_id=r[0], tenant=r[1], metadata=_loads(r[2]),
                           created_at=r[3])


def _append_items(db: sqlite3.Connection, conversation_pk: int, items: list[dict[str, Any]],
                  now: float) -> None:
    """Insert `items` after the conversation's last position; IdConflictError (before any
    insert) if one of their ids is taken."""
    ids = item_ids(items)
    if not items:
        return
    rows = [(_dumps(item), item_id) for item, item_id in zip(items, ids, strict=True)]
    taken = db.execute(
        "SELECT item_id FROM api_conversation_items WHERE conversation_pk = ?"
        " AND item_id IN (SELECT value FROM json_each(?)) LIMIT 1",
        (conversation_pk, _dumps(ids))).fetchone()
    if taken is not None:
        raise IdConflictError("item", taken[0])
    start = db.execute("SELECT coalesce(max(position), 0) + 1 FROM api_conversation_items"
                       " WHERE conversation_pk = ?", (conversation_pk,)).fetchone()[0]
    db.executemany(_INSERT_ITEM, ((conversation_pk, start + i, item_id, data, now)
                                  for i, (data, item_id) in enumerate(rows)))


class SQLiteResponsesMixin:
    """`ResponseStore` of `SQLiteStore` (see proxy/store/base.py for the contract)."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        async def _read(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        async def _write(self, fn: Callable[..., Any], *args: Any) -> Any: ...
        lanes: Any

    # --- responses ------------------------------------------------------------------------
    async def put_response(self, response: StoredResponse) -> None:
        r = response
        params = (r.response_id, r.tenant, r.status, r.previous_response_id, r.conversation_id,
                  r.agent_id, _dumps(r.input_items), _dumps(r.body), float(r.created_at),
                  None if r.expires_at is None else float(r.expires_at))
        # on the request path of every stored response: the fast lane (one indexed upsert,
        # committed with the turn's own writes of the same loop pass)
        ids = response_item_ids(r)

        def run(db: sqlite3.Connection) -> None:
            pk = db.execute(_PUT, params).fetchone()[0]
            db.execute(_ITEMS_OF, (pk,))
            db.executemany(_ITEM, [(pk, r.tenant, item_id) for item_id in ids])

        await self.lanes.write_fast(run)

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        def run(db: sqlite3.Connection) -> StoredResponse | None:
            row = db.execute(f"{_RESPONSE} WHERE tenant = ? AND response_id = ?",
                             (tenant, response_id)).fetchone()
            return None if row is None else response_row(row)

        return await self.lanes.read_fast(run)  # one indexed row

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return await self._write(lambda db: db.execute(
            "DELETE FROM responses WHERE tenant = ? AND response_id = ?",
            (tenant, response_id)).rowcount == 1)

    async def response_chain(self, tenant: str, response_id: str, *, limit: int = 10_000
                             ) -> list[StoredResponse]:
        if limit < 1:
            return []
        # every chained request reads its chain first: the fast lane, as a chat client's
        # resent history is decoded on the loop too
        return without_cycle(await self.lanes.read_fast(lambda db: [
            response_row(r) for r in db.execute(_CHAIN, (tenant, response_id, int(limit)))]))

    async def find_items(self, tenant: str, item_ids: list[str]) -> dict[str, dict]:
        wanted = sorted({i for i in item_ids if isinstance(i, str) and "\x00" not in i})
        if not wanted:
            return {}

        def run(db: sqlite3.Connection) -> list[tuple[str, StoredResponse]]:
            return [(row[0], response_row(row[1:])) for row in db.execute(
                f"SELECT i.item_id, {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}"
                " FROM response_items i JOIN responses r ON r.pk = i.response_pk"
                " WHERE i.tenant = ? AND i.item_id IN (SELECT value FROM json_each(?))"
                " ORDER BY r.pk DESC", (tenant, _dumps(wanted)))]

        found: dict[str, dict] = {}
        for item_id, response in await self.lanes.read_fast(run):
            item = item_in(response, item_id)
            if item is not None:
                found.setdefault(item_id, item)
        return found

    async def expire_responses(self, now: float) -> int:
        return await self._write(lambda db: db.execute(
            "DELETE FROM responses WHERE expires_at IS NOT NULL AND expires_at <= ?",
            (float(now),)).rowcount)

    # --- conversations ----------------------------------------------------------------------
    async def create_api_conversation(self, conversation: ApiConversation,
                                      items: list[dict[str, Any]]) -> None:
        c, now = conversation, time.time()
        item_ids(items)  # a bad batch fails before the write lock is taken

        def run(db: sqlite3.Connection) -> None:
            cur = db.execute(
                "INSERT INTO api_conversations (tenant, conversation_id, metadata, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (tenant, conversation_id) DO NOTHING",
                (c.tenant, c.conversation_id, _dumps(c.metadata), float(c.created_at)))
            if cur.rowcount != 1:
                raise IdConflictError("conversation", c.conversation_id)
            _append_items(db, cur.lastrowid, items, now)

        await self._write(run)

    async def get_api_conversation(self, tenant: str, conversation_id: str
                                   ) -> ApiConversation | None:
        def run(db: sqlite3.Connection) -> ApiConversation | None:
            row = db.execute(f"{_CONVERSATION} WHERE tenant = ? AND conversation_id = ?",
                             (tenant, conversation_id)).fetchone()
            return None if row is None else conversation_row(row)

        return await self._read(run)

    async def update_api_conversation(self, tenant: str, conversation_id: str,
                                      metadata: dict[str, Any]) -> ApiConversation | None:
        def run(db: sqlite3.Connection) -> ApiConversation | None:
            db.execute("UPDATE api_conversations SET metadata = ? WHERE tenant = ?"
                       " AND conversation_id = ?", (_dumps(metadata), tenant, conversation_id))
            row = db.execute(f"{_CONVERSATION} WHERE tenant = ? AND conversation_id = ?",
                             (tenant, conversation_id)).fetchone()
            return None if row is None else conversation_row(row)

        return await self._write(run)

    async def delete_api_conversation(self, tenant: str, conversation_id: str) -> bool:
        """The items go with it (ON DELETE CASCADE)."""
        return await self._write(lambda db: db.execute(
            "DELETE FROM api_conversations WHERE tenant = ? AND conversation_id = ?",
            (tenant, conversation_id)).rowcount == 1)

    # --- conversation items -----------------------------------------------------------------
    async def add_conversation_items(self, tenant: str, conversation_id: str,
                                     items: list[dict[str, Any]]) -> bool:
        now = time.time()
        item_ids(items)

        def run(db: sqlite3.Connection) -> bool:
            row = db.execute(_CONVERSATION_PK, (tenant, conversation_id)).fetchone()
            if row is None:
                return False
            _append_items(db, row[0], items, now)
            return True

        return await self._write(run)

    async def list_conversation_items(self, tenant: str, conversation_id: str, *,
                                      after: str | None = None, limit: int = 20,
                                      order: str = "desc") -> tuple[list[dict[str, Any]], bool]:
        direction = "ASC" if check_order(order) == "asc" else "DESC"
        if limit < 1:
            return [], False
        # ?1 tenant, ?2 conversation id, ?3 cursor, ?4 page size + 1; the cursor's position
        # is a constant (not correlated), so the page is a range of UNIQUE (conversation_pk,
        # position); an unknown cursor is NULL and the comparison keeps nothing
        conversation = "SELECT pk FROM api_conversations WHERE tenant = ?1 AND conversation_id = ?2"
        cursor = "" if after is None else (
            f" AND i.position {'>' if direction == 'ASC' else '<'} (SELECT a.position"
            f" FROM api_conversation_items a WHERE a.conversation_pk = ({conversation})"
            " AND a.item_id = ?3)")
        sql = (f"SELECT i.data FROM api_conversation_items i WHERE i.conversation_pk ="
               f" ({conversation}){cursor} ORDER BY i.position {direction} LIMIT ?4")
        rows = await self._read(lambda db: [_loads(r[0]) for r in db.execute(
            sql, (tenant, conversation_id, after, int(limit) + 1))])
        return rows[:limit], len(rows) > limit

    async def conversation_items(self, tenant: str, conversation_id: str
                                 ) -> list[dict[str, Any]]:
        sql = (f"SELECT data FROM api_conversation_items WHERE conversation_pk ="
               f" ({_CONVERSATION_PK}) ORDER BY position")
        return await self._read(lambda db: [
            _loads(r[0]) for r in db.execute(sql, (tenant, conversation_id))])

    async def get_conversation_item(self, tenant: str, conversation_id: str, item_id: str
                                    ) -> dict[str, Any] | None:
        sql = (f"SELECT data FROM api_conversation_items WHERE conversation_pk ="
               f" ({_CONVERSATION_PK}) AND item_id = ?")

        def run(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(sql, (tenant, conversation_id, item_id)).fetchone()
            return None if row is None else _loads(row[0])

        return await self._read(run)

    async def delete_conversation_item(self, tenant: str, conversation_id: str, item_id: str
                                       ) -> bool:
        sql = (f"DELETE FROM api_conversation_items WHERE conversation_pk ="
               f" ({_CONVERSATION_PK}) AND item_id = ?")
        return await self._write(lambda db: db.execute(
            sql, (tenant, conversation_id, item_id)).rowcount == 1)
