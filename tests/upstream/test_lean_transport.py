"""The lean HTTP/1.1 transport against a real socket server that scripts the wire bytes, so
that framing, keep-alive reuse, stale connections and failures are exercised exactly."""

from __future__ import annotations

import asyncio
import functools
import gzip
from collections.abc import Awaitable, Callable

import httpx
import pytest

from proxy.upstream.http11.transport import LeanTransport, lean_transport


def sync(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop (the suite does not use an asyncio plugin)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return lines[0], headers, body


class WireServer:
    """Accepts connections; `handler(reader, writer, connection_number)` speaks for each."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> WireServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self.connections)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


def keep_alive_json(server: WireServer, body: bytes = b'{"ok": true}') -> Handler:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        while True:
            server.requests.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    return handler


def client(**kw) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=LeanTransport(), **kw)


@sync
async def test_keep_alive_reuses_one_connection_and_sends_the_body() -> None:
    server = WireServer(lambda r, w, n: None)  # replaced below
    server.handler = keep_alive_json(server)
    async with server, client() as http:
        for i in range(5):
            response = await http.post(f"{server.url}/v1/chat/completions",
                                       json={"n": i}, headers={"X-Test": "yes"})
            assert response.status_code == 200
            assert response.json() == {"ok": True}
    assert server.connections == 1
    assert [r[2] for r in server.requests] == [b'{"n":%d}' % i for i in range(5)]
    line, headers, _ = server.requests[0]
    assert line == b"POST /v1/chat/completions HTTP/1.1"
    assert headers[b"x-test"] == b"yes"
    assert headers[b"host"].startswith(b"127.0.0.1:")


@sync
async def test_chunked_gzip_and_streaming_bodies() -> None:
    payload = gzip.compress(b'{"text": "' + b"x" * 5000 + b'"}')

    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Encoding: gzip\r\n\r\n")
            for start in range(0, len(payload), 700):
                part = payload[start:start + 700]
                writer.write(b"%x\r\n" % len(part) + part + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\nX-Trailer: 1\r\n\r\n")

    async with WireServer(handler) as server, client() as http:
        first = await http.get(server.url + "/a")
        assert first.json() == {"text": "x" * 5000}
        async with http.stream("GET", server.url + "/b") as second:
            raw = b"".join([chunk async for chunk in second.aiter_raw()])
        assert raw == payload
        assert server.connections == 1  # both bodies fully read: the connection was reused


@sync
async def test_body_delimited_by_close_and_http_10() -> None:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nhello until close")
        await writer.drain()

    async with WireServer(handler) as server, client() as http:
        assert (await http.get(server.url)).text == "hello until close"
        assert (await http.get(server.url)).text == "hello until close"
    assert server.connections == 2


@sync
async def test_stale_keep_alive_connection_is_replaced_once() -> None:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then close while the client keeps the connection idle

    async with WireServer(handler) as server, client() as http:
        assert (await http.post(server.url, content=b"1")).text == "ok"
        await asyncio.sleep(0.05)
        assert (await http.post(server.url, content=b"2")).text == "ok"
    assert server.connections == 2


@sync
async def test_reused_connection_closed_without_an_answer_is_retried_on_a_new_one() -> None:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if n == 1:
            await read_request(reader)  # the second request arrives on the kept-alive
            return  # connection, and the server closes it without a byte of answer
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async with WireServer(handler) as server, client() as http:
        assert (await http.post(server.url, content=b"1")).text == "ok"
        assert (await http.post(server.url, content=b"2")).text == "ok"
    assert server.connections == 2


@sync
async def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        await read_request(reader)

    async with WireServer(handler) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url, content=b"1")
    assert server.connections == 1  # not retried: the request itself may be the problem


@sync
async def test_connection_refused_is_httpx_connect_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: refused at once
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(url)


@sync
async def test_read_timeout_is_httpx_read_timeout() -> None:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        await read_request(reader)
        await asyncio.sleep(5)

    async with WireServer(handler) as server, client(timeout=httpx.Timeout(5, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)


@sync
async def test_truncated_body_and_garbage_are_protocol_errors() -> None:
    async def truncated(reader, writer, n):  # type: ignore[no-untyped-def]
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    async def garbage(reader, writer, n):  # type: ignore[no-untyped-def]
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    for handler in (truncated, garbage):
        async with WireServer(handler) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url)


@sync
async def test_closing_a_stream_early_drops_the_connection() -> None:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"a" * 200000)
            await writer.drain()

    async with WireServer(handler) as server, client() as http:
        async with http.stream("GET", server.url) as response:
            async for _ in response.aiter_raw():
                break  # give up after the first piece
        assert (await http.get(server.url)).content == b"a" * 200000
    assert server.connections == 2  # the half-read connection was not reused


@sync
async def test_no_body_statuses_and_head() -> None:
    async def handler(reader, writer, n):  # type: ignore[no-untyped-def]
        while True:
            line, _, _ = await read_request(reader)
            if line.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async with WireServer(handler) as server, client() as http:
        assert (await http.head(server.url)).status_code == 200
        assert (await http.delete(server.url)).status_code == 204
        assert (await http.head(server.url)).status_code == 200
    assert server.connections == 1


def test_environment_proxies_fall_back_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert lean_transport() is None
    monkeypatch.delenv("HTTPS_PROXY")
    for name in ("HTTP_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(lean_transport(), LeanTransport)
