"""Pass-through: a client's request relayed to the upstream unchanged
(docs/design.md §6, invariant 5).

`UpstreamClient` mixes this in. The bytes go as they came (only a fallback that renames the
model gets a rewritten body) and the response comes back whatever its status; what memproxy
adds is what a pass-through request can use without being changed: retries of connection
failures, the circuit breakers, the deadline up to the response head, and the fallbacks — a
429/5xx is relayed as it is unless another upstream serving the model is left to try.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from proxy.upstream.errors import (
    RETRYABLE_STATUSES,
    UpstreamError,
    dumps,
    error_from_transport,
    loads,
)
from proxy.upstream.policy import ResilientCalls
from proxy.upstream.routing import Endpoint, Route, model_of

__all__ = ["HOP_BY_HOP", "Forwarding"]

HOP_BY_HOP = frozenset(
    "connection keep-alive transfer-encoding te trailer upgrade host content-length".split()
)


class Forwarding(ResilientCalls):
    """`forward()` (a mixin of `UpstreamClient`, which provides `_http`)."""

    _http: httpx.AsyncClient

    async def forward(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        api_key: str | None,
        stream: bool,
        route: Route | None = None,
    ) -> httpx.Response:
        """Send a client's request on unchanged and return the open upstream response.

        `content` goes byte-for-byte (unless a fallback renames the model); `headers` go minus
        hop-by-hop ones. With `api_key`, Authorization becomes `Bearer {api_key}`; with None the
        caller's headers are sent as given, so the caller must drop its own client's
        Authorization (memproxy's key) when the upstream should not see it. A fallback gets its
        own key or no Authorization. The response is returned whatever its status (only a
        429/5xx with a fallback still to try is not); the caller relays `aiter_raw()` (or reads
        it when `stream` is false) and must `aclose()` it. Only connection failures before
        anything was sent are retried.
        """
        route = route if route is not None else Route()
        out = _forward_headers(headers)
        # The body is parsed only when a fallback needs the model (to choose or rename it).
        picky = any(e.models or e.rename for e in self.endpoints[1:])
        parsed = _parse_body(content) if picky else None
        candidates = self._candidates(model_of(parsed) if parsed is not None else None)

        async def call(endpoint: Endpoint) -> httpx.Response:
            send_headers = dict(out)
            key = endpoint.key(api_key)
            if key or endpoint.is_fallback:
                send_headers = {k: v for k, v in out.items() if k.lower() != "authorization"}
            if key:
                send_headers["Authorization"] = f"Bearer {key}"
            body = content
            if endpoint.rename is not None and parsed is not None:
                body = dumps(endpoint.body(parsed))
            request = self._http.build_request(method, endpoint.url(path), content=body,
                                               headers=send_headers)
            response = await self._with_retries(
                endpoint, route, lambda: self._forward_once(request, endpoint.host, stream),
                _status_error,
            )
            if response.status_code in RETRYABLE_STATUSES and endpoint is not candidates[-1]:
                await response.aclose()
                raise UpstreamError(response.status_code,
                                    f"upstream returned HTTP {response.status_code}",
                                    retryable=False, fallback=True)
            return response

        return await self._routed(model_of(parsed) if parsed is not None else None, route, call)

    async def _forward_once(self, request: httpx.Request, host: str, stream: bool
                            ) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, host=host) from exc
        if not stream:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                await response.aclose()
                error = error_from_transport(exc, host=host)
                error.retryable = False
                raise error from exc
        return response


def _parse_body(content: bytes) -> dict[str, Any] | None:
    try:
        parsed = loads(content) if content else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _status_error(response: httpx.Response) -> UpstreamError | None:
    """A relayed response's status as the breaker sees it (4xx: the upstream is alive).

    A plain 500 does not count here: a pass-through body is the client's, unchecked, and some
    servers answer a body they cannot handle with 500; counting it would let one client's bad
    requests open the circuit for everyone. 502/503/504 and connection failures still count
    (stateful calls, whose bodies memproxy builds, count 500 too)."""
    if response.status_code == 500 or (response.status_code != 429
                                        and response.status_code < 500):
        return None
    return UpstreamError(response.status_code, f"HTTP {response.status_code}")


def _forward_headers(headers: Mapping[str, str]) -> dict[str, str | bytes]:
    """The client's headers minus hop-by-hop ones (and those its Connection header names).

    A value that is not ASCII goes on as the very bytes the client sent (the server decoded
    them as latin-1): httpx would refuse it as text, which was a 500 (issue #21.6)."""
    connection_named = {
        token.strip().lower()
        for name, value in headers.items()
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return {
        name: value if value.isascii() else value.encode("latin-1")
        for name, value in headers.items()
        if not (
            (lower := name.lower()) in HOP_BY_HOP
            or lower.startswith("proxy-")
            or lower in connection_named
        )
    }
