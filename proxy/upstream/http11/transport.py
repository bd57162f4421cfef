"""The lean HTTP/1.1 transport for httpx: `wire.Wire`'s keep-alive connections behind httpx's
transport interface.

Profiling a stateful turn showed the upstream call costing more of memproxy's CPU than
everything else together: httpcore's connection machinery and anyio's cancel scopes around every
read and write. memproxy talks to one upstream over a few long-lived HTTP/1.1 connections, which
needs none of that generality. httpx still does decoding (gzip), headers and everything above
the wire for the calls that go through it (streams, pass-through, models); `UpstreamClient`'s
JSON calls use the same `Wire` directly (`transport.wire`).

HTTP proxies from the environment are not supported here: `lean_transport()` returns None then
and the caller keeps httpx's own transport.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator

import httpx

from proxy.upstream.http11.wire import Connection, Head, Origin, Timeouts, Wire


def timeouts_of(request: httpx.Request) -> Timeouts:
    given = request.extensions.get("timeout") or {}
    return Timeouts(given.get("connect"), given.get("read"), given.get("write"))


class _Body(httpx.AsyncByteStream):
    """The response body, read from the connection as httpx asks for it. When it has been read
    to the end the connection goes back to the pool; closed early, the connection is dropped."""

    def __init__(self, wire: Wire, origin: Origin, conn: Connection, head: Head,
                 read_timeout: float | None) -> None:
        self._parts = wire.iter_body(origin, conn, head, read_timeout)
        self._conn: Connection | None = conn
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._parts:
                yield part
        except BaseException:
            await self.aclose()
            raise
        self._done = True
        self._conn = None  # released by the wire

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not self._done:
            conn.close()
            await self._parts.aclose()


class LeanTransport(httpx.AsyncBaseTransport):
    """See the module docstring. One instance per `httpx.AsyncClient`."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 max_idle_per_origin: int = 100) -> None:
        self.wire = Wire(ssl_context=ssl_context, max_idle_per_origin=max_idle_per_origin)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = Origin(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        body = await request.aread()
        timeouts = timeouts_of(request)
        conn, head = await self.wire.exchange(
            origin, _request_head(request, body) + body, head_only=request.method == "HEAD",
            timeouts=timeouts)
        stream = _Body(self.wire, origin, conn, head, timeouts.read)
        return httpx.Response(head.status, headers=head.headers, stream=stream,
                              extensions={"http_version": head.version,
                                          "reason_phrase": head.reason})

    async def aclose(self) -> None:
        await self.wire.aclose()


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
