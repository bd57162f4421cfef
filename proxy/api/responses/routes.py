"""Where the Responses and Conversations APIs are served: every base URL a client may use
(`/v1`, bare, an agent's `/agents/{agent}/v1`, a conversation's
`/agents/{agent}/conversations/{conversation}/v1`)."""

from __future__ import annotations

from starlette.routing import Route

from . import conversations, stored
from .create import create_response

BASES = ["/v1", "", "/agents/{agent}/v1", "/agents/{agent}/conversations/{conversation}/v1"]

_ENDPOINTS = [
    ("/responses", create_response, "POST"),
    ("/responses/{response_id}", stored.get_response, "GET"),
    ("/responses/{response_id}", stored.delete_response, "DELETE"),
    ("/responses/{response_id}/input_items", stored.list_input_items, "GET"),
    ("/responses/{response_id}/cancel", stored.cancel_response, "POST"),
    ("/conversations", conversations.create_conversation, "POST"),
    ("/conversations/{conversation_id}", conversations.get_conversation, "GET"),
    ("/conversations/{conversation_id}", conversations.update_conversation, "POST"),
    ("/conversations/{conversation_id}", conversations.delete_conversation, "DELETE"),
    ("/conversations/{conversation_id}/items", conversations.add_items, "POST"),
    ("/conversations/{conversation_id}/items", conversations.list_items, "GET"),
    ("/conversations/{conversation_id}/items/{item_id}", conversations.get_item, "GET"),
    ("/conversations/{conversation_id}/items/{item_id}", conversations.delete_item, "DELETE"),
]


def responses_routes() -> list[Route]:
    return [Route(base + path, endpoint, methods=[method])
            for base in BASES for path, endpoint, method in _ENDPOINTS]
