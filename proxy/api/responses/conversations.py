"""The Conversations API: `/v1/conversations` and its items (OpenAI's shapes).

A conversation is an ordered list of items that responses created with `conversation` read as
their history and append their input and output to. Everything is scoped to the caller's
tenant. With an agent named, a response in a conversation also runs in the agent's memproxy
conversation of the same id, so its memory and the conversation's items stay side by side.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ...errors import ProxyError, bad_request
from ...fastjson import dumps
from ...responses import new_id, normalize_input
from ...store.response_types import ApiConversation, IdConflictError
from ..auth import request_caller
from ..body import parse_json, read_body
from ..state import AppState
from .stored import int_param, item_list, order_param

MAX_CREATE_ITEMS = 20  # as at OpenAI: more go through POST …/items


def _json(value: Any) -> Response:
    return Response(dumps(value), media_type="application/json")


def conversation_object(conversation: ApiConversation) -> dict[str, Any]:
    return {"id": conversation.conversation_id, "object": "conversation",
            "created_at": int(conversation.created_at), "metadata": conversation.metadata}


def not_found(conversation_id: str) -> ProxyError:
    return ProxyError(404, f"Conversation with id '{conversation_id}' not found.",
                      param="conversation_id", code="conversation_not_found")


def check_metadata(value: Any) -> dict[str, str]:
    """OpenAI's metadata rule: up to 16 string pairs, keys ≤ 64 and values ≤ 512 characters."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in value.items()):
        raise bad_request("'metadata' must be an object of at most 16 string pairs (keys up to"
                          " 64 characters, values up to 512)", param="metadata")
    return value


async def _body(request: Request, state: AppState) -> dict[str, Any]:
    raw = await read_body(request, state.settings.limits)
    return parse_json(raw) if raw.strip() else {}


def _items(body: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
    value = body.get("items")
    if value is None:
        return []
    if not isinstance(value, list) or (limit is not None and len(value) > limit):
        more = f" of at most {limit} items" if limit is not None else ""
        raise bad_request(f"'items' must be an array{more}", param="items")
    return normalize_input(value, param="items") if value else []


async def create_conversation(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    tenant = request_caller(request).tenant
    body = await _body(request, state)
    conversation = ApiConversation(new_id("conv"), tenant, check_metadata(body.get("metadata")),
                                   time.time())
    try:
        await state.store.create_api_conversation(conversation,
                                                  _items(body, MAX_CREATE_ITEMS))
    except IdConflictError as exc:
        raise _conflict(exc) from None
    return _json(conversation_object(conversation))


async def _conversation(request: Request) -> tuple[AppState, ApiConversation]:
    state: AppState = request.app.state.memproxy
    tenant = request_caller(request).tenant
    conversation_id = request.path_params["conversation_id"]
    conversation = await state.store.get_api_conversation(tenant, conversation_id)
    if conversation is None:
        raise not_found(conversation_id)
    return state, conversation


async def get_conversation(request: Request) -> Response:
    _state, conversation = await _conversation(request)
    return _json(conversation_object(conversation))


async def update_conversation(request: Request) -> Response:
    state, conversation = await _conversation(request)
    body = await _body(request, state)
    if "metadata" not in body:
        raise bad_request("'metadata' is required", param="metadata")
    updated = await state.store.update_api_conversation(
        conversation.tenant, conversation.conversation_id, check_metadata(body["metadata"]))
    if updated is None:
        raise not_found(conversation.conversation_id)
    return _json(conversation_object(updated))


async def delete_conversation(request: Request) -> Response:
    state, conversation = await _conversation(request)
    await state.store.delete_api_conversation(conversation.tenant, conversation.conversation_id)
    return _json({"id": conversation.conversation_id, "object": "conversation.deleted",
                  "deleted": True})


async def add_items(request: Request) -> Response:
    state, conversation = await _conversation(request)
    items = _items(await _body(request, state), None)
    if not items:
        raise bad_request("'items' must be a non-empty array", param="items")
    try:
        added = await state.store.add_conversation_items(conversation.tenant,
                                                         conversation.conversation_id, items)
    except IdConflictError as exc:
        raise _conflict(exc) from None
    if not added:
        raise not_found(conversation.conversation_id)
    return _json(item_list(items, False))


async def list_items(request: Request) -> Response:
    state, conversation = await _conversation(request)
    data, more = await state.store.list_conversation_items(
        conversation.tenant, conversation.conversation_id,
        after=request.query_params.get("after"),
        limit=int_param(request, "limit", 20, 1, 100), order=order_param(request))
    return _json(item_list(data, more))


def _conflict(exc: IdConflictError) -> ProxyError:
    return bad_request(f"an item with id '{exc.id}' is already in this conversation (or twice"
                       " in this request): leave 'id' out to have one assigned",
                       param="items", code="duplicate_item_id")


def _item_not_found(item_id: str) -> ProxyError:
    return ProxyError(404, f"Item with id '{item_id}' not found.", param="item_id",
                      code="item_not_found")


async def get_item(request: Request) -> Response:
    state, conversation = await _conversation(request)
    item_id = request.path_params["item_id"]
    item = await state.store.get_conversation_item(conversation.tenant,
                                                   conversation.conversation_id, item_id)
    if item is None:
        raise _item_not_found(item_id)
    return _json(item)


async def delete_item(request: Request) -> Response:
    state, conversation = await _conversation(request)
    item_id = request.path_params["item_id"]
    if not await state.store.delete_conversation_item(conversation.tenant,
                                                      conversation.conversation_id, item_id):
        raise _item_not_found(item_id)
    return _json(conversation_object(conversation))  # OpenAI answers with the conversation
