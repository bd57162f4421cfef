"""Postgres plans that stay cheap (issue 19): memproxy's sessions run with JIT off, and the
tables a turn reads have planner statistics after open and after a large import
(proxy/store/postgres/statistics.py).

Without statistics the planner took the one-row `conversation_epoch` for ~2,000 rows, the turn
state query's cost passed `jit_above_cost`, and every turn spent 20-350 ms JIT-compiling a
0.2 ms query. These tests look at what the server reports (SHOW, the catalogs, EXPLAIN), not
at timings.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.store.postgres.store import PostgresStore
from tests import store_backends

postgres_url = store_backends.postgres_url  # fixture: a fresh Postgres database


def _pg(url: str, body: Any) -> Any:
    return store_backends.run_with_store(PostgresStore(url), body)


def test_every_pooled_session_runs_without_jit(postgres_url: str) -> None:
    async def body(s: PostgresStore) -> None:
        async with s.pool.acquire() as a, s.pool.acquire() as b:  # two connections
            for conn in (a, b):
                assert await conn.fetchval("SHOW jit") == "off"
                assert await conn.fetchval("SHOW application_name") == "memproxy"
            assert a is not b

    _pg(postgres_url, body)


def test_the_url_can_turn_jit_back_on(postgres_url: str) -> None:
    """A setting given in the URL's query wins over memproxy's default, as application_name
    always did."""
    async def body(s: PostgresStore) -> None:
        assert await s.pool.fetchval("SHOW jit") == "on"
        assert await s.pool.fetchval("SHOW application_name") == "mine"

    _pg(f"{postgres_url}?jit=on&application_name=mine", body)
