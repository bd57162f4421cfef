"""`UpstreamClient`'s JSON calls straight over the wire (upstream/direct.py), against a real
socket server scripting the bytes: the request must be what httpx would have sent, and every
failure must map to the same `UpstreamError` as over httpx."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

import pytest

from proxy.config import UpstreamSettings
from proxy.upstream import UpstreamClient, UpstreamError
from proxy.upstream.http11.direct import DirectJSON, decode
from proxy.upstream.http11.transport import LeanTransport
from proxy.upstream.http11.wire import Timeouts, Wire
from tests import secrets
from tests.upstream.test_lean_transport import WireServer, read_request, sync

COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                           "finish_reason": "stop"}]}
BODY = {"model": "m", "messages": [{"role": "user", "content": "héllo"}]}


def response(status: int, body: bytes, *headers: bytes) -> bytes:
    head = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (status, len(body))
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def upstream(server: WireServer, *answers: bytes, keep: bool = True):  # type: ignore[no-untyped-def]
    """A handler answering the scripted responses in order, the last one forever."""
    queue = list(answers)

    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        while True:
            server.requests.append(await read_request(reader))
            writer.write(queue.pop(0) if len(queue) > 1 else queue[0])
            await writer.drain()
            if not keep:
                return
    return handler


def make(server: WireServer, *, direct: bool = True, **overrides: Any) -> UpstreamClient:
    values: dict[str, Any] = {"base_url": server.url + "/v1", "api_key": secrets.UPSTREAM_KEY,
                              "max_retries": 2}
    values.update(overrides)
    client = UpstreamClient(UpstreamSettings(**values), transport=LeanTransport())

    async def no_sleep(delay: float) -> None:
        pass

    client.sleep = no_sleep
    if not direct:
        client._direct = None  # the same transport, through httpx
    return client


def ok(payload: dict = COMPLETION) -> bytes:
    return response(200, json.dumps(payload).encode(), b"Content-Type: application/json")


def scripted(*answers: bytes, keep: bool = True) -> WireServer:
    server = WireServer(lambda r, w, n: None)
    server.handler = upstream(server, *answers, keep=keep)
    return server


async def failed_chat(server: WireServer, **settings: Any) -> UpstreamError:
    """The error a chat call against `server` raises."""
    async with server:
        client = make(server, **settings)
        with pytest.raises(UpstreamError) as caught:
            await client.chat(BODY, api_key=None)
        await client.aclose()
    return caught.value


@sync
async def test_direct_sends_what_httpx_would_send() -> None:
    seen = []
    for direct in (True, False):
        server = scripted(ok())
        async with server:
            client = make(server, direct=direct)
            client.call_headers = lambda: {"X-Request-Id": "rid-1"}
            assert (client._direct is not None) is direct
            payload = await client.chat(BODY, api_key=secrets.UPSTREAM_KEY,
                                        headers={"OpenAI-Organization": "org-1"})
            await client.aclose()
        assert payload == COMPLETION
        line, headers, body = server.requests[0]
        headers.pop(b"host")  # the port differs between the two servers
        seen.append((line, headers, json.loads(body)))
    assert seen[0] == seen[1]
    line, headers, body = seen[0]
    assert line == b"POST /v1/chat/completions HTTP/1.1"
    assert headers[b"authorization"] == b"Bearer " + secrets.UPSTREAM_KEY.encode()
    assert headers[b"openai-organization"] == b"org-1"
    assert headers[b"x-request-id"] == b"rid-1"
    assert body == BODY


@sync
async def test_keep_alive_one_connection_for_many_calls() -> None:
    server = scripted(ok())
    async with server:
        client = make(server)
        for _ in range(5):
            assert await client.chat(BODY, api_key=None) == COMPLETION
        await client.aclose()
    assert server.connections == 1
    assert len(server.requests) == 5


@sync
async def test_gzip_deflate_and_chunked_bodies_are_decoded() -> None:
    raw = json.dumps(COMPLETION).encode()
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bodies = [
        response(200, gzip.compress(raw), b"Content-Encoding: gzip"),
        response(200, zlib.compress(raw), b"Content-Encoding: deflate"),
        response(200, raw_deflate.compress(raw) + raw_deflate.flush(), b"Content-Encoding: deflate"),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(raw[i:i + 7]), raw[i:i + 7]) for i in range(0, len(raw), 7))
        + b"0\r\n\r\n",
    ]
    server = scripted(*bodies, ok())
    async with server:
        client = make(server)
        for _ in bodies:
            assert await client.chat(BODY, api_key=None) == COMPLETION
        await client.aclose()
    assert server.connections == 1


@sync
async def test_rate_limited_is_retried_with_the_same_request() -> None:
    limited = response(429, b'{"error": {"message": "slow down", "type": "rate_limit"}}',
                       b"Retry-After: 0")
    server = scripted(limited, ok())
    async with server:
        client = make(server)
        assert await client.chat(BODY, api_key=None) == COMPLETION
        await client.aclose()
    assert len(server.requests) == 2
    assert server.requests[0] == server.requests[1]


@sync
async def test_error_statuses_keep_the_upstreams_message_and_headers() -> None:
    server = scripted(response(400, b'{"error": {"message": "bad model", "type":'
                               b' "invalid_request_error", "code": "model_not_found"}}',
                               b"X-Request-Id: req-9"))
    error = await failed_chat(server)
    assert error.status == 400
    assert error.body["error"]["message"] == "bad model"
    assert error.body["error"]["code"] == "model_not_found"
    assert error.headers.get("x-request-id") == "req-9"
    assert len(server.requests) == 1


@sync
async def test_a_body_cut_short_after_200_is_not_retried() -> None:
    server = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"id\"", keep=False)
    error = await failed_chat(server)
    assert error.status == 502
    assert error.code == "upstream_disconnected"
    assert error.retryable is False  # the model may have answered: never twice
    assert len(server.requests) == 1


@sync
async def test_no_answer_in_time_is_a_504_not_retried() -> None:
    async def silent(reader, writer, n):  # type: ignore[no-untyped-def]
        server.requests.append(await read_request(reader))
        await asyncio.sleep(5)

    server = WireServer(silent)
    error = await failed_chat(server, read_timeout_s=0.2)
    assert error.status == 504
    assert error.code == "upstream_timeout"
    assert len(server.requests) == 1


@sync
async def test_undecodable_gzip_and_non_json_bodies_are_502() -> None:
    for answer, code in ((response(200, b"not gzip", b"Content-Encoding: gzip"),
                          "bad_upstream_response"),
                         (response(200, b"<html>oops</html>"), None)):
        error = await failed_chat(scripted(answer))
        assert error.status == 502
        if code:
            assert error.code == code


@sync
async def test_an_idle_connection_the_server_closed_is_replaced() -> None:
    server = scripted(ok(), keep=False)  # closes after every answer
    async with server:
        client = make(server)
        assert await client.chat(BODY, api_key=None) == COMPLETION
        await asyncio.sleep(0.05)
        assert await client.chat(BODY, api_key=None) == COMPLETION
        await client.aclose()
    assert server.connections == 2


@sync
async def test_refused_connection_is_502_unreachable_and_retried() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: refused at once
        settings = UpstreamSettings(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1",
                                    max_retries=2)
        client = UpstreamClient(settings, transport=LeanTransport())
        sleeps: list[float] = []

        async def record(delay: float) -> None:
            sleeps.append(delay)

        client.sleep = record
        with pytest.raises(UpstreamError) as caught:
            await client.chat(BODY, api_key=None)
        await client.aclose()
    assert caught.value.status == 502
    assert caught.value.code == "upstream_unreachable"
    assert len(sleeps) == 2


def direct() -> DirectJSON:
    return DirectJSON(Wire(), Timeouts(1, 1, 1), {"User-Agent": "memproxy/test"})


def test_prepare_builds_the_target_and_host_once_per_url() -> None:
    d = direct()
    prepared = d.prepare("POST", "https://api.example.com/v1/chat/completions?api-version=2",
                         {"user-agent": "override"}, b"{}")
    assert prepared is not None
    head = prepared.payload.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions?api-version=2 HTTP/1.1"
    assert head[1] == b"Host: api.example.com"
    assert b"user-agent: override" in head and b"User-Agent: memproxy/test" not in head
    assert b"Content-Length: 2" in head
    assert prepared.origin == ("https", "api.example.com", 443)
    ipv6 = d.prepare("GET", "http://[::1]:8080/v1/models", {}, None)
    assert ipv6 is not None and b"Host: [::1]:8080" in ipv6.payload
    assert ipv6.origin == ("http", "::1", 8080)
    assert b"Content-Length" not in ipv6.payload  # a GET without a body


@pytest.mark.parametrize("url, headers", [
    ("http://host/v1/ch\u00e4t", {}),  # not ASCII: httpx quotes it
    ("http://user:pw@host/v1", {}),  # credentials in the URL: httpx's auth handles them
    ("ftp://host/v1", {}),
    ("http://host/v1", {"X-Evil": "a\r\nX-Injected: 1"}),  # never put a CR/LF on the wire
    ("http://host/v1", {"X-Name": "caf\u00e9"}),
    ("http://host/v1", {"Bad Name": "x"}),
])
def test_what_cannot_go_as_it_is_goes_through_httpx(url: str, headers: dict) -> None:
    assert direct().prepare("POST", url, headers, b"{}") is None


def test_decode_leaves_identity_and_unknown_codings() -> None:
    assert decode(b"abc", "identity") == b"abc"
    assert decode(b"abc", "br") == b"abc"  # not asked for; httpx without brotli does the same
    assert decode(gzip.compress(zlib.compress(b"abc")), "deflate, gzip") == b"abc"


@sync
async def test_a_cancelled_call_never_leaves_its_connection_for_the_next_one() -> None:
    """A client that goes away cancels its turn mid-call: the connection still owes that
    call's answer, so it must be closed, never handed to the next call (which would read the
    abandoned answer as its own)."""
    answers = [json.dumps({**COMPLETION, "id": f"chatcmpl-{n}"}).encode() for n in range(3)]

    async def slow_first(reader, writer, n):  # type: ignore[no-untyped-def]
        while True:
            server.requests.append(await read_request(reader))
            if len(server.requests) == 1:
                await asyncio.sleep(0.3)  # the first answer comes after the caller gave up
            body = answers[len(server.requests) - 1]
            writer.write(response(200, body))
            await writer.drain()

    server = WireServer(slow_first)
    async with server:
        client = make(server)
        first = asyncio.ensure_future(client.chat(BODY, api_key=None))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        second = await client.chat(BODY, api_key=None)
        await client.aclose()
    assert second["id"] == "chatcmpl-1"
    assert server.connections == 2
