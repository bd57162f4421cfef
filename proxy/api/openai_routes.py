"""The OpenAI endpoints memproxy relays without memory: models and embeddings."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ProxyError
from ..upstream import UpstreamError
from .body import read_body
from .chat import error_response
from .passthrough import forward
from .state import AppState


async def list_models(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    try:
        await state.auth.authenticate(request.headers.get("authorization"))
        api_key = state.upstream.resolve_key(request.headers.get("authorization"))
        models = await state.upstream.list_models(api_key=api_key)
    except (ProxyError, UpstreamError) as exc:
        return error_response(exc)
    return JSONResponse(models)


async def embeddings(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    try:
        await state.auth.authenticate(request.headers.get("authorization"))
        api_key = state.upstream.resolve_key(request.headers.get("authorization"))
        raw = await read_body(request, state.settings.limits)
        return await forward(request, state.upstream, "/embeddings", raw, api_key)
    except (ProxyError, UpstreamError) as exc:
        return error_response(exc)
