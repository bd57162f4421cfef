"""Transparent pass-through (docs/design.md §3.2, invariant 5).

The client's exact bytes go upstream; the upstream's status, headers and raw body bytes come
back unchanged (compressed bodies stay compressed). Only the hop-by-hop headers and the
Authorization header (memproxy's key → the upstream's key) are touched, and no key memproxy
may send upstream ever comes back: it is masked, with a mask of its own length, wherever the
response quotes it (`upstream/masking.py`). A compressed error body is decoded to be masked,
and relayed decoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..upstream import Route, UpstreamClient
from ..upstream.bounded import BodyTooLarge, read_bounded
from ..upstream.masking import Masker

_DROP_RESPONSE_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
}


def _forward_request_headers(request: Request, api_key: str | None) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k != "authorization"}
    if api_key is not None:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


async def forward(
    request: Request, upstream: UpstreamClient, path: str, body: bytes, api_key: str | None,
    route: Route | None = None,
) -> Response:
    """Relay the request; a fallback may answer (`x-memproxy-upstream` says which) and the
    request deadline bounds everything up to the response head (docs/resilience.md)."""
    if route is None:
        route = Route.within(upstream.settings.request_deadline_s)
    response = await upstream.forward(
        request.method,
        path,
        headers=_forward_request_headers(request, api_key),
        content=body,
        api_key=api_key,
        stream=True,
        route=route,
    )
    masker = Masker(upstream.secrets(api_key))
    headers = masker.mask_headers({
        k: v for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE_HEADERS
    })
    if route.answered_by is not None:
        headers["x-memproxy-upstream"] = str(route.answered_by)
    if not masker:
        body: AsyncIterator[bytes] = response.aiter_raw()
    elif _encoded(headers) and response.status_code >= 400:
        return await _decoded_error(response, headers, masker, upstream.max_response_bytes)
    else:
        body = masker.stream(response.aiter_raw())
    return StreamingResponse(
        body,
        status_code=response.status_code,
        headers=headers,
        background=BackgroundTask(response.aclose),
    )


def _encoded(headers: dict[str, str]) -> bool:
    encoding = next((v for k, v in headers.items() if k.lower() == "content-encoding"), "")
    return encoding.strip().lower() not in ("", "identity")


async def _decoded_error(response: httpx.Response, headers: dict[str, str], masker: Masker,
                         upstream_limit: int) -> Response:
    """A compressed error body, decoded so that a key quoted in it can be masked (error bodies
    are small: gateways quote the key they rejected in them). The only body pass-through
    holds whole, so it is bounded by `[limits] max_upstream_response_bytes`."""
    try:
        content = await read_bounded(response, upstream_limit)  # decoded by httpx
    except (httpx.HTTPError, BodyTooLarge):
        content = b""  # unreadable, undecodable or too large: relaying its bytes could relay a key
    finally:
        await response.aclose()
    kept = {k: v for k, v in headers.items()
            if k.lower() not in ("content-encoding", "content-length")}
    return Response(masker.mask(content), status_code=response.status_code, headers=kept)
