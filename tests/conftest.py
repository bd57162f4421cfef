"""Shared fixtures: a real fake upstream, and a factory for real memproxy servers.

- `fake_upstream`: a fresh `FakeUpstream` per test, served over TCP; `.url` ends in `/v1`.
  (One uvicorn server per session fronts each test's fake through an `AppSwitch`, so the
  fixture costs nothing to start.)
- `make_proxy(overrides=None)`: start memproxy (`proxy.app.create_app`) in a uvicorn thread
  with a SQLite database in `tmp_path` and the fake as its upstream; returns a
  `ProxyServer`. Calling it again after `.stop()` reuses the same database (a restart).
  Every server it started is stopped at teardown.
- `run_log` (session, automatic): every log record of the whole run (root logger at DEBUG)
  and the output of every memproxy subprocess go to `<session tmp>/run-log/run.log`; the run
  fails at the end if any secret of tests/secrets.py appears in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests import secrets, servers
from tests.fakes import FakeUpstream
from tests.servers import AppSwitch, ServerThread
from tests.store_backends import BACKENDS, postgres_database


def pytest_configure(config: pytest.Config) -> None:
    # Every record is created, whatever its level, for `run_log` below. Set before pytest's
    # logging plugin saves and restores the root level around each test phase; what pytest
    # itself keeps is its `log_level` (pyproject.toml).
    logging.getLogger().setLevel(logging.DEBUG)


@pytest.fixture(scope="session", autouse=True)
def run_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[secrets.RunLog]:
    """Capture every log record and subprocess output of the run; fail if a secret leaked."""
    handler = secrets.RunLog(tmp_path_factory.mktemp("run-log") / "run.log")
    root = logging.getLogger()
    root.addHandler(handler)
    servers.OUTPUT_SINK = handler.append
    try:
        yield handler
    finally:
        servers.collect_process_output()
        servers.OUTPUT_SINK = None
        root.removeHandler(handler)
        leaks = handler.leaks()
        handler.finish()
    if leaks:
        pytest.fail(
            f"secrets reached the logs of this test run: {leaks!r} (see {handler.path}); "
            "keys, Authorization headers and message text must never be logged",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def _upstream_server() -> Iterator[tuple[ServerThread, AppSwitch]]:
    switch = AppSwitch()
    with ServerThread(switch) as server:
        yield server, switch


@pytest.fixture
def fake_upstream(_upstream_server: tuple[ServerThread, AppSwitch]) -> Iterator[FakeUpstream]:
    """A fresh scripted upstream for this test, reachable at `fake_upstream.url` (…/v1)."""
    with servers.scripted_upstream(*_upstream_server) as fake:
        yield fake


class ProxyServer:
    """A memproxy app served by uvicorn in a thread, with client helpers."""

    def __init__(self, settings: Any, server: ServerThread) -> None:
        self.settings = settings
        self.server = server
        self.app = server.app

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return self.server.url

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, for OpenAI clients."""
        return f"{self.url}/v1"

    def client(self, **kw: Any) -> openai.OpenAI:
        """An `openai.OpenAI` on this server: api_key `secrets.CLIENT_KEY`, no retries, 30 s
        timeout, unless given; `base_url` may be overridden (e.g. an `/agents/{a}/v1` path)."""
        kw.setdefault("api_key", secrets.CLIENT_KEY)
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30.0)
        kw.setdefault("base_url", self.base_url)
        return openai.OpenAI(**kw)

    def async_client(self, **kw: Any) -> openai.AsyncOpenAI:
        """Like `client`, asynchronous."""
        kw.setdefault("api_key", secrets.CLIENT_KEY)
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30.0)
        kw.setdefault("base_url", self.base_url)
        return openai.AsyncOpenAI(**kw)

    def http(self, **kw: Any) -> httpx.Client:
        """A plain `httpx.Client` with `base_url` = the server root (for REST endpoints)."""
        kw.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, **kw)

    def stop(self) -> None:
        """Stop the server (runs the app's lifespan shutdown). Idempotent."""
        self.server.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for one test, once per backend: every test that starts memproxy runs
    on SQLite and on Postgres (test ids `[sqlite]`, `[postgres]`)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/memproxy.db"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def make_proxy(
    tmp_path: Path, fake_upstream: FakeUpstream, database_url: str
) -> Iterator[Callable[..., ProxyServer]]:
    """Factory: `make_proxy(overrides=None) -> ProxyServer` (see module doc)."""
    started: list[ProxyServer] = []

    def factory(overrides: dict[str, dict[str, Any]] | None = None) -> ProxyServer:
        from proxy.app import create_app
        from proxy.config import load_settings, merge

        base = {
            "database": {"url": database_url},
            "upstream": {"base_url": fake_upstream.url},
        }
        settings = load_settings(environ={}, overrides=merge(base, overrides or {}))
        server = ProxyServer(settings, ServerThread(create_app(settings)))
        started.append(server)
        server.server.start()
        return server

    yield factory
    for server in reversed(started):
        server.stop()


@pytest.fixture
def make_proxy_once(make_proxy: Callable[..., ProxyServer], fake_upstream: FakeUpstream):
    """One memproxy for a whole hypothesis test (examples use separate conversations)."""
    return make_proxy(), fake_upstream
