"""`[limits] max_upstream_response_bytes`: no upstream answer can make memproxy hold more than
the bound. Against a real socket server scripting the bytes (both the direct JSON path and
httpx over the lean transport) and, for streams, httpx's mock transport delivering pieces.
Each case would have been read whole before the bound existed: a declared length is refused
without reading (the server never sends the body, so reading would time out instead)."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
from typing import Any

import httpx
import pytest

from proxy.config import LimitsSettings, UpstreamSettings
from proxy.upstream import UpstreamClient, UpstreamError
from proxy.upstream.faults import counts_as_failure
from tests.upstream.test_direct_json import BODY, COMPLETION, make, ok, read_request
from tests.upstream.test_lean_transport import WireServer
from tests.upstream.test_upstream_client import KEY, Body, chunk, sse, stream_transport

LIMIT = 64 * 1024
BIG = json.dumps({**COMPLETION, "choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": "x" * (LIMIT * 4)}}]}).encode()


def sync(test):  # type: ignore[no-untyped-def]
    """Run an async test (parametrized or not) on a fresh event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def server_of(*scripts: bytes, hold: bool = False) -> WireServer:
    """Answers each request with the next script (the last one forever); with `hold` the
    connection then stays open without more bytes (a declared body that never comes)."""
    server = WireServer(lambda r, w, n: None)
    queue = list(scripts)

    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        while True:
            server.requests.append(await read_request(reader))
            writer.write(queue.pop(0) if len(queue) > 1 else queue[0])
            await writer.drain()
            if hold:
                await asyncio.sleep(30)
    server.handler = handler
    return server


def chunked(body: bytes, status: bytes = b"200 OK", *headers: bytes, piece: int = 8192) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nTransfer-Encoding: chunked\r\n" + \
        b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    frames = b"".join(b"%x\r\n" % len(body[i:i + piece]) + body[i:i + piece] + b"\r\n"
                      for i in range(0, len(body), piece))
    return head + frames + b"0\r\n\r\n"


async def chat(server: WireServer, direct: bool) -> dict[str, Any] | UpstreamError:
    async with server:
        client = make(server, direct=direct, max_retries=0, read_timeout_s=5)
        client.max_response_bytes = LIMIT
        try:
            return await client.chat(BODY, api_key=None)
        except UpstreamError as error:
            return error
        finally:
            await client.aclose()


def too_large(result: Any) -> UpstreamError:
    assert isinstance(result, UpstreamError), result
    assert (result.status, result.body["error"]["code"]) == (502, "upstream_response_too_large")
    assert result.body["error"]["type"] == "upstream_error"
    assert not result.retryable and not result.fallback
    assert not counts_as_failure(result)  # the upstream answered: its breaker stays closed
    return result


def test_the_default_is_a_few_megabytes() -> None:
    assert 1 << 20 <= LimitsSettings().max_upstream_response_bytes <= 16 << 20
    settings = UpstreamSettings(base_url="http://127.0.0.1:9/v1")
    assert UpstreamClient(settings).max_response_bytes == \
        LimitsSettings().max_upstream_response_bytes


@pytest.mark.parametrize("direct", [True, False])
@sync
async def test_a_declared_length_over_the_bound_is_refused_before_reading(direct: bool) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    server = server_of(head % (30 << 20), hold=True)  # 30 MB announced, never sent
    too_large(await asyncio.wait_for(chat(server, direct), 3))


@pytest.mark.parametrize("direct", [True, False])
@sync
async def test_a_chunked_body_is_cut_once_past_the_bound(direct: bool) -> None:
    too_large(await chat(server_of(chunked(BIG, b"200 OK", b"Content-Type: application/json")),
                         direct))


@pytest.mark.parametrize("direct", [True, False])
@sync
async def test_a_small_gzip_body_inflating_past_the_bound_is_cut(direct: bool) -> None:
    packed = gzip.compress(BIG)
    assert len(packed) < LIMIT
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
              b"Content-Length: %d\r\n\r\n" % len(packed)) + packed
    too_large(await chat(server_of(answer), direct))


@pytest.mark.parametrize("direct", [True, False])
@sync
async def test_answers_within_the_bound_still_work_and_the_next_call_too(direct: bool) -> None:
    server = server_of(chunked(BIG, b"200 OK", b"Content-Type: application/json"), ok())
    async with server:
        client = make(server, direct=direct, max_retries=0)
        client.max_response_bytes = LIMIT
        with pytest.raises(UpstreamError):
            await client.chat(BODY, api_key=None)
        assert (await client.chat(BODY, api_key=None))["choices"][0]["message"]["content"] == "hi"
        await client.aclose()


@pytest.mark.parametrize("direct", [True, False])
@sync
async def test_a_huge_error_body_keeps_its_status(direct: bool) -> None:
    body = json.dumps({"error": {"message": "slow down " + "y" * LIMIT * 2}}).encode()
    error = await chat(server_of(chunked(body, b"429 Too Many", b"Retry-After: 7")), direct)
    assert isinstance(error, UpstreamError) and error.status == 429
    assert error.headers.get("retry-after") == "7"
    assert len(error.message) < 1000


# -- streams -----------------------------------------------------------------------------------


def stream_client(*bodies: Body | httpx.Response) -> UpstreamClient:
    client = UpstreamClient(UpstreamSettings(base_url="https://up.test/v1", api_key=KEY,
                                             max_retries=0),
                            transport=stream_transport(list(bodies)))
    client.max_response_bytes = LIMIT
    return client


async def streamed(client: UpstreamClient) -> tuple[list[dict[str, Any]], UpstreamError | None]:
    got: list[dict[str, Any]] = []
    try:
        async for item in client.chat_stream(BODY, api_key=KEY):
            got.append(item)
    except UpstreamError as error:
        return got, error
    finally:
        await client.aclose()
    return got, None


def tool_chunk(arguments: str) -> dict[str, Any]:
    call = {"index": 0, "function": {"arguments": arguments}}
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


class Endless(Body):
    """A stream that would go on for ever; `sent` says how far the reader went."""

    def __init__(self, first: bytes, piece: bytes) -> None:
        super().__init__([first])
        self.piece = piece

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield self.pieces[0]
        while self.sent < 100_000:
            self.sent += 1
            yield self.piece


@sync
async def test_streamed_content_is_cut_mid_stream() -> None:
    body = Endless(sse([chunk("Hi")], done=False),
                   ("data: " + json.dumps(chunk("z" * 1000)) + "\n\n").encode())
    got, error = await streamed(stream_client(body))
    too_large(error)
    assert got[0]["choices"][0]["delta"]["content"] == "Hi"
    assert body.sent < 2 * LIMIT // 1000  # stopped at the bound, not at the end


@sync
async def test_streamed_tool_call_arguments_are_cut() -> None:
    body = Endless(sse([tool_chunk('{"a": "')], done=False),
                   ("data: " + json.dumps(tool_chunk("q" * 1000)) + "\n\n").encode())
    _, error = await streamed(stream_client(body))
    too_large(error)
    assert body.sent < 2 * LIMIT // 1000


@sync
async def test_an_event_that_never_ends_is_cut_before_its_first_token() -> None:
    body = Endless(b'data: {"choices": [{"delta": {"content": "', b"w" * 4096)
    got, error = await streamed(stream_client(body))
    assert got == []
    too_large(error)
    assert body.sent < 2 * LIMIT // 4096 + 20


@sync
async def test_a_stream_within_the_bound_is_whole() -> None:
    chunks = [chunk("a" * 1000) for _ in range(LIMIT // 1000 - 2)] + [chunk("", "stop")]
    got, error = await streamed(stream_client(Body([sse(chunks)])))
    assert error is None and len(got) == len(chunks)


@sync
async def test_a_json_answer_to_a_stream_request_is_bounded() -> None:
    answer = httpx.Response(200, headers={"content-type": "application/json"},
                            stream=Body([BIG[i:i + 4096] for i in range(0, len(BIG), 4096)]))
    _, error = await streamed(stream_client(answer))
    too_large(error)
