"""A lean HTTP/1.1 transport for httpx: keep-alive connections over asyncio streams.

Profiling a stateful turn showed the upstream call costing more of memproxy's CPU than
everything else together: httpcore's connection machinery and anyio's cancel scopes around every
read and write. memproxy talks to one upstream over a few long-lived HTTP/1.1 connections, which
needs none of that generality, so this transport does exactly that and no more:

- a pool of idle keep-alive connections per origin (plain TCP or TLS);
- requests written in one `write()`, responses framed by Content-Length, chunked encoding, or
  connection close; 1xx, HEAD, 204 and 304 handled;
- a connection is reused only after its response was read to the end; a reused connection that
  fails before answering a single byte (the server closed it while idle) is replaced once;
- httpx's timeouts (connect, read, write) and httpx's exception classes, so `UpstreamClient`'s
  error mapping and retry policy work unchanged; httpx still does decoding (gzip), headers and
  everything above the wire.

HTTP proxies from the environment are not supported here: `lean_transport()` returns None then
and the caller keeps httpx's own transport.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

MAX_HEAD_BYTES = 256 * 1024
READ_SIZE = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Pool:
    idle: list[_Connection] = field(default_factory=list)


def _timeout(request: httpx.Request, kind: str) -> float | None:
    return (request.extensions.get("timeout") or {}).get(kind)


class _Body(httpx.AsyncByteStream):
    """The response body, read from the connection as httpx asks for it. When it has been read
    to the end the connection goes back to the pool; closed early, the connection is dropped."""

    def __init__(self, transport: LeanTransport, key: tuple, conn: _Connection,
                 request: httpx.Request, length: int | None, chunked: bool,
                 keep_alive: bool) -> None:
        self._transport = transport
        self._key = key
        self._conn = conn
        self._read_timeout = _timeout(request, "read")
        self._length = length
        self._chunked = chunked
        self._keep_alive = keep_alive
        self._done = False

    async def _read(self, coro):  # type: ignore[no-untyped-def]
        try:
            async with asyncio.timeout(self._read_timeout):
                return await coro
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out reading the upstream response") from exc
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError("the upstream closed the connection mid-body") from exc
        except (ConnectionError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        if self._chunked:
            while True:
                line = await self._read(reader.readuntil(b"\r\n"))
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise httpx.RemoteProtocolError("malformed chunk size") from exc
                if size == 0:
                    while (await self._read(reader.readuntil(b"\r\n"))) != b"\r\n":
                        pass  # trailers
                    break
                data = await self._read(reader.readexactly(size + 2))
                yield data[:-2]
        elif self._length is not None:
            left = self._length
            while left > 0:
                data = await self._read(reader.read(min(left, READ_SIZE)))
                if not data:
                    raise httpx.RemoteProtocolError("the upstream closed the connection mid-body")
                left -= len(data)
                yield data
        else:  # delimited by the connection closing
            self._keep_alive = False
            while data := await self._read(reader.read(READ_SIZE)):
                yield data
        self._done = True
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is None:
            return
        if self._done and self._keep_alive and conn.usable():
            self._transport._put(self._key, conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._release()


class LeanTransport(httpx.AsyncBaseTransport):
    """See the module docstring. One instance per `httpx.AsyncClient`."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 max_idle_per_origin: int = 100) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle_per_origin
        self._pools: dict[tuple, _Pool] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _put(self, key: tuple, conn: _Connection) -> None:
        pool = self._pools.setdefault(key, _Pool())
        if self._closed or len(pool.idle) >= self._max_idle:
            conn.close()
            return
        conn.reused = True
        pool.idle.append(conn)

    def _take(self, key: tuple) -> _Connection | None:
        pool = self._pools.get(key)
        while pool is not None and pool.idle:
            conn = pool.idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, request: httpx.Request, key: tuple) -> _Connection:
        scheme, host, port = key
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=MAX_HEAD_BYTES,
                    ssl=self._ssl_context() if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        key = (url.scheme, url.host, port)
        body = await request.aread()
        head = _request_head(request, body)
        for _ in range(2):
            conn = self._take(key) or await self._connect(request, key)
            try:
                return await self._exchange(request, key, conn, head + body)
            except _StaleConnection:
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
        raise httpx.RemoteProtocolError("the upstream closed the connection without answering")

    async def _exchange(self, request: httpx.Request, key: tuple, conn: _Connection,
                        payload: bytes) -> httpx.Response:
        try:
            conn.writer.write(payload)
            async with asyncio.timeout(_timeout(request, "write")):
                await conn.writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request upstream") from exc
        except (ConnectionError, OSError) as exc:
            if conn.reused:
                raise _StaleConnection from exc
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        while True:
            status, reason, headers, version = await self._read_head(request, conn)
            if not 100 <= status < 200 or status == 101:
                break
        lower = {}
        for name, value in headers:
            lower.setdefault(name.lower(), value)
        connection = lower.get(b"connection", b"").lower()
        keep_alive = b"close" not in connection and (version == b"HTTP/1.1"
                                                     or b"keep-alive" in connection)
        chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
        length: int | None = None
        if request.method == "HEAD" or status in NO_BODY_STATUSES:
            length = 0
            chunked = False
        elif not chunked and b"content-length" in lower:
            try:
                length = int(lower[b"content-length"])
            except ValueError as exc:
                raise httpx.RemoteProtocolError("malformed Content-Length") from exc
        stream = _Body(self, key, conn, request, length, chunked, keep_alive)
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": version, "reason_phrase": reason})

    async def _read_head(self, request: httpx.Request, conn: _Connection):  # type: ignore[no-untyped-def]
        try:
            async with asyncio.timeout(_timeout(request, "read")):
                raw = await conn.reader.readuntil(b"\r\n\r\n")
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out waiting for the upstream to answer") from exc
        except asyncio.IncompleteReadError as exc:
            if conn.reused and not exc.partial:
                raise _StaleConnection from exc
            raise httpx.RemoteProtocolError(
                "the upstream closed the connection without a complete response") from exc
        except asyncio.LimitOverrunError as exc:
            raise httpx.RemoteProtocolError("the upstream's response head is too large") from exc
        except (ConnectionError, OSError) as exc:
            if conn.reused:
                raise _StaleConnection from exc
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        lines = raw[:-4].split(b"\r\n")
        try:
            version, status_text, *rest = lines[0].split(b" ", 2)
            status = int(status_text)
        except ValueError as exc:
            raise httpx.RemoteProtocolError("malformed status line from the upstream") from exc
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError("malformed header line from the upstream")
            headers.append((name.strip(), value.strip()))
        return status, (rest[0] if rest else b""), headers, version

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed: try again on a fresh one."""


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    has_length = False
    for name, value in request.headers.raw:
        lower = name.lower()
        if lower == b"transfer-encoding":
            continue  # the body is sent whole, with a Content-Length
        if lower == b"content-length":
            has_length = True
        lines.append(name + b": " + value)
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def lean_transport() -> LeanTransport | None:
    """The lean transport, or None when the environment configures an HTTP proxy (which this
    transport does not speak; httpx's own transport does)."""
    proxies = urllib.request.getproxies()
    if any(k in proxies for k in ("http", "https", "all")):
        return None
    return LeanTransport()
