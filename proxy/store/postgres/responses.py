"""The Responses and Conversations APIs' state in Postgres (`ResponseStore`,
proxy/store/base.py), with the same semantics as `sqlite/responses.py`; the contract tests run
both.

A mixin of `PostgresStore` (its pool and `_transaction`). Reads are one statement each (a
chain too: one recursive CTE); writes that check ids first lock the conversation row
(`FOR NO KEY UPDATE`), so two appends to one conversation number their positions one after
the other. JSON columns are `json` (migration 8), written as text.

Postgres text cannot hold NUL characters: an id containing one is never stored, so a lookup
by such an id finds nothing without asking the server (which would reject the parameter).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from ...fastjson import dumps_text as dumps
from ...fastjson import tolerant_loads as fast_loads
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
from .sql import clean, rows_changed

if TYPE_CHECKING:
    import asyncpg

_COLUMNS = ("response_id, tenant, status, previous_response_id, conversation_id, agent_id,"
            " input_items, body, created_at, expires_at")
_RESPONSE = f"SELECT {_COLUMNS} FROM responses"
_PUT = (
    f"INSERT INTO responses ({_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8::json, $9, $10)"
    " ON CONFLICT (tenant, response_id) DO UPDATE SET status = excluded.status,"
    " previous_response_id = excluded.previous_response_id,"
    " conversation_id = excluded.conversation_id, agent_id = excluded.agent_id,"
    " input_items = excluded.input_items, body = excluded.body,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at"
)
# the response and its item ids in one statement (one round trip): the upsert, then its item
# rows made $11 (ids no longer there deleted, new ones added: disjoint sets, so the two
# sub-statements never touch the same row)
_PUT_WITH_ITEMS = (
    f"WITH r AS ({_PUT} RETURNING pk),"
    " gone AS (DELETE FROM response_items WHERE response_pk = (SELECT pk FROM r)"
    " AND item_id <> ALL($11::text[]))"
    " INSERT INTO response_items (response_pk, tenant, item_id)"
    " SELECT r.pk, $2, i FROM r, unnest($11::text[]) AS i"
    " ON CONFLICT (response_pk, item_id) DO NOTHING"
)
# $1 tenant, $2 response id, $3 depth limit: each step one lookup of UNIQUE (tenant,
# response_id), the tenant checked at every step; newest at depth 1.
_CHAIN = (
    "WITH RECURSIVE chain(pk, previous, depth) AS ("
    " SELECT pk, previous_response_id, 1 FROM responses WHERE tenant = $1 AND response_id = $2"
    " UNION ALL SELECT r.pk, r.previous_response_id, chain.depth + 1 FROM chain"
    " JOIN responses r ON r.tenant = $1 AND r.response_id = chain.previous"
    " WHERE chain.depth < $3)"
    f" SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}"
    " FROM chain JOIN responses r ON r.pk = chain.pk ORDER BY chain.depth DESC"
)
_CONVERSATION = "SELECT conversation_id, tenant, metadata, created_at FROM api_conversations"
_CONVERSATION_PK = "SELECT pk FROM api_conversations WHERE tenant = $1 AND conversation_id = $2"
# $1 conversation pk, $2 first position, $3 item ids, $4 items (JSON text), $5 now
_INSERT_ITEMS = (
    "INSERT INTO api_conversation_items (conversation_pk, position, item_id, data, created_at)"
    " SELECT $1, $2 + u.i - 1, u.item_id, u.data::json, $5"
    " FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(item_id, data, i) ORDER BY u.i"
)


def _nul(*values: str | None) -> bool:
    """True when a value cannot be in a text column (so no row has it)."""
    return any(v is not None and "\x00" in v for v in values)


def response_row(r: Any) -> StoredResponse:
    return StoredResponse(response_id=r[0], tenant=r[1], status=r[2], previous_response_id=r[3],
                          conversation_id=r[4], agent_id=r[5], input_items=fast_loads(r[6]),
                          body=fast_loads(r[7]), created_at=r[8], expires_at=r[9])


def conversation_row(r: Any) -> ApiConversation:
    return ApiConversation(conversation_id=r[0], tenant=r[1], metadata=fast_loads(r[2]),
                           created_at=r[3])


def _opt(value: str | None) -> str | None:
    return None if value is None else clean(value)


async def _append_items(conn: asyncpg.Connection, conversation_pk: int,
                        items: list[dict[str, Any]], now: float) -> None:
    """Insert `items` after the conversation's last position (the caller holds the
    conversation row); IdConflictError (before any insert) if one of their ids is taken."""
    ids = item_ids(items)
    if not items:
        return
    data = [dumps(item) for item in items]
    taken = await conn.fetchval(
        "SELECT item_id FROM api_conversation_items WHERE conversation_pk = $1"
        " AND item_id = ANY($2::text[]) LIMIT 1", conversation_pk, ids)
    if taken is not None:
        raise IdConflictError("item", taken)
    start = await conn.fetchval(
        "SELECT coalesce(max(position), 0) + 1 FROM api_conversation_items"
        " WHERE conversation_pk = $1", conversation_pk)
    await conn.execute(_INSERT_ITEMS, conversation_pk, start, ids, data, now)


class PostgresResponsesMixin:
    """`ResponseStore` of `PostgresStore` (see proxy/store/base.py for the contract)."""

    if TYPE_CHECKING:  # provided by PostgresStore
        @property
        def pool(self) -> asyncpg.Pool: ...
        def _transaction(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]: ...

    # --- responses ------------------------------------------------------------------------
    async def put_response(self, response: StoredResponse) -> None:
        r = response
        await self.pool.execute(
            _PUT_WITH_ITEMS, clean(r.response_id), clean(r.tenant), clean(r.status),
            _opt(r.previous_response_id), _opt(r.conversation_id), _opt(r.agent_id),
            dumps(r.input_items), dumps(r.body), float(r.created_at),
            None if r.expires_at is None else float(r.expires_at), response_item_ids(r))

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        if _nul(tenant, response_id):
            return None
        row = await self.pool.fetchrow(f"{_RESPONSE} WHERE tenant = $1 AND response_id = $2",
                                       tenant, response_id)
        return None if row is None else response_row(row)

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        if _nul(tenant, response_id):
            return False
        return rows_changed(await self.pool.execute(
            "DELETE FROM responses WHERE tenant = $1 AND response_id = $2",
            tenant, response_id)) == 1

    async def response_chain(self, tenant: str, response_id: str, *, limit: int = 10_000
                             ) -> list[StoredResponse]:
        if limit < 1 or _nul(tenant, response_id):
            return []
        rows = await self.pool.fetch(_CHAIN, tenant, response_id, int(limit))
        return without_cycle([response_row(r) for r in rows])

    async def find_items(self, tenant: str, item_ids: list[str]) -> dict[str, dict]:
        wanted = sorted({i for i in item_ids if isinstance(i, str) and "\x00" not in i})
        if not wanted or _nul(tenant):
            return {}
        rows = await self.pool.fetch(
            f"SELECT i.item_id, {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}"
            " FROM response_items i JOIN responses r ON r.pk = i.response_pk"
            " WHERE i.tenant = $1 AND i.item_id = ANY($2::text[]) ORDER BY r.pk DESC",
            tenant, wanted)
        found: dict[str, dict] = {}
        for row in rows:
            item = item_in(response_row(tuple(row)[1:]), row[0])
            if item is not None:
                found.setdefault(row[0], item)
        return found

    async def expire_responses(self, now: float) -> int:
        return rows_changed(await self.pool.execute(
            "DELETE FROM responses WHERE expires_at IS NOT NULL AND expires_at <= $1",
            float(now)))

    # --- conversations ----------------------------------------------------------------------
    async def create_api_conversation(self, conversation: ApiConversation,
                                      items: list[dict[str, Any]]) -> None:
        c, now = conversation, time.time()
        item_ids(items)
        async with self._transaction() as conn:
            pk = await conn.fetchval(
                "INSERT INTO api_conversations (tenant, conversation_id, metadata, created_at)"
                " VALUES ($1, $2, $3::json, $4) ON CONFLICT (tenant, conversation_id)"
                " DO NOTHING RETURNING pk", clean(c.tenant), clean(c.conversation_id),
                dumps(c.metadata), float(c.created_at))
            if pk is None:
                raise IdConflictError("conversation", c.conversation_id)
            await _append_items(conn, pk, items, now)

    async def get_api_conversation(self, tenant: str, conversation_id: str
                                   ) -> ApiConversation | None:
        if _nul(tenant, conversation_id):
            return None
        row = await self.pool.fetchrow(
            f"{_CONVERSATION} WHERE tenant = $1 AND conversation_id = $2",
            tenant, conversation_id)
        return None if row is None else conversation_row(row)

    async def update_api_conversation(self, tenant: str, conversation_id: str,
                                      metadata: dict[str, Any]) -> ApiConversation | None:
        if _nul(tenant, conversation_id):
            return None
        row = await self.pool.fetchrow(
            "UPDATE api_conversations SET metadata = $3::json WHERE tenant = $1"
            " AND conversation_id = $2 RETURNING conversation_id, tenant, metadata, created_at",
            tenant, conversation_id, dumps(metadata))
        return None if row is None else conversation_row(row)

    async def delete_api_conversation(self, tenant: str, conversation_id: str) -> bool:
        """The items go with it (ON DELETE CASCADE)."""
        if _nul(tenant, conversation_id):
            return False
        return rows_changed(await self.pool.execute(
            "DELETE FROM api_conversations WHERE tenant = $1 AND conversation_id = $2",
            tenant, conversation_id)) == 1

    # --- conversation items -----------------------------------------------------------------
    async def add_conversation_items(self, tenant: str, conversation_id: str,
                                     items: list[dict[str, Any]]) -> bool:
        now = time.time()
        item_ids(items)
        if _nul(tenant, conversation_id):
            return False
        async with self._transaction() as conn:
            pk = await conn.fetchval(f"{_CONVERSATION_PK} FOR NO KEY UPDATE",
                                     tenant, conversation_id)
            if pk is None:
                return False
            await _append_items(conn, pk, items, now)
        return True

    async def list_conversation_items(self, tenant: str, conversation_id: str, *,
                                      after: str | None = None, limit: int = 20,
                                      order: str = "desc") -> tuple[list[dict[str, Any]], bool]:
        direction = "ASC" if check_order(order) == "asc" else "DESC"
        if limit < 1 or _nul(tenant, conversation_id, after):
            return [], False
        # $1 tenant, $2 conversation id, $3 page size + 1, $4 cursor; the cursor's position
        # is a constant (not correlated), so the page is a range of UNIQUE (conversation_pk,
        # position); an unknown cursor is NULL and the comparison keeps nothing
        cursor = "" if after is None else (
            f" AND i.position {'>' if direction == 'ASC' else '<'} (SELECT a.position"
            f" FROM api_conversation_items a WHERE a.conversation_pk = ({_CONVERSATION_PK})"
            " AND a.item_id = $4)")
        rows = await self.pool.fetch(
            f"SELECT i.data FROM api_conversation_items i WHERE i.conversation_pk ="
            f" ({_CONVERSATION_PK}){cursor} ORDER BY i.position {direction} LIMIT $3",
            tenant, conversation_id, int(limit) + 1, *(() if after is None else (after,)))
        items = [fast_loads(r[0]) for r in rows]
        return items[:limit], len(items) > limit

    async def conversation_items(self, tenant: str, conversation_id: str
                                 ) -> list[dict[str, Any]]:
        if _nul(tenant, conversation_id):
            return []
        rows = await self.pool.fetch(
            f"SELECT data FROM api_conversation_items WHERE conversation_pk ="
            f" ({_CONVERSATION_PK}) ORDER BY position", tenant, conversation_id)
        return [fast_loads(r[0]) for r in rows]

    async def get_conversation_item(self, tenant: str, conversation_id: str, item_id: str
                                    ) -> dict[str, Any] | None:
        if _nul(tenant, conversation_id, item_id):
            return None
        row = await self.pool.fetchrow(
            f"SELECT data FROM api_conversation_items WHERE conversation_pk ="
            f" ({_CONVERSATION_PK}) AND item_id = $3", tenant, conversation_id, item_id)
        return None if row is None else fast_loads(row[0])

    async def delete_conversation_item(self, tenant: str, conversation_id: str, item_id: str
                                       ) -> bool:
        if _nul(tenant, conversation_id, item_id):
            return False
        return rows_changed(await self.pool.execute(
            f"DELETE FROM api_conversation_items WHERE conversation_pk ="
            f" ({_CONVERSATION_PK}) AND item_id = $3", tenant, conversation_id, item_id)) == 1
