"""Stored responses: `GET`, `DELETE /v1/responses/{id}`, `GET …/input_items`, `POST …/cancel`.

Every lookup is scoped to the caller's tenant: another tenant's response id is simply not
found. `GET …?stream=true` replays a stored response as the events a stream of it carries
(`starting_after` skips the events a client already has), regenerated from the stored object.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ...errors import ProxyError, bad_request
from ...fastjson import dumps
from ...responses import encode, replay
from ...store.response_types import StoredResponse
from ..auth import request_caller
from ..state import AppState

_RUNNING = ("queued", "in_progress")


def not_found(response_id: str) -> ProxyError:
    return ProxyError(404, f"Response with id '{response_id}' not found.",
                      param="response_id", code="response_not_found")


async def _stored(request: Request) -> tuple[AppState, StoredResponse]:
    state: AppState = request.app.state.memproxy
    tenant = request_caller(request).tenant
    response_id = request.path_params["response_id"]
    stored = await state.store.get_response(tenant, response_id)
    if stored is None or (stored.expires_at is not None and stored.expires_at <= time.time()):
        raise not_found(response_id)  # expired: gone now, though swept only hourly
    return state, stored


def _json(value: Any) -> Response:
    return Response(dumps(value), media_type="application/json")


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"'{name}' must be an integer", param=name) from None
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be between {low} and {high}", param=name)
    return value


def order_param(request: Request) -> str:
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'", param="order")
    return order


async def get_response(request: Request) -> Response:
    _state, stored = await _stored(request)
    if request.query_params.get("stream", "").lower() not in ("true", "1"):
        return _json(stored.body)
    after = int_param(request, "starting_after", -1, -1, 10**9)
    events = [e for e in replay(stored.body) if e["sequence_number"] > after]

    async def body():
        for event in events:
            yield encode(event)

    return StreamingResponse(body(), media_type="text/event-stream")


async def delete_response(request: Request) -> Response:
    state, stored = await _stored(request)
    state.background_responses.cancel(stored.tenant, stored.response_id)
    await state.store.delete_response(stored.tenant, stored.response_id)
    return _json({"id": stored.response_id, "object": "response.deleted", "deleted": True})


def page(items: list[dict[str, Any]], *, after: str | None, limit: int,
         order: str) -> tuple[list[dict[str, Any]], bool]:
    """One page of a list held whole (a response's own input items): `after` is an item id."""
    ordered = items if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise bad_request(f"no item with id '{after}' in this list", param="after")
        ordered = ordered[ids.index(after) + 1:]
    return ordered[:limit], len(ordered) > limit


def item_list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


async def list_input_items(request: Request) -> Response:
    _state, stored = await _stored(request)
    data, more = page(stored.input_items, after=request.query_params.get("after"),
                      limit=int_param(request, "limit", 20, 1, 100), order=order_param(request))
    return _json(item_list(data, more))


async def cancel_response(request: Request) -> Response:
    state, stored = await _stored(request)
    if not stored.body.get("background"):
        raise bad_request("Only responses created with background=true can be cancelled.",
                          param="response_id", code="not_cancellable")
    if stored.status not in _RUNNING:
        return _json(stored.body)  # already finished: cancelling changes nothing, as at OpenAI
    state.background_responses.cancel(stored.tenant, stored.response_id)
    body = {**stored.body, "status": "cancelled"}
    stored.body = body
    stored.status = "cancelled"
    await state.store.put_response(stored)
    return _json(body)
