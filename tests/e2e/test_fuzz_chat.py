"""Fuzzing `POST /v1/chat/completions` (issue #8.3) against one real memproxy per test.

Hypothesis sends valid, near-valid and garbage bodies (tests/fuzz_strategies.py) with and
without agent headers. The fake upstream answers every request the OpenAI API would accept and
refuses the rest with a 400, like OpenAI; its responses carry `x-fuzz-upstream`, so a status
that memproxy merely passed through is told apart from memproxy's own. Properties, per case:

- memproxy itself never answers 5xx (and never 409: requests here are never concurrent, so a
  busy conversation would mean a lock left held);
- every non-2xx body is the OpenAI error shape;
- every 2xx validates against the OpenAI description: a `chat.completion`, or a stream of
  `chat.completion.chunk`s ending in `data: [DONE]`;
- pass-through forwards the exact bytes; with memory on, unknown top-level fields reach the
  upstream with their values unchanged (unless the request was a replay of a stored answer:
  a repeated `Idempotency-Key` or retry marker).

Derandomized (`derandomize=True`, no example database) so CI runs the same cases every time.
SQLite runs ≥ 5,000 cases in all; Postgres a few hundred. `MEMPROXY_FUZZ_SCALE=0.1` (or 10)
scales the counts for a quick (or deeper) local run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from tests.fakes import FakeUpstream, Fault, prompt_tokens, scripted_model
from tests.fuzz_strategies import (
    UNKNOWN_PREFIX,
    FuzzCase,
    garbage_case,
    near_valid_case,
    valid_case,
)
from tests.openapi_check import validate_chat_chunk, validate_chat_completion, validate_error
from tests.servers import ServerThread

pytestmark = pytest.mark.slow

UPSTREAM_MARK = "x-fuzz-upstream"
LIMITS = {"max_body_bytes": 512 * 1024, "max_messages": 100, "max_message_chars": 100_000}
# (valid, near-valid, garbage) cases per backend: 5,100 on SQLite
EXAMPLES = {"sqlite": (2000, 2300, 800), "postgres": (150, 200, 80)}


def _fake_rejects(body: dict[str, Any]) -> str | None:
    """Why the OpenAI API would refuse `body` with a 400 (the checks the fake relies on)."""
    if not isinstance(body.get("model"), str):
        return "model must be a string"
    if not isinstance(body.get("stream", False), bool) or body.get("n", 1) not in (1, None):
        return "bad stream or n"
    if not isinstance(body.get("stream_options") or {}, dict):
        return "bad stream_options"
    for message in body["messages"]:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return "a message is not an object with a role"
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and isinstance(p.get("text", ""), str)
                       for p in content):
                return "bad content part"
        elif content is not None and not isinstance(content, str):
            return "bad content"
        for call in message.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if not (isinstance(fn, dict) and isinstance(fn.get("name"), str)
                    and isinstance(fn.get("arguments"), str)):
                return "bad tool call"
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str)):
            return "bad tool"
    return None


def strict_responder(body: dict[str, Any]):
    """The scripted model for bodies OpenAI accepts; a 400 for the rest (never a crash)."""
    try:
        json.dumps(body, ensure_ascii=False).encode()  # lone surrogates: not valid unicode
        problem = _fake_rejects(body)
        if problem is None:
            prompt_tokens(body)  # what the fake's usage needs
            return scripted_model(body)
    except Exception as exc:  # a shape the checks above did not foresee
        problem = f"cannot read the body ({type(exc).__name__})"
    return Fault.http(400, f"fake upstream: {problem}")


class FuzzUpstream:
    """ASGI wrapper of the fake upstream: every response carries `x-fuzz-upstream: 1`, and a
    body nested deeper than Python's json module can read gets the 400 OpenAI would send
    instead of crashing the fake (pass-through hands such bodies over unread)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            """The body once, then the real channel (a stream waits on it for a disconnect)."""
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def marked(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (UPSTREAM_MARK.encode(), b"1")]}
            await send(message)

        try:
            json.loads(raw)
        except RecursionError:
            refusal = Fault.http(400, "fake upstream: the body is nested too deeply")
            response = JSONResponse(refusal.body, status_code=400)
            return await response(scope, replay, marked)
        except ValueError:
            pass  # the fake itself answers malformed JSON
        await self.app(scope, replay, marked)


@pytest.fixture
def fuzz_stack(make_proxy, database_url) -> Iterator[tuple[Any, FakeUpstream, str]]:
    """(memproxy, its fake upstream, backend name): one server pair for the whole test."""
    fake = FakeUpstream(responder=strict_responder)
    with ServerThread(FuzzUpstream(fake.app)) as upstream:
        fake.url = f"{upstream.url}/v1"
        proxy = make_proxy({"upstream": {"base_url": fake.url, "max_retries": 0},
                            "limits": LIMITS})
        yield proxy, fake, "sqlite" if database_url.startswith("sqlite") else "postgres"
        proxy.stop()


def check(case: FuzzCase, response: httpx.Response, fake: FakeUpstream, before: int) -> None:
    """The properties of one case (see the module doc)."""
    status, passed_through = response.status_code, response.headers.get(UPSTREAM_MARK) == "1"
    where = f"{case.path} {case.headers} -> {status}: {response.content[:300]!r}"
    assert status < 500 or (passed_through and not case.stateful_headers), f"5xx: {where}"
    assert status != 409, f"a conversation stayed busy: {where}"
    if not 200 <= status < 300:
        assert response.headers.get("content-type", "").startswith("application/json"), where
        validate_error(response.json())
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        _check_stream(response.text, where)
    else:
        validate_chat_completion(response.json())
    sent = fake.requests[before:]
    if not case.stateful_headers:
        assert sent and sent[0].body == case.raw, f"pass-through changed the body: {where}"
    elif isinstance(case.body, dict) and response.headers.get("x-memproxy-replayed") != "true":
        unknown = {k: v for k, v in case.body.items() if k.startswith(UNKNOWN_PREFIX)}
        assert any(all(k in r.json and r.json[k] == v for k, v in unknown.items())
                   for r in sent), f"unknown fields lost on the way upstream: {where}"


def _check_stream(text: str, where: str) -> None:
    # SSE lines end at CR, LF or CRLF only (str.splitlines would also split at U+2028, \x85...)
    lines = re.split(r"\r\n|\r|\n", text)
    events = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", f"stream without [DONE]: {where}"
    for data in events[:-1]:
        obj = json.loads(data)
        assert "error" not in obj, f"error event in a 200 stream: {where}"
        validate_chat_chunk(obj)


def run_fuzz(stack: tuple[Any, FakeUpstream, str], strategy: st.SearchStrategy[FuzzCase],
             examples: int) -> None:
    proxy, fake, _ = stack
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case: FuzzCase) -> None:
            before = len(fake.requests)
            try:
                response = client.post(case.path, content=case.raw, headers=case.headers)
            except httpx.TimeoutException:
                raise AssertionError(f"no answer within 60 s: {case.path} {case.headers} "
                                     f"{case.raw[:2000]!r}") from None
            check(case, response, fake, before)

        fuzz()
        # Still serving normally afterwards: nothing wedged.
        ok = client.post("/v1/chat/completions", headers={"X-Agent-Id": "fz-a"},
                         json={"model": "gpt-4o-mini",
                               "messages": [{"role": "user", "content": "still there?"}]})
        assert ok.status_code == 200, ok.text
        validate_chat_completion(ok.json())


def _examples(stack: tuple[Any, FakeUpstream, str], family: int) -> int:
    """The case count; `MEMPROXY_FUZZ_SCALE` multiplies it for a quicker or deeper local run."""
    scale = float(os.environ.get("MEMPROXY_FUZZ_SCALE") or 1)
    return max(1, round(EXAMPLES[stack[2]][family] * scale))


def test_valid_bodies(fuzz_stack):
    run_fuzz(fuzz_stack, valid_case(), _examples(fuzz_stack, 0))


def test_near_valid_bodies(fuzz_stack):
    run_fuzz(fuzz_stack, near_valid_case(), _examples(fuzz_stack, 1))


def test_garbage(fuzz_stack):
    run_fuzz(fuzz_stack, garbage_case(), _examples(fuzz_stack, 2))



@pytest.mark.parametrize("messages, tools, param", [
    ([{"role": "user", "content": "", "tool_calls": "Use tool x"}], None,
     "messages[0].tool_calls"),
    ([{"role": "user", "content": "hi", "tool_calls": [5]}], None, "messages[0].tool_calls[0]"),
    ([{"role": "assistant", "content": "x", "tool_calls": [{"id": 1, "function": {"name": "f"}}]},
      {"role": "user", "content": "hi"}], None, "messages[0].tool_calls[0]"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": "f"}]},
      {"role": "user", "content": "hi"}], None, "messages[0].tool_calls[0]"),
    ([{"role": "user", "content": "hi"}], [5], "tools[0]"),
    ([{"role": "user", "content": "hi"}], [{"type": "function", "function": "f"}], "tools[0]"),
])
def test_malformed_tool_calls_and_tools_are_400s_that_store_nothing(
        make_proxy, fake_upstream, messages, tools, param):
    """What the fuzzer found answered 500 (a crash hashing or storing the message): now a 400
    naming the field, before anything is stored or sent upstream."""
    from tests import storage

    proxy = make_proxy()
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": messages}
    if tools is not None:
        body["tools"] = tools
    response = httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=30,
                          headers={"X-Agent-Id": "fz-found"})
    assert response.status_code == 400, response.text
    validate_error(response.json())
    assert response.json()["error"]["param"] == param
    assert fake_upstream.requests == []
    assert storage.transcript(proxy.settings.database.url, "fz-found") == []


def test_tool_call_arguments_may_be_objects(make_proxy, fake_upstream):
    """Some OpenAI-compatible clients send arguments as JSON objects: still accepted."""
    proxy = make_proxy()
    call = {"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": {"q": "tea"}}}
    messages = [{"role": "user", "content": "look it up"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "found"}]
    response = httpx.post(f"{proxy.base_url}/chat/completions", timeout=30,
                          headers={"X-Agent-Id": "fz-args"},
                          json={"model": "gpt-4o-mini", "messages": messages})
    assert response.status_code == 200, response.text
    validate_chat_completion(response.json())
