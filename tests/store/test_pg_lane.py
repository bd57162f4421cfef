"""The turn lane (proxy/store/postgres/lane.py): a turn's statements reuse a few connections
without the pool's acquire and release, never wait for one, and give back to the pool every
connection they cannot vouch for."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests import store_backends

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database

PID = "SELECT pg_backend_pid()"


def _pg(url: str, body: Any, **store: Any) -> Any:
    from proxy.store.postgres.store import PostgresStore

    return store_backends.run_with_store(PostgresStore(url, **store), body)


async def _sleeping(s: Any, seconds: str) -> int:
    return await s.pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
        f"SELECT pg_sleep({seconds})")


def test_calls_one_after_another_reuse_one_connection(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        pids = {await s.lane.fetchval(PID) for _ in range(20)}
        assert len(pids) == 1
        assert s.lane.size == 5  # half of the default pool of 10

    _pg(postgres_url, body)


def test_calls_beyond_the_lane_go_through_the_pool_without_waiting(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        lane = s.lane
        calls = [lane.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.3)")
                 for _ in range(lane.size + 3)]
        pids = await asyncio.wait_for(asyncio.gather(*calls), 5)
        assert len(set(pids)) == lane.size + 3  # all at once: 3 more than the lane holds
        # the lane keeps its five and gives the pool back the rest
        assert len({await lane.fetchval(PID) for _ in range(5)}) == 1
        assert s.pool.get_idle_size() >= s.pool.get_size() - lane.size

    _pg(postgres_url, body)


def test_a_postgres_error_keeps_the_connection(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        pid = await s.lane.fetchval(PID)
        with pytest.raises(asyncpg.DivisionByZeroError):
            await s.lane.fetchval("SELECT 1 / 0")
        with pytest.raises(asyncpg.UniqueViolationError):
            await s.lane.execute("INSERT INTO store_settings (key, value)"
                                 " VALUES ('fts_config', 'x')")
        assert await s.lane.fetchval(PID) == pid
        assert await s.lane.fetchrow("SELECT 1 AS one") == (1,)

    _pg(postgres_url, body)


def test_a_cancelled_call_gives_its_connection_back_and_leaves_no_statement_running(
        postgres_url: str) -> None:
    async def body(s: Any) -> None:
        pid = await s.lane.fetchval(PID)
        call = asyncio.create_task(s.lane.fetchval("SELECT pg_sleep(30)"))
        for _ in range(200):
            if await _sleeping(s, "30"):
                break
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(200):  # the pool waits for the cancellation, the server ends it
            if not await _sleeping(s, "30"):
                break
            await asyncio.sleep(0.01)
        assert await _sleeping(s, "30") == 0
        assert s.lane._held == 0 and not s.lane._idle  # the pool has it back
        assert isinstance(await s.lane.fetchval(PID), int)  # the lane goes on
        assert pid

    _pg(postgres_url, body)


def test_a_connection_the_server_ended_is_replaced_without_an_error(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        pid = await s.lane.fetchval(PID)
        assert await s.pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        for _ in range(200):  # the client sees the socket close
            if not await s.pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        other = await s.lane.fetchval(PID)
        assert other != pid and await s.lane.fetchval(PID) == other

    _pg(postgres_url, body)


def test_the_store_closes_while_a_lane_call_runs(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        await s.lane.fetchval(PID)  # one idle lane connection
        call = asyncio.create_task(s.lane.fetchval("SELECT 7 FROM pg_sleep(0.3)"))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(s.close(), 10)  # waits for the call, then closes everything
        assert await call == 7

    _pg(postgres_url, body)


def test_a_pool_of_one_connection_has_no_lane(postgres_url: str) -> None:
    async def body(s: Any) -> None:
        assert s.lane is s.pool
        assert isinstance(await s.lane.fetchval(PID), int)

    _pg(postgres_url, body, min_size=1, max_size=1)
