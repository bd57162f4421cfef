"""Transparent pass-through (docs/design.md §3.2, invariant 5).

The client's exact bytes go upstream; the upstream's status, headers and raw body bytes come
back unchanged (compressed bodies stay compressed). Only the hop-by-hop headers and the
Authorization header (memproxy's key → the upstream's key) are touched.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..upstream import Route, UpstreamClient

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
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE_HEADERS
    }
    if route.answered_by is not None:
        headers["x-memproxy-upstream"] = str(route.answered_by)
    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        headers=headers,
        background=BackgroundTask(response.aclose),
    )
