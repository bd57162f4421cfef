"""Reading and checking request bodies: size, JSON, nesting, limits.

Every rejection is an OpenAI-style error raised before anything is stored or forwarded. The
body is read incrementally so an oversized upload is refused without holding it in memory.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from ..config import LimitsSettings
from ..core.messages import content_text
from ..errors import ProxyError, bad_request

try:
    from orjson import JSONDecodeError as _OrjsonError
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is an optional speed-up
    _loads = json.loads
    _OrjsonError = json.JSONDecodeError


CLIENT_CLOSED = 499  # nginx's "client closed request": no answer reaches the client anyway


def client_went_away() -> ProxyError:
    """The client closed its connection before its body was complete (or was dropped for
    sending it too slowly, api/connections.py): not a server error, so no traceback, and
    the access log says 499."""
    return ProxyError(CLIENT_CLOSED, "the client closed the connection before sending the"
                      " whole request body", code="client_closed_request")


def too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"the request body is larger than the limit of {limit} bytes",
        code="request_too_large",
    )


async def read_body(request: Request, limits: LimitsSettings) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise too_large(limits.max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise too_large(limits.max_body_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        raise client_went_away() from None
    return b"".join(chunks)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = _loads(raw)
    except (_OrjsonError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise bad_request(f"the request body is not valid JSON: {reason}",
                          code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    return body


def check_limits(messages: list[Any], limits: LimitsSettings) -> None:
    if len(messages) > limits.max_messages:
        raise bad_request(
            f"too many messages: {len(messages)}, the limit is {limits.max_messages}",
            param="messages", code="too_many_messages",
        )
    for i, message in enumerate(messages):
        if isinstance(message, dict):
            size = len(content_text(message.get("content")))
            if size > limits.max_message_chars:
                raise bad_request(
                    f"messages[{i}] has {size} characters, the limit is"
                    f" {limits.max_message_chars}",
                    param=f"messages[{i}].content", code="message_too_long",
                )
