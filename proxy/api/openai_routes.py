"""The OpenAI endpoints memproxy relays without memory: models, embeddings and the legacy
completions.

In A/B mode (`[ab] expose_raw_models`) the model list also names each model with the memory
suffix; `chat.py` routes a request by that suffix.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .auth import request_caller
from .body import read_body
from .passthrough import forward
from .state import AppState


def with_memory_aliases(models: dict[str, Any], suffix: str) -> dict[str, Any]:
    """A/B mode (docs/ab.md): each upstream model followed by a copy named `NAME<suffix>`, so
    a chat UI's model menu offers both the raw model and the one with memory.

    Returns a new dict (the upstream's list is cached and shared); a payload without a `data`
    list is returned unchanged.
    """
    data = models.get("data")
    if not isinstance(data, list):
        return models
    listed: list[Any] = []
    for model in data:
        listed.append(model)
        name = model.get("id") if isinstance(model, dict) else None
        if isinstance(name, str) and name and not name.endswith(suffix):
            listed.append({**model, "id": name + suffix})
    return {**models, "data": listed}


async def list_models(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    request_caller(request)  # any valid key may list the models
    api_key = state.upstream.resolve_key(request.headers.get("authorization"))
    models = await state.upstream.list_models(api_key=api_key)
    if state.settings.ab.expose_raw_models:
        models = with_memory_aliases(models, state.settings.ab.memory_suffix)
    return JSONResponse(models)


async def embeddings(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    request_caller(request)  # any valid key may embed
    api_key = state.upstream.resolve_key(request.headers.get("authorization"))
    raw = await read_body(request, state.settings.limits)
    return await forward(request, state.upstream, "/embeddings", raw, api_key)


async def completions(request: Request) -> Response:
    """`POST /completions` (legacy text completions): passed through, no memory; streamed
    answers stream through."""
    state: AppState = request.app.state.memproxy
    request_caller(request)  # any valid key may complete
    api_key = state.upstream.resolve_key(request.headers.get("authorization"))
    raw = await read_body(request, state.settings.limits)
    return await forward(request, state.upstream, "/completions", raw, api_key)
