"""The upstream client against a mocked upstream (respx / httpx.MockTransport), and the SSE parser.

Coroutines run with `asyncio.run` inside plain tests: no pytest-asyncio needed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import __version__
from proxy.config import UpstreamSettings
from proxy.upstream import (
    Route,
    SSEDecoder,
    SSEEvent,
    UpstreamClient,
    UpstreamError,
    aiter_sse,
)
from proxy.upstream import client as client_module
from proxy.upstream.errors import (
    BACKOFF_CAP_S,
    backoff_delay,
    error_from_response,
    error_from_transport,
    parse_retry_after,
)
from tests import secrets

BASE = "http://upstream.test/v1"
KEY = secrets.UPSTREAM_KEY
CLIENT = secrets.CLIENT_KEY

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-test",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


def make_client(
    transport: httpx.AsyncBaseTransport | None = None, **overrides: Any
) -> tuple[UpstreamClient, list[float]]:
    """A client whose sleeps are recorded instead of waited for."""
    values: dict[str, Any] = {"base_url": BASE, "api_key": KEY, "max_retries": 2}
    values.update(overrides)
    client = UpstreamClient(UpstreamSettings(**values), transport=transport)
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    client.sleep = fake_sleep
    return client, sleeps


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def openai_error(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def call_chat(client: UpstreamClient, api_key: str | None = KEY) -> dict[str, Any]:
    try:
        return await client.chat(BODY, api_key=api_key)
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- chat()


@respx.mock
def test_chat_success_sends_key_user_agent_and_json() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(200, json=COMPLETION)
    )
    client, sleeps = make_client()
    assert run(call_chat(client)) == COMPLETION
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["user-agent"] == f"memproxy/{__version__}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == BODY
    assert sleeps == []


@respx.mock
def test_cookies_an_upstream_sets_are_never_sent_again() -> None:
    """One upstream client serves every tenant: a cookie set in one response (a load
    balancer's, say) must not ride along on the next request, which may be another client's."""
    route = respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(
        200, json=COMPLETION, headers={"set-cookie": "session=alice; Path=/"}))
    client, _ = make_client()

    async def twice() -> None:
        try:
            await client.chat(BODY, api_key=KEY)
            await client.chat(BODY, api_key=KEY)
        finally:
            await client.aclose()

    run(twice())
    assert len(route.calls) == 2
    assert all("cookie" not in call.request.headers for call in route.calls)


@respx.mock
def test_chat_without_key_sends_no_authorization() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(200, json=COMPLETION)
    )
    client, _ = make_client(api_key=None)
    run(call_chat(client, api_key=None))
    assert "authorization" not in route.calls.last.request.headers


@respx.mock
def test_4xx_openai_error_passes_through_unchanged_and_is_not_retried() -> None:
    body = openai_error(
        "The model `gpt-x` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )
    route = respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(404, json=body, headers={"x-request-id": "req-1"})
    )
    client, sleeps = make_client()
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    err = info.value
    assert err.status == 404
    assert err.body == body
    assert err.headers == {"x-request-id": "req-1"}
    assert err.retryable is False
    assert route.call_count == 1 and sleeps == []


@respx.mock
def test_non_json_500_is_wrapped_and_truncated() -> None:
    html = "<html><body>Internal Server Error</body></html>" * 100
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(500, text=html))
    client, _ = make_client(max_retries=0)
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    error = info.value.body["error"]
    assert info.value.status == 500
    assert error["type"] == "upstream_error"
    assert error["message"].startswith("upstream returned HTTP 500: <html>")
    assert len(error["message"]) < 600
    assert set(error) == {"message", "type", "param", "code"}


@respx.mock
def test_retry_after_is_honoured_then_success() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[
            httpx.Response(
                429,
                json=openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
                headers={"Retry-After": "7"},
            ),
            httpx.Response(200, json=COMPLETION),
        ]
    )
    client, sleeps = make_client()
    assert run(call_chat(client)) == COMPLETION
    assert route.call_count == 2
    assert sleeps == [7.0]


@respx.mock
def test_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=10)
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": format_datetime(when, usegmt=True)}),
            httpx.Response(200, json=COMPLETION),
        ]
    )
    client, sleeps = make_client()
    run(call_chat(client))
    assert len(sleeps) == 1 and 8.0 <= sleeps[0] <= 10.0


@respx.mock
def test_retry_after_beyond_cap_is_not_waited_for() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(
            429, json=openai_error("slow down", "requests", None), headers={"Retry-After": "120"}
        )
    )
    client, sleeps = make_client()
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "120"
    assert route.call_count == 1 and sleeps == []


@respx.mock
def test_retries_exhausted_raise_the_last_error() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[
            httpx.Response(500, text="boom"),
            httpx.Response(502, text="bad gateway"),
            httpx.Response(503, json=openai_error("overloaded", "server_error", None)),
        ]
    )
    client, sleeps = make_client(max_retries=2)
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    assert info.value.status == 503
    assert info.value.body["error"]["message"] == "overloaded"
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert 0.125 <= sleeps[0] <= 0.25 and 0.25 <= sleeps[1] <= 0.5


@respx.mock
def test_503_then_success() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[httpx.Response(503, text="busy"), httpx.Response(200, json=COMPLETION)]
    )
    client, sleeps = make_client()
    assert run(call_chat(client)) == COMPLETION
    assert route.call_count == 2 and len(sleeps) == 1


@respx.mock
def test_connect_error_is_retried_then_502() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        side_effect=httpx.ConnectError("[Errno 111] Connection refused")
    )
    client, sleeps = make_client(max_retries=2)
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    err = info.value
    assert err.status == 502
    assert err.body["error"]["type"] == "upstream_error"
    assert err.body["error"]["code"] == "upstream_unreachable"
    assert "upstream.test" in err.body["error"]["message"]
    assert KEY not in str(err) and KEY not in json.dumps(err.body)
    assert route.call_count == 3 and len(sleeps) == 2


@respx.mock
def test_connect_error_then_success() -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=COMPLETION)]
    )
    client, _ = make_client()
    assert run(call_chat(client)) == COMPLETION


@respx.mock
def test_read_timeout_is_504_and_not_retried() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))
    client, sleeps = make_client()
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    assert info.value.status == 504
    assert info.value.body["error"]["code"] == "upstream_timeout"
    assert route.call_count == 1 and sleeps == []


@respx.mock
def test_connect_timeout_is_retried() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[httpx.ConnectTimeout("slow"), httpx.Response(200, json=COMPLETION)]
    )
    client, _ = make_client()
    run(call_chat(client))
    assert route.call_count == 2


@respx.mock
def test_dropped_keep_alive_connection_is_retried() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            httpx.Response(200, json=COMPLETION),
        ]
    )
    client, _ = make_client()
    assert run(call_chat(client)) == COMPLETION
    assert route.call_count == 2


@respx.mock
def test_upstream_message_never_echoes_the_key() -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(
            401, json=openai_error(f"Incorrect API key provided: {KEY}", "auth", "invalid_api_key")
        )
    )
    client, _ = make_client()
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    assert KEY not in info.value.body["error"]["message"]
    assert info.value.body["error"]["code"] == "invalid_api_key"


@respx.mock
def test_2xx_with_error_body_is_an_error() -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(200, json={"error": {"message": "No endpoints", "code": 404}})
    )
    client, _ = make_client()
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    assert info.value.status == 404
    assert info.value.body["error"] == {
        "message": "No endpoints",
        "type": "upstream_error",
        "param": None,
        "code": "404",
    }


@respx.mock
def test_2xx_with_non_json_body_is_502() -> None:
    respx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, text="oops"))
    client, _ = make_client()
    with pytest.raises(UpstreamError) as info:
        run(call_chat(client))
    assert info.value.status == 502


def test_client_configuration() -> None:
    client, _ = make_client(connect_timeout_s=3, read_timeout_s=99)
    http = client._http
    assert http.timeout.connect == 3 and http.timeout.read == 99
    assert http.headers["user-agent"] == f"memproxy/{__version__}"
    run(client.aclose())


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("http://h/v1", "/chat/completions", "http://h/v1/chat/completions"),
        ("http://h/v1/", "/chat/completions", "http://h/v1/chat/completions"),
        ("http://h/v1", "/v1/models", "http://h/v1/models"),
        ("http://h/v1", "embeddings", "http://h/v1/embeddings"),
        ("http://h", "/models", "http://h/models"),
        ("http://h/api/", "/models?x=1", "http://h/api/models?x=1"),
    ],
)
def test_url_joining(base: str, path: str, expected: str) -> None:
    client, _ = make_client(base_url=base)
    assert client.url(path) == expected
    run(client.aclose())


# --------------------------------------------------------------------------- chat_stream()


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


STREAM_CHUNKS = [chunk("Hé"), chunk("llo 🌍 \u2028 wörld"), chunk("", "stop")]


def sse(chunks: Iterable[dict[str, Any]], *, done: bool = True, newline: str = "\n") -> bytes:
    parts = [": keep-alive", "", "event: message", "id: 7", "retry: 1000", ""]
    for item in chunks:
        parts += ["data: " + json.dumps(item, ensure_ascii=False), ""]
        parts += [": ping", ""]
    if done:
        parts += ["data: [DONE]", ""]
    return (newline.join(parts) + newline).encode()


class Body(httpx.AsyncByteStream):
    """A response body delivered in the given pieces, optionally failing or hanging after them."""

    def __init__(
        self, pieces: Iterable[bytes], *, error: Exception | None = None, hang: bool = False
    ) -> None:
        self.pieces = list(pieces)
        self.error = error
        self.hang = hang
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.sent += 1
            yield piece
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def stream_transport(
    bodies: list[Body | httpx.Response], requests: list[httpx.Request] | None = None
) -> httpx.MockTransport:
    queue = list(bodies)

    def handler(request: httpx.Request) -> httpx.Response:
        if requests is not None:
            requests.append(request)
        item = queue.pop(0)
        if isinstance(item, httpx.Response):
            return item
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=item)

    return httpx.MockTransport(handler)


async def collect(client: UpstreamClient, body: dict[str, Any] = BODY) -> list[dict[str, Any]]:
    try:
        return [c async for c in client.chat_stream(body, api_key=KEY)]
    finally:
        await client.aclose()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_stream_chunks_split_at_awkward_boundaries(size: int, newline: str) -> None:
    body = Body(split_every(sse(STREAM_CHUNKS, newline=newline), size))
    requests: list[httpx.Request] = []
    client, _ = make_client(stream_transport([body], requests))
    assert run(collect(client)) == STREAM_CHUNKS
    assert body.closed
    sent = json.loads(requests[0].content)
    assert sent["stream"] is True and sent["messages"] == BODY["messages"]
    assert requests[0].headers["accept"] == "text/event-stream"
    assert "stream" not in BODY  # the caller's dict is not modified


def test_stream_ends_at_done_and_drains_the_rest() -> None:
    body = Body([sse(STREAM_CHUNKS[:1]), b'data: {"ignored": true}\n\n'])
    client, _ = make_client(stream_transport([body]))
    assert run(collect(client)) == STREAM_CHUNKS[:1]
    assert body.sent == 2 and body.closed


def test_stream_drain_gives_up_on_a_server_that_hangs_after_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "DRAIN_TIMEOUT_S", 0.05)
    body = Body([sse(STREAM_CHUNKS)], hang=True)
    client, _ = make_client(stream_transport([body]))
    started = time.monotonic()
    assert run(collect(client)) == STREAM_CHUNKS
    assert time.monotonic() - started < 2 and body.closed


def test_stream_mid_stream_error_event_raises() -> None:
    error = openai_error("The server is overloaded", "server_error", "overloaded")
    data = sse(STREAM_CHUNKS[:1], done=False) + b"data: " + json.dumps(error).encode() + b"\n\n"
    body = Body([data])
    client, _ = make_client(stream_transport([body]))
    received: list[dict[str, Any]] = []

    async def consume() -> None:
        try:
            async for item in client.chat_stream(BODY, api_key=KEY):
                received.append(item)
        finally:
            await client.aclose()

    with pytest.raises(UpstreamError) as info:
        run(consume())
    assert received == STREAM_CHUNKS[:1]
    assert info.value.status == 502
    assert info.value.body == error
    assert body.closed


def test_stream_error_event_with_status() -> None:
    data = b'data: {"error": {"message": "rate limited", "code": 429}}\n\n'
    client, _ = make_client(stream_transport([Body([data])]))
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.status == 429 and info.value.body["error"]["message"] == "rate limited"


def test_stream_cut_without_done_raises_interrupted() -> None:
    body = Body([sse(STREAM_CHUNKS, done=False)])
    client, _ = make_client(stream_transport([body]))
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.status == 502
    assert info.value.body["error"]["code"] == "stream_interrupted"
    assert body.closed


def test_stream_cut_inside_a_chunk_raises_interrupted() -> None:
    data = sse(STREAM_CHUNKS[:1], done=False) + b'data: {"id": "chatcmpl-s", "choi'
    client, _ = make_client(stream_transport([Body([data])]))
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.body["error"]["code"] == "stream_interrupted"


def test_stream_connection_drop_raises_interrupted() -> None:
    body = Body(
        [sse(STREAM_CHUNKS[:1], done=False)],
        error=httpx.RemoteProtocolError("peer closed connection"),
    )
    client, _ = make_client(stream_transport([body]))
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.status == 502
    assert info.value.body["error"]["code"] == "stream_interrupted"
    assert body.closed


def test_stream_read_timeout_mid_stream_is_504() -> None:
    body = Body([sse(STREAM_CHUNKS[:1], done=False)], error=httpx.ReadTimeout("slow"))
    client, _ = make_client(stream_transport([body]))
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.status == 504


def test_stream_early_aclose_closes_the_response() -> None:
    body = Body([sse(STREAM_CHUNKS[:1], done=False)], hang=True)
    client, _ = make_client(stream_transport([body]))

    async def take_one() -> dict[str, Any]:
        gen = client.chat_stream(BODY, api_key=KEY)
        first = await gen.__anext__()
        assert not body.closed
        await gen.aclose()
        await client.aclose()
        return first

    assert run(take_one()) == STREAM_CHUNKS[0]
    assert body.closed


def test_stream_retries_before_the_body_then_streams() -> None:
    busy = httpx.Response(
        429, json=openai_error("busy", "requests", None), headers={"retry-after": "2"}
    )
    body = Body([sse(STREAM_CHUNKS)])
    client, sleeps = make_client(stream_transport([busy, body]))
    assert run(collect(client)) == STREAM_CHUNKS
    assert sleeps == [2.0]


def test_stream_4xx_raises_before_any_chunk() -> None:
    error = openai_error("bad messages", "invalid_request_error", None, "messages")
    client, sleeps = make_client(stream_transport([httpx.Response(400, json=error)]))
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.status == 400 and info.value.body == error and sleeps == []


def test_stream_json_error_with_200() -> None:
    response = httpx.Response(200, json={"error": {"message": "no provider", "code": 503}})
    client, _ = make_client(stream_transport([response]))
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.status == 503


def test_stream_events_separated_by_single_newlines_are_accepted() -> None:
    lines = "".join("data: " + json.dumps(c) + "\n" for c in STREAM_CHUNKS) + "data: [DONE]\n\n"
    client, _ = make_client(stream_transport([Body([lines.encode()])]))
    assert run(collect(client)) == STREAM_CHUNKS


# --------------------------------------------------------------------------- forward()


@respx.mock
def test_forward_sends_exact_bytes_replaces_auth_and_strips_hop_by_hop() -> None:
    content = b'{"model": "x",\n  "input": ["caf\xc3\xa9"]}   '
    route = respx.post(f"{BASE}/embeddings").mock(
        return_value=httpx.Response(200, content=b'{"data": []}', headers={"x-up": "1"})
    )
    client, _ = make_client()
    headers = {
        "Authorization": f"Bearer {secrets.CLIENT_KEY}",
        "Content-Type": "application/json",
        "Content-Length": "999",
        "Host": "memproxy.local",
        "Connection": "keep-alive, X-Hop",
        "Keep-Alive": "timeout=5",
        "Transfer-Encoding": "chunked",
        "TE": "trailers",
        "Trailer": "X-T",
        "Upgrade": "h2c",
        "Proxy-Authorization": "Basic abc",
        "X-Hop": "drop me",
        "X-Agent-Id": "alice",
        "OpenAI-Organization": "org-1",
    }

    async def go() -> tuple[int, bytes, str]:
        response = await client.forward(
            "POST", "/embeddings", headers=headers, content=content, api_key=KEY, stream=True
        )
        try:
            raw = b"".join([part async for part in response.aiter_raw()])
        finally:
            await response.aclose()
            await client.aclose()
        return response.status_code, raw, response.headers["x-up"]

    assert run(go()) == (200, b'{"data": []}', "1")
    sent = route.calls.last.request
    assert sent.content == content
    assert sent.headers["content-length"] == str(len(content))
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["host"] == "upstream.test"
    assert sent.headers["x-agent-id"] == "alice"
    assert sent.headers["openai-organization"] == "org-1"
    for name in ("keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "x-hop"):
        assert name not in sent.headers, name
    assert "proxy-authorization" not in sent.headers
    assert sent.headers.get("connection") != "keep-alive, X-Hop"
    assert "accept-encoding" not in sent.headers


@respx.mock
def test_forward_without_key_keeps_the_callers_authorization() -> None:
    route = respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json={"data": []}))
    client, _ = make_client(api_key=None)

    async def go() -> None:
        response = await client.forward(
            "GET",
            "/v1/models",
            headers={"authorization": f"Bearer {secrets.USER_OWN_KEY}"},
            content=b"",
            api_key=None,
            stream=False,
        )
        assert response.json() == {"data": []}
        await response.aclose()
        await client.aclose()

    run(go())
    assert route.calls.last.request.headers["authorization"] == f"Bearer {secrets.USER_OWN_KEY}"


@respx.mock
def test_forward_returns_error_statuses_unchanged() -> None:
    respx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(400, content=b'{"error": "x"}')
    )
    client, _ = make_client()

    async def go() -> tuple[int, bytes]:
        response = await client.forward(
            "POST", "/chat/completions", headers={}, content=b"{}", api_key=KEY, stream=False
        )
        await response.aclose()
        await client.aclose()
        return response.status_code, response.content

    assert run(go()) == (400, b'{"error": "x"}')


@respx.mock
def test_forward_retries_refused_connections_only() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, content=b"ok")]
    )
    client, sleeps = make_client()

    async def go() -> bytes:
        response = await client.forward(
            "POST", "/chat/completions", headers={}, content=b"{}", api_key=KEY, stream=False
        )
        await response.aclose()
        await client.aclose()
        return response.content

    assert run(go()) == b"ok"
    assert route.call_count == 2 and len(sleeps) == 1


@respx.mock
def test_forward_read_timeout_is_504_not_retried() -> None:
    route = respx.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))
    client, _ = make_client()

    async def go() -> None:
        try:
            await client.forward(
                "POST", "/chat/completions", headers={}, content=b"{}", api_key=KEY, stream=True
            )
        finally:
            await client.aclose()

    with pytest.raises(UpstreamError) as info:
        run(go())
    assert info.value.status == 504 and route.call_count == 1


# --------------------------------------------------------------------------- list_models()


MODELS = {"object": "list", "data": [{"id": "gpt-test", "object": "model", "owned_by": "me"}]}


@respx.mock
def test_list_models_is_cached_per_key_and_expires() -> None:
    route = respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json=MODELS))
    client, _ = make_client(models_cache_s=60)
    now = [1000.0]
    client.clock = lambda: now[0]

    async def go() -> None:
        assert await client.list_models(api_key=secrets.TENANT_A_KEY) == MODELS
        assert await client.list_models(api_key=secrets.TENANT_A_KEY) == MODELS
        assert route.call_count == 1
        await client.list_models(api_key=secrets.TENANT_B_KEY)
        assert route.call_count == 2
        now[0] += 61
        await client.list_models(api_key=secrets.TENANT_A_KEY)
        assert route.call_count == 3
        await client.aclose()

    run(go())
    assert route.calls[0].request.headers["authorization"] == f"Bearer {secrets.TENANT_A_KEY}"
    assert route.calls[1].request.headers["authorization"] == f"Bearer {secrets.TENANT_B_KEY}"
    assert all(secrets.TENANT_A_KEY not in slot and secrets.TENANT_B_KEY not in slot
               for slot in client._models)


@respx.mock
def test_list_models_errors_are_not_cached() -> None:
    route = respx.get(f"{BASE}/models").mock(
        side_effect=[
            httpx.Response(401, json=openai_error("bad key", "invalid_request_error", None)),
            httpx.Response(200, json=MODELS),
        ]
    )
    client, _ = make_client()

    async def go() -> None:
        with pytest.raises(UpstreamError):
            await client.list_models(api_key=KEY)
        assert await client.list_models(api_key=KEY) == MODELS
        await client.aclose()

    run(go())
    assert route.call_count == 2


@respx.mock
def test_list_models_cache_disabled() -> None:
    route = respx.get(f"{BASE}/models").mock(return_value=httpx.Response(200, json=MODELS))
    client, _ = make_client(models_cache_s=0)

    async def go() -> None:
        await client.list_models(api_key=None)
        await client.list_models(api_key=None)
        await client.aclose()

    run(go())
    assert route.call_count == 2


# --------------------------------------------------------------------------- resolve_key()


@pytest.mark.parametrize(
    ("api_key", "forward", "authorization", "expected"),
    [
        (None, False, None, None),
        (None, False, f"Bearer {CLIENT}", None),
        (None, True, None, None),
        (None, True, f"Bearer {CLIENT}", CLIENT),
        (None, True, f"bearer  {CLIENT} ", CLIENT),
        (None, True, "Basic abc", None),
        (None, True, "Bearer ", None),
        (KEY, False, None, KEY),
        (KEY, False, f"Bearer {CLIENT}", KEY),
        (KEY, True, None, KEY),
        (KEY, True, f"Bearer {CLIENT}", CLIENT),
    ],
)
def test_resolve_key(
    api_key: str | None, forward: bool, authorization: str | None, expected: str | None
) -> None:
    client, _ = make_client(api_key=api_key, forward_client_key=forward)
    assert client.resolve_key(authorization) == expected
    run(client.aclose())


# --------------------------------------------------------------------------- errors


def test_error_shapes_from_other_servers() -> None:
    vllm = b'{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}'
    err = error_from_response(400, vllm)
    assert err.body["error"] == {
        "message": "too long",
        "type": "BadRequestError",
        "param": None,
        "code": "400",
    }
    fastapi = error_from_response(404, b'{"detail": "Not Found"}')
    assert fastapi.body["error"]["message"] == "Not Found"
    plain = error_from_response(502, b'{"error": "upstream down"}')
    assert plain.body["error"]["message"] == "upstream down" and plain.retryable
    empty = error_from_response(500, b"")
    assert empty.body["error"]["message"] == "upstream returned HTTP 500"


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after({"retry-after": date}, now=1445412470.0) == 10.0


def test_backoff_is_jittered_exponential_and_capped() -> None:
    for attempt in range(12):
        ceiling = min(BACKOFF_CAP_S, 0.25 * 2**attempt)
        for _ in range(20):
            assert ceiling / 2 <= backoff_delay(attempt) <= ceiling


# --------------------------------------------------------------------------- SSE parser


def feed_all(pieces: Iterable[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.flush()


def test_sse_basic_fields_comments_and_multiline_data() -> None:
    stream = (
        b"\xef\xbb\xbf: comment\n"
        b"event: update\nid: 42\ndata: line one\ndata:line two\ndata:  spaced\n\n"
        b"data\n\n"
        b"event: lonely\n\n"
        b"unknown: x\ndata: after\n\n"
    )
    assert feed_all([stream]) == [
        SSEEvent("line one\nline two\n spaced", "update", "42"),
        SSEEvent("", None, "42"),
        SSEEvent("after", None, "42"),
    ]


def test_sse_cr_lf_split_across_chunks_is_one_line_ending() -> None:
    assert feed_all([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [
        SSEEvent("a"),
        SSEEvent("b"),
    ]
    assert feed_all([b"data: a\r", b"\r"]) == [SSEEvent("a")]


def test_sse_flush_is_lenient_about_a_missing_final_blank_line() -> None:
    assert feed_all([b"data: x\n\ndata: [DONE]"]) == [SSEEvent("x"), SSEEvent("[DONE]")]
    assert feed_all([b"data: x\n\ndata: [DONE]\n"]) == [SSEEvent("x"), SSEEvent("[DONE]")]


def test_sse_utf8_split_inside_a_character() -> None:
    data = "data: é🌍\u2028x\n\n".encode()
    assert feed_all([bytes([b]) for b in data]) == [SSEEvent("é🌍\u2028x")]


def test_aiter_sse() -> None:
    async def source() -> AsyncIterator[bytes]:
        for piece in (b"da", b"ta: 1\n", b"\ndata: 2\n\n"):
            yield piece

    async def go() -> list[SSEEvent]:
        return [event async for event in aiter_sse(source())]

    assert run(go()) == [SSEEvent("1"), SSEEvent("2")]


_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
    max_size=20,
)
_event = st.tuples(
    st.lists(_text, min_size=1, max_size=3),  # data lines
    st.none() | _text.filter(lambda s: "\0" not in s),  # event name
    st.booleans(),  # a comment before the event
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(_event, max_size=6),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_sse_any_split_yields_the_same_events(
    events: list[tuple[list[str], str | None, bool]], newline: str, cuts: list[int]
) -> None:
    lines: list[str] = []
    expected: list[SSEEvent] = []
    for data_lines, name, comment in events:
        if comment:
            lines.append(": keep-alive")
        if name is not None:
            lines.append(f"event: {name}")
        lines += [f"data: {line}" for line in data_lines]
        lines.append("")
        expected.append(SSEEvent("\n".join(data_lines), name))
    stream = "".join(line + newline for line in lines).encode()
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert feed_all([stream]) == expected
    assert feed_all(pieces) == expected


def test_every_error_body_validates_against_the_openai_schema() -> None:
    from tests.openapi_check import validate_error

    errors = [
        error_from_response(400, b'{"object": "error", "message": "m", "type": "T", "code": 400}'),
        error_from_response(404, b'{"detail": "Not Found"}'),
        error_from_response(500, b"<html>oops</html>"),
        error_from_response(429, b'{"error": {"message": "m", "code": 429, "param": 3}}'),
        error_from_response(503, b'{"error": {"type": null}}'),
        error_from_response(502, b'{"error": "down"}'),
        error_from_transport(httpx.ConnectError("refused"), host="h"),
        error_from_transport(httpx.ReadTimeout("slow"), host="h"),
        error_from_transport(httpx.PoolTimeout("busy"), host="h"),
        error_from_transport(httpx.RemoteProtocolError("gone"), host="h"),
        error_from_transport(httpx.UnsupportedProtocol("ftp"), host="h"),
    ]
    for error in errors:
        validate_error(error.body)


# --------------------------------------------------------------------------- resilience
# Timeouts, the deadline, circuit breakers and fallbacks (docs/resilience.md).

PRIMARY = "http://primary.test/v1"
BACKUP = "http://backup.test/v1"
BACKUP_KEY = "sk-backup-key"
ROLE_CHUNK = {**chunk(""), "choices": [{"index": 0, "delta": {"role": "assistant"},
                                        "finish_reason": None}]}


class Hosts:
    """A mock transport answering from a queue per host, recording every request."""

    def __init__(self, **queues: list[Any]) -> None:
        self.queues = {host.replace("_", "."): list(items) for host, items in queues.items()}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.queues[request.url.host].pop(0)
        if isinstance(item, Exception):
            raise item
        if isinstance(item, httpx.AsyncByteStream):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=item)
        return item

    def to(self, host: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.host == host]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


class Slow(httpx.AsyncByteStream):
    """Body pieces with a real pause before each (seconds, bytes); then hang or end."""

    def __init__(self, pieces: list[tuple[float, bytes]], *, hang: bool = False) -> None:
        self.pieces = pieces
        self.hang = hang
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for pause, piece in self.pieces:
            await asyncio.sleep(pause)
            yield piece
        if self.hang:
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


class Seen:
    """An observer that records what the client reports."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []
        self.circuits: list[tuple[str, str]] = []
        self.fallbacks: list[str] = []

    def upstream_failure(self, upstream: str, kind: str) -> None:
        self.failures.append((upstream, kind))

    def circuit_changed(self, upstream: str, state: str) -> None:
        self.circuits.append((upstream, state))

    def fallback_used(self, upstream: str) -> None:
        self.fallbacks.append(upstream)


def with_backup(hosts: Hosts, **overrides: Any) -> tuple[UpstreamClient, list[float], Seen]:
    fallback = {"base_url": BACKUP, "api_key": BACKUP_KEY, **overrides.pop("fallback", {})}
    client, sleeps = make_client(hosts.transport(), base_url=PRIMARY, fallbacks=[fallback],
                                 **overrides)
    seen = Seen()
    client.observer = seen
    return client, sleeps, seen


def stream_all(client: UpstreamClient, route: Route | None = None,
               body: dict[str, Any] = BODY) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        try:
            return [c async for c in client.chat_stream(body, api_key=KEY, route=route)]
        finally:
            await client.aclose()

    return run(go())


def chat_once(client: UpstreamClient, route: Route | None = None,
              body: dict[str, Any] = BODY) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        try:
            return await client.chat(body, api_key=KEY, route=route)
        finally:
            await client.aclose()

    return run(go())


def test_first_token_timeout_counts_neither_keepalives_nor_role_chunks() -> None:
    waiting = sse([ROLE_CHUNK], done=False) + b": keep-alive\n\n"
    body = Body([waiting], hang=True)
    client, sleeps = make_client(stream_transport([body]), first_token_timeout_s=0.05)
    with pytest.raises(UpstreamError) as info:
        run(collect(client))
    assert info.value.status == 504
    assert info.value.body["error"]["code"] == "first_token_timeout"
    assert body.closed and sleeps == []  # not retried on the same upstream


def test_a_stream_slower_than_the_first_token_timeout_after_its_first_token_is_not_cut() -> None:
    pieces = [(0.0, sse([ROLE_CHUNK, STREAM_CHUNKS[0]], done=False)),
              (0.2, sse(STREAM_CHUNKS[1:]))]
    client, _ = make_client(stream_transport([Slow(pieces)]), first_token_timeout_s=0.1)
    assert run(collect(client)) == [ROLE_CHUNK, *STREAM_CHUNKS]


def test_first_token_timeout_goes_to_the_fallback() -> None:
    hosts = Hosts(primary_test=[Body([sse([ROLE_CHUNK], done=False)], hang=True)],
                  backup_test=[Body([sse(STREAM_CHUNKS)])])
    client, _, seen = with_backup(hosts, first_token_timeout_s=0.05)
    route = Route()
    assert stream_all(client, route) == STREAM_CHUNKS
    assert route.answered_by == 1 and seen.fallbacks == ["1"]
    assert seen.failures == [("0", "first_token_timeout")]
    assert hosts.to("backup.test")[0].headers["authorization"] == f"Bearer {BACKUP_KEY}"


def test_a_passed_deadline_sends_nothing() -> None:
    hosts = Hosts(primary_test=[])
    client, _ = make_client(hosts.transport(), base_url=PRIMARY)
    route = Route(deadline=time.monotonic() - 1, budget_s=5)
    with pytest.raises(UpstreamError) as info:
        chat_once(client, route)
    assert info.value.status == 504
    assert info.value.body["error"]["type"] == "timeout_error"
    assert info.value.body["error"]["code"] == "deadline_exceeded"
    assert "5 s" in info.value.message and hosts.requests == []


def test_the_deadline_bounds_a_response_that_never_ends() -> None:
    hanging = httpx.Response(200, headers={"content-type": "application/json"},
                             stream=Body([b"   "], hang=True))
    hosts = Hosts(primary_test=[hanging], backup_test=[httpx.Response(200, json=COMPLETION)])
    client, _, seen = with_backup(hosts)
    with pytest.raises(UpstreamError) as info:
        chat_once(client, Route.within(0.1))
    assert info.value.body["error"]["code"] == "deadline_exceeded"
    assert hosts.to("backup.test") == []  # out of time: no fallback either
    assert client.endpoints[0].breaker.consecutive_failures == 0  # not the upstream's fault
    assert seen.failures == [("0", "deadline")]


def test_the_deadline_ends_a_stream_after_its_first_token() -> None:
    body = Body([sse(STREAM_CHUNKS[:1], done=False)], hang=True)
    client, _ = make_client(stream_transport([body]))
    received: list[dict[str, Any]] = []

    async def go() -> None:
        try:
            async for item in client.chat_stream(BODY, api_key=KEY, route=Route.within(0.1)):
                received.append(item)
        finally:
            await client.aclose()

    with pytest.raises(UpstreamError) as info:
        run(go())
    assert received == STREAM_CHUNKS[:1]
    assert info.value.body["error"]["code"] == "deadline_exceeded" and body.closed


def test_a_backoff_longer_than_the_time_left_gives_up_with_the_real_error() -> None:
    busy = httpx.Response(429, json=openai_error("slow down", "requests", None),
                          headers={"retry-after": "5"})
    hosts = Hosts(primary_test=[busy])
    client, sleeps = make_client(hosts.transport(), base_url=PRIMARY)
    with pytest.raises(UpstreamError) as info:
        chat_once(client, Route.within(2))
    assert info.value.status == 429 and sleeps == [] and len(hosts.requests) == 1


def test_circuit_opens_fails_fast_then_lets_one_trial_through() -> None:
    down = [httpx.Response(503, text="down") for _ in range(3)]
    hosts = Hosts(primary_test=[*down, httpx.Response(200, json=COMPLETION)])
    client, _ = make_client(hosts.transport(), base_url=PRIMARY, max_retries=0,
                            circuit_failures=3, circuit_reset_s=30)
    now = [0.0]
    client.clock = lambda: now[0]
    seen = Seen()
    client.observer = seen

    async def go() -> list[Any]:
        outcomes: list[Any] = []
        for _ in range(5):
            try:
                outcomes.append(await client.chat(BODY, api_key=KEY))
            except UpstreamError as error:
                outcomes.append((error.status, error.code, error.headers.get("retry-after")))
        now[0] += 30
        outcomes.append(await client.chat(BODY, api_key=KEY))
        await client.aclose()
        return outcomes

    outcomes = run(go())
    assert [o[:2] for o in outcomes[:5]] == [(503, None)] * 3 + [(503, "circuit_open")] * 2
    assert outcomes[3][2] == "30"
    assert outcomes[5] == COMPLETION
    assert len(hosts.requests) == 4  # nothing was sent while the circuit was open
    assert seen.circuits == [("0", "closed"), ("0", "open"), ("0", "half_open"), ("0", "closed")]
    assert seen.failures.count(("0", "circuit_open")) == 2
    assert seen.failures.count(("0", "http_5xx")) == 3


def test_4xx_and_429_mean_the_upstream_is_alive() -> None:
    answers = [httpx.Response(400, json=openai_error("bad", "invalid_request_error", None)),
               httpx.Response(429, json=openai_error("busy", "requests", None))] * 3
    hosts = Hosts(primary_test=answers)
    client, _ = make_client(hosts.transport(), base_url=PRIMARY, max_retries=0,
                            circuit_failures=1)

    async def go() -> None:
        for _ in answers:
            with pytest.raises(UpstreamError):
                await client.chat(BODY, api_key=KEY)
        await client.aclose()

    run(go())
    assert len(hosts.requests) == 6 and client.endpoints[0].breaker.state == "closed"


def test_fallback_after_the_primarys_retries_with_its_own_key_only() -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    hosts = Hosts(primary_test=[refused] * 3, backup_test=[httpx.Response(200, json=COMPLETION)])
    client, sleeps, seen = with_backup(hosts)
    route = Route()
    assert chat_once(client, route) == COMPLETION
    assert len(hosts.to("primary.test")) == 3 and len(sleeps) == 2
    (sent,) = hosts.to("backup.test")
    assert sent.headers["authorization"] == f"Bearer {BACKUP_KEY}"
    assert json.loads(sent.content) == BODY
    assert route.answered_by == 1 and route.attempts == 4 and seen.fallbacks == ["1"]


def test_a_fallback_without_a_key_gets_no_authorization() -> None:
    hosts = Hosts(primary_test=[httpx.Response(502, text="bad gateway")],
                  backup_test=[httpx.Response(200, json=COMPLETION)])
    client, _, _ = with_backup(hosts, max_retries=0, fallback={"api_key": None})
    chat_once(client)
    assert "authorization" not in hosts.to("backup.test")[0].headers


def test_fallback_models_and_rename() -> None:
    hosts = Hosts(primary_test=[httpx.Response(503, text="x")] * 2,
                  backup_test=[httpx.Response(200, json=COMPLETION)])
    client, _, _ = with_backup(hosts, max_retries=0,
                               fallback={"models": ["gpt-4o*"], "model": "vendor/gpt-4o"})

    async def go() -> None:
        with pytest.raises(UpstreamError) as info:  # gpt-test is not served by the backup
            await client.chat(BODY, api_key=KEY)
        assert info.value.status == 503
        await client.chat({**BODY, "model": "gpt-4o-mini"}, api_key=KEY)
        await client.aclose()

    run(go())
    (sent,) = hosts.to("backup.test")
    assert json.loads(sent.content)["model"] == "vendor/gpt-4o"


@pytest.mark.parametrize("answer", [
    httpx.Response(400, json=openai_error("bad", "invalid_request_error", None)),
    httpx.Response(200, text="{not json"),
    httpx.ReadTimeout("slow"),
])
def test_no_fallback_for_errors_another_upstream_would_not_fix(answer: Any) -> None:
    hosts = Hosts(primary_test=[answer], backup_test=[httpx.Response(200, json=COMPLETION)])
    client, sleeps, _ = with_backup(hosts)
    with pytest.raises(UpstreamError):
        chat_once(client)
    assert hosts.to("backup.test") == [] and sleeps == []


def test_an_open_circuit_sends_straight_to_the_fallback() -> None:
    hosts = Hosts(primary_test=[httpx.Response(500, text="x")],
                  backup_test=[httpx.Response(200, json=COMPLETION)] * 3)
    client, _, seen = with_backup(hosts, max_retries=0, circuit_failures=1)

    async def go() -> None:
        for _ in range(3):
            assert await client.chat(BODY, api_key=KEY) == COMPLETION
        await client.aclose()

    run(go())
    assert len(hosts.to("primary.test")) == 1 and len(hosts.to("backup.test")) == 3
    assert seen.fallbacks == ["1"] * 3


def test_the_2xx_invalid_json_body_is_a_502_and_not_retried() -> None:
    hosts = Hosts(primary_test=[httpx.Response(200, text='{"choices": [')])
    client, sleeps = make_client(hosts.transport(), base_url=PRIMARY)
    with pytest.raises(UpstreamError) as info:
        chat_once(client)
    assert info.value.status == 502
    assert info.value.body["error"]["code"] == "bad_upstream_response"
    assert '{"choices"' not in info.value.message  # the body (maybe model output) is not quoted
    assert len(hosts.requests) == 1 and sleeps == []


def forward_chat(client: UpstreamClient, route: Route | None = None,
                 content: bytes = b'{"model": "gpt-4o", "messages": []}') -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        response = await client.forward(
            "POST", "/chat/completions", content=content, api_key=KEY, stream=False,
            headers={"authorization": "Bearer client-key", "content-type": "application/json"},
            route=route,
        )
        await response.aclose()
        await client.aclose()
        return response.status_code, response.content

    return run(go())


def test_forward_falls_back_on_5xx_and_relays_the_last_answer_unchanged() -> None:
    hosts = Hosts(primary_test=[httpx.Response(503, text="busy")] * 2,
                  backup_test=[httpx.Response(200, content=b"ok"),
                               httpx.Response(502, content=b"also down")])
    client, _, seen = with_backup(hosts, circuit_failures=0)
    route = Route()
    assert forward_chat(client, route) == (200, b"ok")
    assert route.answered_by == 1 and seen.fallbacks == ["1"]
    sent = hosts.to("backup.test")[0]
    assert sent.headers["authorization"] == f"Bearer {BACKUP_KEY}"
    assert sent.content == b'{"model": "gpt-4o", "messages": []}'  # byte for byte
    client2, _, _ = with_backup(Hosts(primary_test=hosts.queues["primary.test"],
                                      backup_test=hosts.queues["backup.test"]))
    assert forward_chat(client2) == (502, b"also down")


def test_forward_to_a_renaming_fallback_rewrites_only_the_model() -> None:
    hosts = Hosts(primary_test=[httpx.ConnectError("refused")],
                  backup_test=[httpx.Response(200, content=b"ok")])
    client, _, _ = with_backup(hosts, max_retries=0, fallback={"model": "other"})
    assert forward_chat(client) == (200, b"ok")
    assert json.loads(hosts.to("backup.test")[0].content) == {"model": "other", "messages": []}


def test_forward_fails_fast_while_the_circuit_is_open() -> None:
    hosts = Hosts(primary_test=[httpx.ConnectError("refused")])
    client, _ = make_client(hosts.transport(), base_url=PRIMARY, max_retries=0,
                            circuit_failures=1)

    async def go() -> list[UpstreamError]:
        errors = []
        for _ in range(2):
            try:
                await client.forward("POST", "/chat/completions", headers={}, content=b"{}",
                                     api_key=KEY, stream=True)
            except UpstreamError as error:
                errors.append(error)
        await client.aclose()
        return errors

    first, second = run(go())
    assert first.body["error"]["code"] == "upstream_unreachable"
    assert second.status == 503 and second.body["error"]["code"] == "circuit_open"
    assert len(hosts.requests) == 1


def test_resilience_settings_from_a_file_and_the_environment(tmp_path: Any) -> None:
    from proxy.config import ConfigError, load_settings

    path = tmp_path / "memproxy.toml"
    path.write_text(
        '[upstream]\nfirst_token_timeout_s = 5\ncircuit_failures = 0\n'
        '[[upstream.fallbacks]]\nbase_url = "http://b/v1"\napi_key = "env:B_KEY"\n'
        'models = ["gpt-4o*"]\nmodel = "other"\n'
    )
    settings = load_settings(path, environ={"B_KEY": "sk-b"}).upstream
    assert settings.first_token_timeout_s == 5 and settings.circuit_failures == 0
    (fallback,) = settings.fallbacks
    assert (fallback.api_key, fallback.models, fallback.model) == ("sk-b", ["gpt-4o*"], "other")
    env = {"MEMPROXY_UPSTREAM_FALLBACKS": '[{"base_url": "http://c/v1"}]',
           "MEMPROXY_UPSTREAM_REQUEST_DEADLINE_S": "30"}
    settings = load_settings(environ=env).upstream
    assert settings.fallbacks[0].base_url == "http://c/v1" and settings.request_deadline_s == 30
    for bad in ('[[upstream.fallbacks]]\nmodels = ["x"]\n',  # base_url is required
                '[upstream]\nrequest_deadline_s = 0\n',
                '[[upstream.fallbacks]]\nbase_url = "http://b"\nkey = "typo"\n'):
        path.write_text(bad)
        with pytest.raises(ConfigError):
            load_settings(path, environ={})
