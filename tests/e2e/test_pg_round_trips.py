"""Issue 19's regression guard: what a stateful turn costs Postgres, in statements.

Every statement memproxy sends on its pooled connections is counted (asyncpg's query logger,
installed on each connection the store opens), through a real server, the openai SDK and the
scripted upstream. A turn that appends where this process's last turn in the conversation
ended must stay at: load the state, take the lease and store the input planned ahead in the
same statement (turn/ahead.py), then store the output and release the lease in the same
statement — two statements, both durable commits (one with `[database]
postgres_input_commit = "fast"`), each one round trip once its statement is prepared (asyncpg
caches prepared statements per connection: a second run of the same turn shape prepares
nothing). A turn that cannot be planned ahead takes one statement more: the read with the
lease (no WAL flush), then the input.
"""

from __future__ import annotations

import threading
import time

import pytest

from proxy.store.postgres import connections as pg_connections
from tests import storage

MODEL = "gpt-4o-mini"
# load + the lease + the input planned ahead (turn_state.load_sql), finish + release
MAX_STATEMENTS_PER_TURN = 2
# durable commits: the input before the model is called (unless postgres_input_commit is
# "fast"), the outcome after


def durable_write(sql: str) -> bool:
    """A statement that commits a write and waits for its WAL flush."""
    reads = sql.lstrip().upper().startswith("SELECT")
    return not reads and "set_config('synchronous_commit', 'off', true)" not in sql


class Recorder:
    """Statements and statement preparations on every connection the store opens."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statements: list[str] = []
        self.prepared: list[str] = []

    def __call__(self, record) -> None:
        with self.lock:
            self.statements.append(record.query)

    def settled(self) -> tuple[list[str], list[str]]:
        """What was sent since the last `take`, once nothing more arrives: the loggers run
        on the server's loop after their statement, and release_lease after the response."""
        seen = -1
        while seen != len(self.statements):
            seen = len(self.statements)
            time.sleep(0.3)
        return self.take()

    def take(self) -> tuple[list[str], list[str]]:
        with self.lock:
            out = (self.statements, self.prepared)
            self.statements, self.prepared = [], []
        return out


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    init = pg_connections.NoResetConnection.__init__

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_query_logger(rec)

    prepare = pg_connections.NoResetConnection._get_statement

    async def counting_prepare(self, query, *args, **kwargs):
        record_class = kwargs.get("record_class") or self._protocol.get_record_class()
        key = (query, record_class, bool(kwargs.get("ignore_custom_codec")))
        if not kwargs.get("use_cache", True) or self._stmt_cache.get(key) is None:
            with rec.lock:
                rec.prepared.append(query)
        return await prepare(self, query, *args, **kwargs)

    monkeypatch.setattr(pg_connections.NoResetConnection, "__init__", counting_init)
    monkeypatch.setattr(pg_connections.NoResetConnection, "_get_statement", counting_prepare)
    return rec


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize(("input_commit", "durable_commits"), [("durable", 2), ("fast", 1)])
def test_a_turn_on_postgres_is_two_statements_and_prepares_nothing_twice(
        recorder, make_proxy, fake_upstream, input_commit, durable_commits):
    proxy = make_proxy({"database": {"postgres_input_commit": input_commit}})
    client = proxy.client()

    def turn(text: str) -> None:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                       extra_headers={"X-Agent-Id": "rt"})

    turn("first")  # creates the agent and conversation, prepares the statements
    turn("second")  # learns that the client sends no history: not planned ahead
    turn("third")  # planned ahead: prepares the read that stores the input
    recorder.take()
    turn("fourth")
    statements, prepared = recorder.settled()
    # the request's API key is looked up again now and then: authentication, not the turn
    statements = [s for s in statements if "FROM api_keys" not in s]
    assert len(statements) <= MAX_STATEMENTS_PER_TURN, statements
    assert len([s for s in statements if durable_write(s)]) == durable_commits, statements
    assert prepared == []
    # and the turns are all there, each question with its answer
    stored = storage.roles_and_texts(storage.transcript(proxy.settings.database.url, "rt"))
    assert stored == [(role, text) for n, q in enumerate(("first", "second", "third", "fourth"), 1)
                      for role, text in (("user", q),
                                         ("assistant", f"Echo: {q} (saw {n} user messages)"))]
