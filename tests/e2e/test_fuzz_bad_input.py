"""Bad input everywhere but the chat body (issue #21.6): lone surrogates, deep nesting and huge
values in the Responses, Conversations and agents endpoints' bodies, query strings, path
segments and headers, and in what the upstream answers. Zero 5xx from memproxy itself: the
client's bad input is a 4xx, the upstream's a 502 (or, on a memory tool call, an error the
model is told about), and every error has the OpenAI shape.

Two Hypothesis tests per backend against one real memproxy each:

- `test_client_input`: a request built from `hostile_request()` — an endpoint, then a hostile
  value (`hostile_value`) put where a string goes in its body, its query or its path, with
  sometimes a header holding raw bytes no text can hold. Tenant-free (no keys), so the agent
  `fb-a` is a real one with blocks, passages and a conversation.
- `test_upstream_answers`: the upstream (`RawUpstream`, an ASGI app answering the bytes it is
  given) sends a completion, or a stream of chunks, holding a lone surrogate (as an escape or
  as raw CESU-8 bytes) in its text or in a memory tool call's arguments, or a body nested
  100,000 deep, to a stateful chat turn, a pass-through, and a Responses call.

Derandomized; `MEMPROXY_FUZZ_SCALE` scales the counts as in test_fuzz_chat.py.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fuzz_strategies import BAD_HEADER_BYTES, DEEP_MARK, LONE_SURROGATES
from tests.openapi_check import validate_error
from tests.servers import ServerThread

pytestmark = pytest.mark.slow

MODEL = "gpt-4o-mini"
AGENT = "fb-a"
EXAMPLES = {"sqlite": (300, 200), "postgres": (120, 80)}  # (client, upstream) cases


def _examples(database_url: str, family: int) -> int:
    scale = float(os.environ.get("MEMPROXY_FUZZ_SCALE") or 1)
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    return max(1, round(EXAMPLES[backend][family] * scale))


# --- the client's side ------------------------------------------------------------------------

# A value where a string goes. Surrogates are written by `_encode` either as `\udXXX` escapes or
# as raw CESU-8 bytes; DEEP_MARK placeholders become nesting deeper than Python's json module.
hostile_value = st.one_of(
    st.sampled_from(LONE_SURROGATES),
    st.sampled_from(LONE_SURROGATES).map(lambda s: f"text {s} around"),
    st.sampled_from([f"{DEEP_MARK}{d}:{k}" for d in (1100, 3000, 100_000)
                     for k in ("list", "dict")]),
    st.sampled_from(["x" * 300_000, "\u0000", "", "ok text", "🧠" * 10_000]),
)
hostile_query = st.sampled_from([
    "%ED%A0%80", "a%ED%B0%80b", "%uD800", "%C0%80", "%FF%FE", "%00", "\\ud800", "%F4%90%80%80",
    "x" * 10_000, "%E2%80%AE", "%25ED%25A0%2580",
])


def _put(body: Any, where: list[str], value: Any) -> Any:
    """`body` with `value` at the path `where` (keys; `#` is a list's first element)."""
    if not where:
        return value
    head, rest = where[0], where[1:]
    if head == "#":
        return [_put(body[0] if body else {}, rest, value)]
    out = dict(body)
    out[head] = _put(out.get(head, {}), rest, value)
    return out


# (method, path, a valid body or None, the places in it a hostile value may go)
ENDPOINTS: list[tuple[str, str, Any, list[list[str]]]] = [
    ("POST", "/v1/responses", {"model": MODEL, "input": "hi"},
     [["input"], ["instructions"], ["model"], ["metadata", "k"], ["previous_response_id"],
      ["x_fuzz"]]),
    ("POST", "/v1/responses", {"model": MODEL, "input": [
        {"type": "message", "role": "user", "content": "hi"}]},
     [["input", "#", "content"], ["input", "#", "role"]]),
    ("POST", "/v1/responses", {"model": MODEL, "input": [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "x"}]},
     [["input", "#", "arguments"], ["input", "#", "name"], ["input", "#", "call_id"]]),
    ("POST", f"/agents/{AGENT}/v1/responses", {"model": MODEL, "input": "hi"},
     [["input"], ["instructions"], ["metadata", "k"]]),
    ("POST", "/v1/conversations", {"metadata": {"k": "v"}, "items": [
        {"type": "message", "role": "user", "content": "hi"}]},
     [["metadata", "k"], ["items", "#", "content"], ["items"]]),
    ("POST", "/v1/agents", {"id": "fb-new"}, [["id"], ["metadata"], ["x_fuzz"]]),
    ("PATCH", f"/v1/agents/{AGENT}", {"metadata": {"k": "v"}}, [["metadata", "k"], ["model"]]),
    ("PUT", f"/v1/agents/{AGENT}/blocks/notes", {"value": "likes tea"},
     [["value"], ["description"], ["limit"]]),
    ("POST", f"/v1/agents/{AGENT}/passages", {"text": "a fact"}, [["text"], ["tags"]]),
    ("POST", f"/v1/agents/{AGENT}/conversations", {"id": "fb-chat"}, [["id"], ["x_fuzz"]]),
    ("POST", f"/v1/agents/{AGENT}/messages", {"messages": [{"role": "user", "content": "hi"}]},
     [["messages", "#", "content"], ["messages", "#", "role"], ["messages"]]),
    ("POST", f"/v1/agents/{AGENT}/messages/stream",
     {"messages": [{"role": "user", "content": "hi"}]}, [["messages", "#", "content"]]),
]
QUERIES = [f"/v1/agents/{AGENT}/passages?query=", f"/v1/agents/{AGENT}/messages?query=",
           "/v1/agents?after=", f"/v1/agents/{AGENT}/context?conversation=",
           f"/v1/agents/{AGENT}/export?tenant=", "/v1/conversations/conv_x/items?after=",
           f"/v1/agents/{AGENT}/conversations?after="]
PATHS = ["/v1/agents/{x}", f"/v1/agents/{AGENT}/blocks/{{x}}",
         f"/v1/agents/{AGENT}/conversations/{{x}}/messages", "/v1/responses/{x}",
         "/v1/conversations/{x}", "/agents/{x}/v1/responses"]


def _encode(body: Any, ascii_only: bool) -> bytes:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    def deep(match: re.Match[bytes]) -> bytes:
        depth = int(match.group(1))
        if match.group(2) == b"list":
            return b"[" * depth + b'"bottom"' + b"]" * depth
        return b'{"k":' * depth + b'"bottom"' + b"}" * depth

    return re.sub(rb'"' + DEEP_MARK.encode() + rb'(\d+):(list|dict)"', deep, raw)


@st.composite
def hostile_request(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, Any]]:
    """(method, path with query, body bytes or None, headers)."""
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(["X-Request-Id", "Idempotency-Key", "X-Agent-Id",
                                     "X-Conversation-Id", "OpenAI-Organization",
                                     "Authorization", "X-Memory"]))
        headers[name] = draw(BAD_HEADER_BYTES)
    kind = draw(st.sampled_from(["body"] * 6 + ["query", "path"]))
    if kind == "query":
        return "GET", draw(st.sampled_from(QUERIES)) + draw(hostile_query), None, headers
    if kind == "path":
        segment = draw(st.one_of(hostile_query, st.sampled_from(LONE_SURROGATES).map(
            lambda s: quote(s.encode("utf-8", "surrogatepass"), safe=""))))
        method = draw(st.sampled_from(["GET", "DELETE", "POST"]))
        path = draw(st.sampled_from(PATHS)).replace("{x}", segment)
        return method, path, b"{}" if method == "POST" else None, headers
    method, path, body, places = draw(st.sampled_from(ENDPOINTS))
    body = _put(body, draw(st.sampled_from(places)), draw(hostile_value))
    if draw(st.integers(0, 4)) == 0:
        body = _put(body, ["stream"], True)
    return method, path, _encode(body, draw(st.booleans())), headers


@pytest.fixture
def client_server(make_proxy, fake_upstream):
    proxy = make_proxy({"upstream": {"max_retries": 0}})
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        assert http.post("/v1/agents", json={"id": AGENT}).status_code == 201
        assert http.post(f"/v1/agents/{AGENT}/passages", json={"text": "tea"}).status_code == 201
        chat = http.post("/v1/chat/completions", headers={"X-Agent-Id": AGENT}, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hello"}]})
        assert chat.status_code == 200, chat.text
    return proxy


def _check(response: httpx.Response, where: str, allowed_5xx: tuple[int, ...] = ()) -> None:
    status = response.status_code
    assert status < 500 or status in allowed_5xx, f"{status}: {where}: {response.text[:500]}"
    if status >= 400 and response.request.method != "HEAD":
        assert response.headers.get("content-type", "").startswith("application/json"), where
        validate_error(response.json())


def test_client_input(client_server, database_url):
    with httpx.Client(base_url=client_server.url, timeout=60) as http:
        @settings(max_examples=_examples(database_url, 0), deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        @given(request=hostile_request())
        def fuzz(request: tuple[str, str, bytes | None, dict[str, Any]]) -> None:
            method, path, raw, headers = request
            response = http.request(method, path, content=raw, headers=headers)
            _check(response, f"{method} {path} {headers} {(raw or b'')[:300]!r}")

        fuzz()
        still = http.get(f"/v1/agents/{AGENT}/blocks")
        assert still.status_code == 200, still.text


# --- the upstream's side ----------------------------------------------------------------------

class RawUpstream:
    """An OpenAI-compatible upstream answering queued raw bytes (then a plain completion)."""

    def __init__(self) -> None:
        self.queue: deque[tuple[bytes, str]] = deque()
        self.url = ""
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"])])

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        body = await request.body()
        stream = b'"stream":true' in body.replace(b" ", b"")
        if self.queue:
            raw, media = self.queue.popleft()
            return Response(raw, media_type=media)
        return Response(_sse([_chunk({"content": "fine"}, "stop")]) if stream
                        else _completion({"role": "assistant", "content": "fine"}),
                        media_type="text/event-stream" if stream else "application/json")


def _completion(message: dict[str, Any], finish: str = "stop") -> bytes:
    return json.dumps({"id": "chatcmpl-raw", "object": "chat.completion", "created": 1,
                       "model": MODEL, "choices": [{"index": 0, "message": message,
                                                    "finish_reason": finish}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 1,
                                 "total_tokens": 6}}).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1,
            "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + \
        b"data: [DONE]\n\n"


def _lone(text: str, raw_bytes: bool) -> bytes:
    """`text` as JSON string bytes with its surrogates escaped, or as raw CESU-8 bytes."""
    if raw_bytes:
        return b'"' + text.encode("utf-8", "surrogatepass") + b'"'
    return json.dumps(text).encode()


@st.composite
def hostile_answer(draw: st.DrawFn, stream: bool) -> bytes:
    lone = draw(st.sampled_from(LONE_SURROGATES))
    raw_bytes = draw(st.booleans())
    what = draw(st.sampled_from(["content", "tool_args", "tool_args", "deep", "deep_args",
                                 "tool_name"]))
    tool = draw(st.sampled_from(["core_memory_append", "archival_memory_insert",
                                 "conversation_search", "client_tool"]))
    marker = b'"@@HOSTILE@@"'
    if what == "content":
        message: dict[str, Any] = {"role": "assistant", "content": "@@HOSTILE@@"}
        value = _lone(f"answer {lone}", raw_bytes)
    elif what == "deep":
        message = {"role": "assistant", "content": "deep", "x_extra": "@@HOSTILE@@"}
        value = b"[" * 100_000 + b"]" * 100_000
    else:
        if what == "tool_args":
            args = json.dumps({"label": "human", "content": f"x{lone}y", "query": lone})
            value = _lone(args, raw_bytes)
        elif what == "deep_args":
            value = json.dumps("[" * 50_000 + "]" * 50_000).encode()
        else:
            value = _lone(lone, raw_bytes)
        name = "@@HOSTILE@@" if what == "tool_name" else tool
        message = {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_h", "type": "function",
            "function": {"name": name, "arguments": "@@HOSTILE@@" if what != "tool_name"
                         else "{}"}}]}
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    if not stream:
        return _completion(message, finish).replace(marker, value)
    delta = {k: v for k, v in message.items() if k != "role"}
    if "tool_calls" in delta:
        delta["tool_calls"] = [{**delta["tool_calls"][0], "index": 0}]
    raw = _sse([_chunk({"role": "assistant"}), _chunk(delta), _chunk({}, finish)])
    return raw.replace(marker, value)


@pytest.fixture
def upstream_stack(make_proxy):
    raw = RawUpstream()
    with ServerThread(raw.app) as server:
        raw.url = f"{server.url}/v1"
        # no circuit breaker: every answer here is bad on purpose, none may pause the next
        proxy = make_proxy({"upstream": {"base_url": raw.url, "max_retries": 0,
                                         "circuit_failures": 0}})
        yield proxy, raw
        proxy.stop()


def test_upstream_answers(upstream_stack, database_url):
    proxy, raw = upstream_stack
    with httpx.Client(base_url=proxy.url, timeout=60) as http:
        @settings(max_examples=_examples(database_url, 1), deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def fuzz(data: st.DataObject) -> None:
            stream = data.draw(st.booleans())
            route = data.draw(st.sampled_from(["stateful", "passthrough", "responses",
                                               "agent_responses"]))
            answer = data.draw(hostile_answer(stream))
            raw.queue.clear()
            raw.queue.append((answer, "text/event-stream" if stream else "application/json"))
            if route in ("stateful", "passthrough"):
                headers = {"X-Agent-Id": "fb-up"} if route == "stateful" else {}
                response = http.post("/v1/chat/completions", headers=headers, json={
                    "model": MODEL, "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]})
            else:
                path = "/v1/responses" if route == "responses" else "/agents/fb-up/v1/responses"
                response = http.post(path, json={"model": MODEL, "input": "hi",
                                                 "stream": stream})
            where = f"{route} stream={stream} {answer[:300]!r}"
            # a pass-through relays the upstream's bytes; memproxy itself says 502 at worst
            _check(response, where, allowed_5xx=(502,))

        fuzz()
        raw.queue.clear()
        ok = http.post("/v1/chat/completions", headers={"X-Agent-Id": "fb-up"}, json={
            "model": MODEL, "messages": [{"role": "user", "content": "still there?"}]})
        assert ok.status_code == 200, ok.text
