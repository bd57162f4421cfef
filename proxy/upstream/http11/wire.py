"""HTTP/1.1 on the wire: keep-alive connections to the upstreams and the framing of responses.

memproxy talks to one or a few upstreams over long-lived HTTP/1.1 connections. This module is
that and no more, shared by two callers:

- `transport.LeanTransport`, the adapter that lets httpx use it (streams, pass-through, models);
- `UpstreamClient`'s JSON calls (a stateful turn's chat completion), which skip httpx's request
  and response objects altogether: profiling showed httpx's layers (URL parsing, header merging,
  auth and redirect machinery, decoders) costing more CPU than the rest of the call.

What it does:

- a pool of idle keep-alive connections per origin (plain TCP or TLS);
- requests written in one `write()`; responses framed by Content-Length, chunked encoding, or
  connection close; 1xx, HEAD, 204 and 304 handled;
- a connection is reused only after its response was read to the end; a reused connection that
  fails before answering a single byte (the server closed it while idle) is replaced once;
- connect, read and write timeouts, and failures raised as httpx's exception classes, so
  `UpstreamClient`'s error mapping and retry policy are the same whichever caller it is.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NamedTuple

import httpx

from proxy.upstream.bounded import BodyTooLarge

MAX_HEAD_BYTES = 256 * 1024
READ_SIZE = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})


class Origin(NamedTuple):
    scheme: str  # "http" or "https"
    host: str
    port: int


class Timeouts(NamedTuple):
    """Seconds, or None for no limit (httpx's connect, read and write timeouts)."""

    connect: float | None
    read: float | None
    write: float | None


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


@dataclass
class Head:
    """A response's status line and headers, and how its body is framed."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    version: bytes
    keep_alive: bool
    chunked: bool
    length: int | None  # None with chunked, or when the body ends with the connection


@dataclass
class _Pool:
    idle: list[Connection] = field(default_factory=list)


class StaleConnection(Exception):
    """A kept-alive connection the server had closed: try again on a fresh one."""


class Wire:
    """Keep-alive connections per origin; see the module docstring. One per process."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 max_idle_per_origin: int = 100) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle_per_origin
        self._pools: dict[Origin, _Pool] = {}
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    # -- connections -------------------------------------------------------------------------

    def release(self, origin: Origin, conn: Connection, reusable: bool) -> None:
        """Give a connection back after its response: kept idle when `reusable` and open."""
        if not reusable or self._closed or not conn.usable():
            conn.close()
            return
        pool = self._pools.setdefault(origin, _Pool())
        if len(pool.idle) >= self._max_idle:
            conn.close()
            return
        conn.reused = True
        pool.idle.append(conn)

    def _take(self, origin: Origin) -> Connection | None:
        pool = self._pools.get(origin)
        while pool is not None and pool.idle:
            conn = pool.idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> Connection:
        scheme, host, port = origin
        tls = scheme == "https"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=MAX_HEAD_BYTES,
                    ssl=self._ssl_context() if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return Connection(reader, writer)

    # -- one exchange ------------------------------------------------------------------------

    async def exchange(self, origin: Origin, payload: bytes, *, head_only: bool,
                       timeouts: Timeouts) -> tuple[Connection, Head]:
        """Send `payload` (a whole request) and read the response head. The caller then reads
        the body (`read_body` or `iter_body`), which releases the connection."""
        for _ in range(2):
            conn = self._take(origin) or await self._connect(origin, timeouts.connect)
            try:
                return conn, await self._exchange(conn, payload, head_only, timeouts)
            except StaleConnection:
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
        raise httpx.RemoteProtocolError("the upstream closed the connection without answering")

    async def _exchange(self, conn: Connection, payload: bytes, head_only: bool,
                        timeouts: Timeouts) -> Head:
        try:
            conn.writer.write(payload)
            if conn.writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeouts.write):
                    await conn.writer.drain()
        except TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request upstream") from exc
        except (ConnectionError, OSError) as exc:
            if conn.reused:
                raise StaleConnection from exc
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        while True:
            status, reason, headers, version = await _read_head(conn, timeouts.read)
            if not 100 <= status < 200 or status == 101:
                break
        return _framing(status, reason, headers, version, head_only)

    async def read_body(self, origin: Origin, conn: Connection, head: Head,
                        read_timeout: float | None, limit: int | None = None) -> bytes:
        """The whole body; the connection goes back to the pool (or is closed on failure).
        A body over `limit` bytes raises `BodyTooLarge`: a `Content-Length` over it before
        anything is read, a chunked or close-delimited one as soon as it has passed it."""
        reader = conn.reader
        try:
            if head.length is not None and not head.chunked:
                if limit is not None and head.length > limit:
                    raise BodyTooLarge(limit)
                data = b""
                if head.length:
                    data = await _read(reader.readexactly(head.length), read_timeout)
                self.release(origin, conn, head.keep_alive)
                return data
            parts = []
            size = 0
            async for part in self._frames(conn, head, read_timeout):
                size += len(part)
                if limit is not None and size > limit:
                    raise BodyTooLarge(limit)
                parts.append(part)
        except BaseException:
            conn.close()
            raise
        self.release(origin, conn, head.keep_alive and (head.chunked or head.length is not None))
        return b"".join(parts)

    async def iter_body(self, origin: Origin, conn: Connection, head: Head,
                        read_timeout: float | None) -> AsyncIterator[bytes]:
        """The body piece by piece. Read to the end, the connection goes back to the pool;
        the caller must `conn.close()` if it stops early."""
        async for part in self._frames(conn, head, read_timeout):
            yield part
        self.release(origin, conn, head.keep_alive and (head.chunked or head.length is not None))

    async def _frames(self, conn: Connection, head: Head,
                      read_timeout: float | None) -> AsyncIterator[bytes]:
        reader = conn.reader
        if head.chunked:
            while True:
                line = await _read(reader.readuntil(b"\r\n"), read_timeout)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise httpx.RemoteProtocolError("malformed chunk size") from exc
                if size == 0:
                    while (await _read(reader.readuntil(b"\r\n"), read_timeout)) != b"\r\n":
                        pass  # trailers
                    return
                # In pieces: one chunk may declare any size, and must not be held whole.
                left = size
                while left > 0:
                    data = await _read(reader.read(min(left, READ_SIZE)), read_timeout)
                    if not data:
                        raise httpx.RemoteProtocolError(
                            "the upstream closed the connection mid-body")
                    left -= len(data)
                    yield data
                if await _read(reader.readexactly(2), read_timeout) != b"\r\n":
                    raise httpx.RemoteProtocolError("malformed chunk")
        elif head.length is not None:
            left = head.length
            while left > 0:
                data = await _read(reader.read(min(left, READ_SIZE)), read_timeout)
                if not data:
                    raise httpx.RemoteProtocolError("the upstream closed the connection mid-body")
                left -= len(data)
                yield data
        else:  # delimited by the connection closing
            while data := await _read(reader.read(READ_SIZE), read_timeout):
                yield data

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()


async def _read(coro, timeout: float | None):  # type: ignore[no-untyped-def]
    """Await one read of the body with the read timeout; failures as httpx exceptions."""
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out reading the upstream response") from exc
    except asyncio.IncompleteReadError as exc:
        raise httpx.RemoteProtocolError("the upstream closed the connection mid-body") from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError("an over-long line in the upstream's body") from exc
    except (ConnectionError, OSError) as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


async def _read_head(conn: Connection, timeout: float | None):  # type: ignore[no-untyped-def]
    try:
        async with asyncio.timeout(timeout):
            raw = await conn.reader.readuntil(b"\r\n\r\n")
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out waiting for the upstream to answer") from exc
    except asyncio.IncompleteReadError as exc:
        if conn.reused and not exc.partial:
            raise StaleConnection from exc
        raise httpx.RemoteProtocolError(
            "the upstream closed the connection without a complete response") from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError("the upstream's response head is too large") from exc
    except (ConnectionError, OSError) as exc:
        if conn.reused:
            raise StaleConnection from exc
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


def _framing(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], version: bytes,
             head_only: bool) -> Head:
    lower: dict[bytes, bytes] = {}
    for name, value in headers:
        lower.setdefault(name.lower(), value)
    connection = lower.get(b"connection", b"").lower()
    keep_alive = b"close" not in connection and (version == b"HTTP/1.1"
                                                 or b"keep-alive" in connection)
    chunked = b"chunked" in lower.get(b"transfer-encoding", b"").lower()
    length: int | None = None
    if head_only or status in NO_BODY_STATUSES:
        length = 0
        chunked = False
    elif not chunked and b"content-length" in lower:
        try:
            length = int(lower[b"content-length"])
        except ValueError as exc:
            raise httpx.RemoteProtocolError("malformed Content-Length") from exc
        if length < 0:
            raise httpx.RemoteProtocolError("malformed Content-Length")
    return Head(status, reason, headers, version, keep_alive, chunked, length)
