"""The turn lane: a few connections a turn's statements run on without going through the pool.

asyncpg's pool costs each call ~0.07 ms of this process's time (an acquire, and a release
that runs in a shielded task), and a turn makes two or three calls: its state's read (which
takes the lease and may store the input), `begin_turn`, `finish_turn`. On Postgres those
statements are most of what memproxy adds to a turn, so the lane keeps up to half of the pool
(`size`) as a plain list of idle connections, borrowed from the pool once and handed from one
call to the next. Search, the operator API and background jobs keep the rest of the pool.

It never makes a turn wait: when every lane connection is busy (more turns at once than it
holds), a call goes through the pool as before. A connection leaves the lane, back to the
pool that knows how to clean it up, whenever the lane cannot vouch for it: a call cancelled
mid-statement, a broken connection, one the server ended while it sat idle. A Postgres error
that a statement raised (a unique or foreign-key violation turns.py expects, say) leaves the
connection idle and sound: it stays. Every call is one statement in its own transaction, so
no state is ever left on a connection between calls.
"""

from __future__ import annotations

from typing import Any

import asyncpg


class TurnLane:
    """`fetchrow`, `fetchval` and `execute` as the pool's, on the lane's connections."""

    def __init__(self, pool: asyncpg.Pool, size: int) -> None:
        self._pool = pool
        self.size = size
        self._idle: list[asyncpg.Connection] = []
        self._held = 0  # connections taken from the pool: idle, or running a call
        self._closed = False

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        conn = await self._borrow()
        if conn is None:
            return await self._pool.fetchrow(sql, *args)
        return await self._call(conn, conn.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await self._borrow()
        if conn is None:
            return await self._pool.fetchval(sql, *args)
        return await self._call(conn, conn.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        conn = await self._borrow()
        if conn is None:
            return await self._pool.execute(sql, *args)
        return await self._call(conn, conn.execute(sql, *args))

    async def close(self) -> None:
        """Give the idle connections back; those running a call go back when it ends."""
        self._closed = True
        while self._idle:
            await self._give_to_pool(self._idle.pop())

    async def _call(self, conn: asyncpg.Connection, statement: Any) -> Any:
        try:
            result = await statement
        except asyncpg.PostgresError:
            await self._done(conn)  # the server answered: the connection is idle again
            raise
        except BaseException:  # cancelled mid-statement, or the connection broke
            await self._give_to_pool(conn)
            raise
        await self._done(conn)
        return result

    async def _borrow(self) -> asyncpg.Connection | None:
        """An idle lane connection, a new one while the lane holds fewer than `size`, or None
        (the caller uses the pool)."""
        while self._idle:
            conn = self._idle.pop()
            if _open(conn):
                return conn
            await self._give_to_pool(conn)  # ended while idle: the pool replaces it
        if self._closed or self._held >= self.size:
            return None
        self._held += 1
        try:
            return await self._pool.acquire()
        except BaseException:
            self._held -= 1
            raise

    async def _done(self, conn: asyncpg.Connection) -> None:
        if self._closed or not _open(conn):
            await self._give_to_pool(conn)
        else:
            self._idle.append(conn)

    async def _give_to_pool(self, conn: asyncpg.Connection) -> None:
        self._held -= 1
        await self._pool.release(conn)  # does nothing if the pool took it back (`_open`)


def _open(conn: asyncpg.Connection) -> bool:
    """Whether `conn` (a pool's proxy) is still open and lent out."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # closed: the pool took it back and detached the proxy
        return False
