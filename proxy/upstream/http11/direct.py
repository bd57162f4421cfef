"""JSON requests written straight onto the wire (`wire.Wire`), without httpx's objects.

A stateful turn makes one JSON call upstream, and under load httpx's layers around it (URL
parsing and merging, header objects, the auth/redirect/hook machinery, response decoders) cost
more CPU than the bytes on the wire. This module builds the request bytes itself (the target of
each URL parsed once), sends them over the shared keep-alive connections and returns status,
headers and the decoded body. It sends what httpx would send: the same headers, `Host`,
`Connection: keep-alive`, a `Content-Length`, and it undoes gzip or deflate as httpx would.

It only takes what it can send as it is: an `http`/`https` URL of plain ASCII and header values
without control characters. Anything else makes `prepare` return None and the caller uses httpx,
which quotes or rejects it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx

from proxy.upstream.bounded import BodyTooLarge
from proxy.upstream.http11.wire import Connection, Head, Origin, Timeouts, Wire

TARGETS_CACHE_MAX = 256
_UNSAFE = re.compile(r"[^\x20-\x7e\t]")  # only visible ASCII, space and tab go as they are


class Prepared(NamedTuple):
    method: str
    url: str
    origin: Origin
    payload: bytes  # the whole request: head and body


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", " (as httpx)
    content: bytes


def _plain(text: str) -> bool:
    return _UNSAFE.search(text) is None


class _Target(NamedTuple):
    origin: Origin
    host_header: str
    target: str


def _parse(url: str) -> _Target | None:
    if not _plain(url) or " " in url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
            or parts.password or parts.fragment:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host_header = f"[{host}]" if port in (None, default) else f"[{host}]:{port}"
    else:
        host_header = host if port in (None, default) else f"{host}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(Origin(parts.scheme, host, port or default), host_header, target)


class DirectJSON:
    """See the module docstring. `defaults` are the headers every request carries (the httpx
    client's own defaults: User-Agent, Connection)."""

    def __init__(self, wire: Wire, timeouts: Timeouts, defaults: Mapping[str, str]) -> None:
        self.wire = wire
        self.timeouts = timeouts
        self.defaults = dict(defaults)
        self._targets: dict[str, _Target | None] = {}

    def _target(self, url: str) -> _Target | None:
        try:
            return self._targets[url]
        except KeyError:
            pass
        if len(self._targets) >= TARGETS_CACHE_MAX:
            self._targets.clear()
        found = self._targets[url] = _parse(url)
        return found

    def prepare(self, method: str, url: str, headers: Mapping[str, str],
                body: bytes | None) -> Prepared | None:
        """The request's bytes, or None when it must go through httpx (see the docstring)."""
        target = self._target(url)
        if target is None:
            return None
        merged = {name.lower(): (name, value) for name, value in self.defaults.items()}
        for name, value in headers.items():  # case-insensitively, the request's win
            merged[name.lower()] = (name, value)
        lines = [f"{method} {target.target} HTTP/1.1", f"Host: {target.host_header}"]
        for lower, (name, value) in merged.items():
            if not (_plain(name) and _plain(value)) or ":" in name or " " in name:
                return None
            if lower not in ("host", "content-length", "transfer-encoding"):
                lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return Prepared(method, url, target.origin, head + (body or b""))

    async def open(self, prepared: Prepared) -> tuple[Connection, Head]:
        """Send the request and read the response head; failures are httpx
        `TransportError`s, as from `httpx.AsyncClient.send`."""
        return await self.wire.exchange(prepared.origin, prepared.payload,
                                        head_only=prepared.method == "HEAD", timeouts=self.timeouts)

    async def read(self, prepared: Prepared, conn: Connection, head: Head,
                   limit: int | None = None) -> Reply:
        """The whole response, its body decoded; failures are httpx `HTTPError`s, as from
        `httpx.Response.aread`. A body (read or decoded) over `limit` raises `BodyTooLarge`."""
        content = await self.wire.read_body(prepared.origin, conn, head, self.timeouts.read,
                                            limit)
        headers = headers_of(head)
        encoding = headers.get("content-encoding")
        if encoding and content:
            content = decode(content, encoding, limit)
        return Reply(head.status, headers, content)


def headers_of(head: Head) -> dict[str, str]:
    """Lower-case names; repeated headers joined with ", " (as httpx)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in head.headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _inflate(inflater, content: bytes, limit: int | None) -> bytes:  # type: ignore[no-untyped-def]
    if limit is None:
        return inflater.decompress(content) + inflater.flush()
    out = inflater.decompress(content, limit + 1)  # never more than limit + 1 bytes at once
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(limit)
    out += inflater.flush()
    if len(out) > limit:
        raise BodyTooLarge(limit)
    return out


def decode(content: bytes, encoding: str, limit: int | None = None) -> bytes:
    """Undo `Content-Encoding` (gzip, deflate; identity and unknown codings are left as they
    are, as httpx does without optional decoders). Bad data raises `httpx.DecodingError`;
    output over `limit` bytes (a small body inflating to a huge one) `BodyTooLarge`."""
    for coding in reversed([c.strip().lower() for c in encoding.split(",")]):
        try:
            if coding in ("gzip", "x-gzip"):
                content = _inflate(zlib.decompressobj(zlib.MAX_WBITS | 16), content, limit)
            elif coding == "deflate":
                try:
                    content = _inflate(zlib.decompressobj(), content, limit)
                except zlib.error:  # raw deflate, without the zlib header (some servers)
                    content = _inflate(zlib.decompressobj(-zlib.MAX_WBITS), content, limit)
        except zlib.error as exc:
            raise httpx.DecodingError(f"could not {coding}-decode the body: {exc}") from exc
    return content
