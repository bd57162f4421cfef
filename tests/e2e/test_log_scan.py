"""A whole small session at DEBUG, then a grep of everything logged for every secret and every
text the user or the model wrote (docs/operations.md#logs, docs/security.md).

Why: the code under test logs no content, but libraries below it do at DEBUG (aiosqlite logs
the arguments of every store call, the text of block and passage writes included), and a
client's `X-Request-Id` lands on every record of its request. So the check is on what was
really written by every logger of the process, not on what memproxy meant to write. The
session's run log (tests/conftest.py `run_log`) checks the same strings for the whole run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import httpx
import pytest

from tests import secrets
from tests.fakes import Reply

MODEL = "gpt-4o-mini"
GENERATED = re.compile(r"[0-9a-f]{32}")
BLOCK_TEXT = "Prefers to be called FAKE-BLOCK-TEXT-7d21a9"
PASSAGE_TEXT = "The spare key is under FAKE-PASSAGE-TEXT-55b0e3"
ANSWER_TEXT = "Noted, FAKE-ANSWER-TEXT-0a9f4c"
TEXTS = (BLOCK_TEXT, PASSAGE_TEXT, ANSWER_TEXT, "FAKE-BLOCK-TEXT", "FAKE-PASSAGE-TEXT",
         "FAKE-ANSWER-TEXT")


class Rendered(logging.Handler):
    """Every record of the test, from any thread, rendered completely (tests/secrets.py)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.request_ids: set[str | None] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(secrets.render(record))
        self.request_ids.add(getattr(record, "request_id", None))


@pytest.fixture
def debug_log() -> Iterator[Rendered]:
    root = logging.getLogger()
    handler, previous = Rendered(), root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


def test_a_debug_session_logs_no_secret_and_no_text(make_proxy, fake_upstream, debug_log):
    proxy = make_proxy({
        "logging": {"level": "DEBUG"},
        "upstream": {"api_key": secrets.UPSTREAM_KEY, "max_retries": 0,
                     "fallbacks": [{"base_url": fake_upstream.url,
                                    "api_key": secrets.FAKE_UPSTREAM_KEY}]},
        "auth": {"keys": {secrets.CLIENT_KEY: "t"}, "admin_keys": [secrets.ADMIN_KEY]},
    })
    own_key_id = f"rid-{secrets.CLIENT_KEY}"
    client = proxy.client()  # authenticates with secrets.CLIENT_KEY
    headers = {"X-Agent-Id": "vault", "X-Request-Id": own_key_id}
    # a turn in which the model edits a block and inserts a passage, then answers
    fake_upstream.push(
        Reply(tool_calls=[("core_memory_append", {"label": "human", "content": BLOCK_TEXT})]),
        Reply(tool_calls=[("archival_memory_insert", {"content": secrets.MEMORY_SECRET})]),
        Reply(content=ANSWER_TEXT))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": secrets.MESSAGE_SECRET}],
        extra_headers=headers)
    assert raw.parse().choices[0].message.content == ANSWER_TEXT
    replaced = raw.headers["x-request-id"]
    assert GENERATED.fullmatch(replaced)  # the client's id held its key: a fresh one instead
    assert fake_upstream.last.headers["x-request-id"] == replaced
    fake_upstream.push(Reply(content=ANSWER_TEXT))
    streamed = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": secrets.MESSAGE_SECRET}],
        stream=True, extra_headers={**headers, "X-Request-Id": secrets.UPSTREAM_KEY})
    assert ANSWER_TEXT in "".join(c.choices[0].delta.content or "" for c in streamed
                                  if c.choices)
    # the agents API: a block write, a passage load, a search that finds it
    api = proxy.http(headers={"authorization": f"Bearer {secrets.CLIENT_KEY}",
                              "x-request-id": f"{secrets.CLIENT_KEY[:8]}.ok"})
    put = api.put("/v1/agents/vault/blocks/human", json={"value": BLOCK_TEXT})
    assert put.status_code == 200, put.text
    assert put.headers["x-request-id"] == f"{secrets.CLIENT_KEY[:8]}.ok"  # no whole key: kept
    loaded = api.post("/v1/agents/vault/passages", json={"text": PASSAGE_TEXT, "tags": ["k"]})
    assert loaded.status_code == 201, loaded.text
    found = api.get("/v1/agents/vault/passages", params={"query": "spare key"}).json()["data"]
    assert PASSAGE_TEXT in [p["text"] for p in found]
    listed = api.get("/v1/agents/vault/passages").json()["data"]
    assert secrets.MEMORY_SECRET in [p["text"] for p in listed]  # the model's insert landed
    admin = httpx.get(f"{proxy.url}/v1/agents/vault/context", timeout=30, headers={
        "authorization": f"Bearer {secrets.ADMIN_KEY}", "x-request-id": secrets.ADMIN_KEY})
    assert GENERATED.fullmatch(admin.headers["x-request-id"])
    proxy.stop()  # shutdown logs too

    text = "\n".join(debug_log.lines)
    assert "aiosqlite" in text or "asyncpg" in text or "memproxy.access" in text
    assert sum(" memproxy.access:" in line for line in debug_log.lines) >= 7
    assert secrets.find_secrets(text) == []
    assert [t for t in TEXTS if t in text] == []
    assert own_key_id not in debug_log.request_ids


def test_include_content_lets_the_store_driver_log_at_debug(make_proxy, fake_upstream,
                                                            debug_log):
    """The cap is the only thing keeping content out: with `include_content` an operator
    who asks for everything gets the driver's records back (and they hold the text)."""
    proxy = make_proxy({"logging": {"level": "DEBUG", "include_content": True}})
    api = proxy.http()
    assert api.post("/v1/agents", json={"id": "open"}).status_code == 201
    assert api.put("/v1/agents/open/blocks/human",
                   json={"value": "plain FAKE-VISIBLE-TEXT"}).status_code == 200
    proxy.stop()
    driver = [line for line in debug_log.lines
              if line.startswith("DEBUG aiosqlite") or line.startswith("DEBUG asyncpg")]
    if "sqlite" in proxy.settings.database.url:
        assert any("FAKE-VISIBLE-TEXT" in line for line in driver)
    make_proxy().stop()  # the next app puts the cap back for the rest of the run
    assert logging.getLogger("aiosqlite").level >= logging.INFO
