"""The Responses API as pure translation: requests to Chat Completions bodies, chat answers and
stream deltas to Response objects and events. No I/O; imports only `errors.py`, `fastjson.py`
and itself (like `core/`), so the HTTP layer and the stateful service can both use it.

`request.py` checks a `CreateResponse` body and builds the chat body; `items.py` normalizes
input items and turns items into chat messages; `output.py` builds output items, usage and the
Response object; `events.py` writes the streaming events; `ids.py` makes the ids.
"""

from .events import EventWriter, encode, replay
from .ids import new_id
from .items import (
    chain_items,
    check_call_ids,
    drop_orphan_outputs,
    items_to_messages,
    normalize_input,
    normalize_item,
    references,
    resolve_references,
)
from .output import finish_status, output_items, response_object, usage_from_chat
from .request import (
    chat_body,
    chat_tool_choice,
    chat_tools,
    conversation_id,
    response_format,
    validate_request,
)

__all__ = [
    "EventWriter",
    "chain_items",
    "chat_body",
    "chat_tool_choice",
    "chat_tools",
    "check_call_ids",
    "conversation_id",
    "drop_orphan_outputs",
    "encode",
    "finish_status",
    "items_to_messages",
    "new_id",
    "normalize_input",
    "normalize_item",
    "output_items",
    "references",
    "replay",
    "resolve_references",
    "response_format",
    "response_object",
    "usage_from_chat",
    "validate_request",
]
