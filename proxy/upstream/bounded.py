"""Reading an upstream's answer without letting it take unbounded memory.

An upstream (or whatever sits at its address) may send any amount: a red-team pass took memproxy
past 3 GB with one 100 MB answer. Every read of an answer memproxy keeps — a JSON body, an
error body, the text of a streamed answer — is therefore cut at `[limits]
max_upstream_response_bytes`: a `Content-Length` over the bound is refused before anything is
read, and otherwise the bytes are counted as they arrive (after decompression, so a small
gzip body cannot inflate past it either). Pass-through relays bytes without keeping them and
needs no bound (docs/resilience.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from proxy.upstream.errors import UpstreamError, response_too_large

__all__ = ["BodyTooLarge", "declared_too_large", "read_bounded"]


class BodyTooLarge(Exception):
    """Raised by the readers below; callers turn it into `response_too_large` (a 2xx answer)
    or an error without its body (an error status keeps its status)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upstream's body is over {limit} bytes")
        self.limit = limit

    def error(self) -> UpstreamError:
        return response_too_large(self.limit)


def declared_too_large(headers: Mapping[str, str], limit: int) -> bool:
    """Whether the `Content-Length` alone says the body is over `limit` (an encoded body may
    still grow when decoded; that is counted while reading)."""
    value = headers.get("content-length")
    if not value:
        return False
    try:
        return int(value.split(",")[0].strip()) > limit
    except ValueError:
        return False


async def read_bounded(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The decoded body, at most `limit` bytes. Over it: `BodyTooLarge`, or with `truncate`
    the first `limit` bytes (for error bodies, of which only the start matters). The caller
    closes the response; an unread rest makes httpx drop the connection rather than reuse it."""
    if declared_too_large(response.headers, limit) and not truncate:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        size += len(part)
        if size > limit:
            if not truncate:
                raise BodyTooLarge(limit)
            parts.append(part[: len(part) - (size - limit)])
            break
        parts.append(part)
    return b"".join(parts)
