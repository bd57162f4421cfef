"""Request ids and the access log against a real memproxy: the id a client sends (or one
memproxy makes) comes back on every response, reaches the upstream and marks every log
record of the request; one access line per request; no keys and no message text in logs."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from tests import secrets
from tests.fakes import Fault
from tests.openapi_check import validate_error
from tests.servers import run_memproxy_subprocess

MODEL = "gpt-4o-mini"
GENERATED = re.compile(r"[0-9a-f]{32}")


class Collected(logging.Handler):
    """Every record emitted while a test runs, from any thread (the server's included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logs() -> Iterator[Collected]:
    root = logging.getLogger()
    handler = Collected()
    previous = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def access_lines(logs: Collected, request_id: str) -> list[logging.LogRecord]:
    """The access-log records of one request, once written (after the response is sent)."""
    def found() -> list[logging.LogRecord]:
        return [r for r in logs.records
                if r.name == "memproxy.access" and r.request_id == request_id]

    wait_for(found, f"the access line of {request_id}")
    return found()


def chat(proxy, request_id: str | None = None, *, agent: str | None = "a", stream=False,
         text: str = "hello", key: str = secrets.CLIENT_KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if request_id is not None:
        headers["x-request-id"] = request_id
    if agent is not None:
        headers["x-agent-id"] = agent
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}
    return httpx.post(f"{proxy.base_url}/chat/completions", json=body, headers=headers,
                      timeout=30)


def test_a_clients_request_id_is_echoed_sent_upstream_and_on_its_log_records(
        make_proxy, fake_upstream, logs):
    proxy = make_proxy()
    response = chat(proxy, "client-rid-1")
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "client-rid-1"
    assert {r.headers.get("x-request-id") for r in fake_upstream.requests} == {"client-rid-1"}
    [line] = access_lines(logs, "client-rid-1")
    # records written by other code during the request (the upstream client's) carry it too;
    # a turn's JSON call is written by memproxy itself (upstream/direct.py), with httpx's line
    upstream_calls = [r for r in logs.records
                      if r.name in ("httpx", "memproxy.upstream")
                      and fake_upstream.url in r.getMessage()]
    assert upstream_calls and {r.request_id for r in upstream_calls} == {"client-rid-1"}


def test_memproxys_own_request_id_goes_upstream_on_every_kind_of_call(make_proxy, fake_upstream):
    """Without a client id, memproxy's id goes upstream: on a turn's JSON call (written
    directly), on a streamed turn and on a pass-through (both through httpx)."""
    proxy = make_proxy()
    for kind in ("turn", "stream", "pass-through"):
        before = len(fake_upstream.requests)
        response = chat(proxy, agent=None if kind == "pass-through" else "a",
                        stream=kind == "stream", text=f"hello {kind}")
        assert response.status_code == 200, kind
        own = response.headers["x-request-id"]
        sent = {r.headers.get("x-request-id") for r in fake_upstream.requests[before:]}
        assert sent == {own}, kind


@pytest.mark.parametrize("given", ["has space", "x" * 129, "tab\there"])
def test_an_unusable_request_id_is_replaced_by_a_fresh_one(make_proxy, fake_upstream, logs,
                                                           given):
    proxy = make_proxy()
    response = chat(proxy, given)
    made = response.headers["x-request-id"]
    assert GENERATED.fullmatch(made)
    assert fake_upstream.last.headers["x-request-id"] == made  # a stateful turn's own calls
    assert len(access_lines(logs, made)) == 1


def test_pass_through_forwards_the_clients_header_unchanged_or_adds_the_id(
        make_proxy, fake_upstream, logs):
    proxy = make_proxy()
    raw = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    mine = httpx.post(f"{proxy.base_url}/chat/completions", content=raw,
                      headers={"x-request-id": "not sane but mine",
                               "content-type": "application/json"})
    assert fake_upstream.last.headers["x-request-id"] == "not sane but mine"
    assert fake_upstream.last.body == raw
    assert GENERATED.fullmatch(mine.headers["x-request-id"])
    none = httpx.post(f"{proxy.base_url}/chat/completions", content=raw,
                      headers={"content-type": "application/json"})
    assert fake_upstream.last.headers["x-request-id"] == none.headers["x-request-id"]
    assert access_lines(logs, none.headers["x-request-id"])[0].fields["mode"] == "passthrough"


def test_a_pass_through_answer_keeps_the_upstreams_request_id(make_proxy, fake_upstream, logs):
    proxy = make_proxy()
    fake_upstream.push(Fault.http(429, "Slow down.", type="requests", code="rate_limit_exceeded",
                                  headers={"x-request-id": "req_upstream_9"}))
    response = chat(proxy, "client-rid-2", agent=None)
    assert response.status_code == 429
    assert response.headers.get_list("x-request-id") == ["req_upstream_9"]
    [line] = access_lines(logs, "client-rid-2")
    assert line.fields["upstream_request_id"] == "req_upstream_9"
    assert line.fields["status"] == 429


def test_every_response_carries_a_request_id(make_proxy, fake_upstream):
    proxy = make_proxy({"auth": {"keys": {secrets.TENANT_A_KEY: "a"}}})
    auth = {"authorization": f"Bearer {secrets.TENANT_A_KEY}"}
    http = proxy.http(headers=auth)
    responses = {
        "stateful": chat(proxy, key=secrets.TENANT_A_KEY),
        "stream": chat(proxy, key=secrets.TENANT_A_KEY, stream=True),
        "pass-through": chat(proxy, key=secrets.TENANT_A_KEY, agent=None),
        "401": chat(proxy, key=secrets.WRONG_KEY),
        "400": http.post("/v1/chat/completions", json={"model": MODEL, "messages": []},
                         headers={"x-agent-id": "a"}),
        "404 route": http.get("/v1/nothing-here"),
        "405": http.get("/v1/chat/completions"),
        "agents API": http.get("/v1/agents/a/context"),
        "agents API 404": http.get("/v1/agents/nobody/context"),
        "models": http.get("/v1/models"),
        "embeddings": http.post("/v1/embeddings", json={"model": "e", "input": "x"}),
        "liveliness": http.get("/health/liveliness"),
        "readiness": http.get("/health/readiness"),
        "metrics": http.get("/metrics"),
    }
    for name, response in responses.items():
        assert GENERATED.fullmatch(response.headers.get("x-request-id", "")), name
        if response.status_code >= 400:
            validate_error(response.json())
    assert len({r.headers["x-request-id"] for r in responses.values()}) == len(responses)


def test_one_access_line_per_request_with_the_turns_fields(make_proxy, fake_upstream, logs):
    proxy = make_proxy()
    chat(proxy, "rid-plain", agent="ada")
    streamed = chat(proxy, "rid-stream", agent="ada", stream=True)
    assert streamed.text.endswith("data: [DONE]\n\n")
    chat(proxy, "rid-pass", agent=None)
    plain, = access_lines(logs, "rid-plain")
    stream, = access_lines(logs, "rid-stream")
    passed, = access_lines(logs, "rid-pass")
    for line in (plain, stream):
        fields = line.fields
        assert (fields["method"], fields["path"], fields["status"]) == (
            "POST", "/v1/chat/completions", 200)
        assert (fields["mode"], fields["agent"], fields["conversation"], fields["model"]) == (
            "stateful", "ada", "default", MODEL)
        assert fields["steps"] >= 1
        assert fields["duration_ms"] >= fields["overhead_ms"] >= 0
        assert fields["upstream_ms"] >= 0 and "turn" in fields
        assert line.levelno == logging.INFO
    assert (plain.fields["stream"], stream.fields["stream"]) == (False, True)
    assert passed.fields["mode"] == "passthrough" and "agent" not in passed.fields
    # each request once, nothing else logged as an access line meanwhile
    ids = [r.request_id for r in logs.records if r.name == "memproxy.access"]
    assert sorted(ids) == ["rid-pass", "rid-plain", "rid-stream"]


def test_no_key_and_no_message_text_reaches_the_logs(make_proxy, fake_upstream, logs):
    proxy = make_proxy({
        "upstream": {"api_key": secrets.UPSTREAM_KEY, "max_retries": 0},
        "auth": {"keys": {secrets.TENANT_A_KEY: "a"}, "admin_keys": [secrets.ADMIN_KEY]},
    })
    key = secrets.TENANT_A_KEY
    client = proxy.client(api_key=key)
    said = f"Remember this: {secrets.MESSAGE_SECRET}"
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": said}],
                                   extra_headers={"X-Agent-Id": "vault"})
    for _chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": said}], stream=True,
            extra_headers={"X-Agent-Id": "vault"}):
        pass
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": said}])
    # error paths: a wrong key, an upstream that echoes the key it got, a broken stream
    assert chat(proxy, text=said, key=secrets.WRONG_KEY).status_code == 401
    fake_upstream.push(Fault.http(401, f"Incorrect API key provided: {secrets.UPSTREAM_KEY}",
                                  code="invalid_api_key"))
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": said}],
                                       extra_headers={"X-Agent-Id": "vault"})
    fake_upstream.push(Fault.stream_error(after_chunks=2))
    assert "error" in chat(proxy, text=said, key=key, stream=True, agent="vault").text
    proxy.http(headers={"authorization": f"Bearer {secrets.ADMIN_KEY}"}).get(
        "/v1/agents/vault/context")
    wait_for(lambda: sum(r.name == "memproxy.access" for r in logs.records) >= 7,
             "the access lines")
    text = "\n".join(secrets.render(r) for r in logs.records)
    assert "memproxy.access" in text and "vault" in text  # the log is there ...
    assert secrets.find_secrets(text) == []  # ... without keys or what the user said
    assert "Remember this" not in text


def test_include_content_puts_the_message_text_in_the_access_line(make_proxy, fake_upstream,
                                                                  logs):
    proxy = make_proxy({"logging": {"include_content": True}})
    chat(proxy, "rid-content", text="the heron is blue")
    [line] = access_lines(logs, "rid-content")
    assert line.fields["input"] == "the heron is blue"


def test_without_include_content_no_text_is_logged(make_proxy, fake_upstream, logs):
    proxy = make_proxy()
    chat(proxy, "rid-quiet", text="the heron is blue")
    [line] = access_lines(logs, "rid-quiet")
    assert "input" not in line.fields
    assert "heron" not in "\n".join(secrets.render(r) for r in logs.records)


def test_json_logs_from_the_server_process(database_url, fake_upstream):
    """`memproxy serve` with `[logging] format = "json"`: every line it writes is a JSON
    object, and the access line of a request carries that request's id."""
    args = ["--database-url", database_url, "--upstream-url", fake_upstream.url]
    env = {"MEMPROXY_LOGGING_FORMAT": "json", "MEMPROXY_UPSTREAM_API_KEY": secrets.UPSTREAM_KEY}
    with run_memproxy_subprocess(args, env=env) as proc:
        response = httpx.post(
            f"{proc.base_url}/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": secrets.MESSAGE_SECRET}]},
            headers={"x-request-id": "json-rid-1", "x-agent-id": "j",
                     "authorization": f"Bearer {secrets.CLIENT_KEY}"}, timeout=30)
        assert response.status_code == 200
    lines = [line for line in proc.output().splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"serve wrote a line that is not JSON (is configure_logging(settings) "
                        f"called by `serve`?): {line[:200]!r}")
    access = [e for e in entries if e["logger"] == "memproxy.access"
              and e["request_id"] == "json-rid-1"]
    assert len(access) == 1
    assert (access[0]["path"], access[0]["status"], access[0]["mode"]) == (
        "/v1/chat/completions", 200, "stateful")
    assert {"ts", "level", "message"} <= set(access[0])
    assert secrets.find_secrets("\n".join(lines)) == []
