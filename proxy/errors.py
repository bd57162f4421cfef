"""OpenAI-shaped errors: one exception tree, every error a client can see.

Every error memproxy returns, its own or the upstream's, has the body
`{"error": {"message", "type", "param", "code"}}` and a matching HTTP status, so the official SDKs
raise their usual exception classes. Messages never carry stack traces, keys or SQL.

One root, so that the HTTP layer needs one exception handler and other code one `except`
(the shape of httpx's `_exceptions.py`):

    MemproxyError        .status .message .type .param .code .headers .body
    ├── ProxyError       raised by memproxy itself (400 bad body, 401 key, 404, 409, 413, 429 ...)
    ├── UpstreamError    what the upstream answered or how reaching it failed
    │                    (proxy/upstream/errors.py; adds .retryable and .fallback)
    └── InternalError    500 internal_error: a bug, logged where it was caught, never detailed

Anything else that escapes a handler is a bug: it is logged and answered as an `InternalError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """The OpenAI error object (`ErrorResponse` in their API description)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class MemproxyError(Exception):
    """An error to answer with `status`, `body` and `response_headers`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return self.message

    @property
    def body(self) -> dict[str, Any]:
        """The response body: `{"error": {"message", "type", "param", "code"}}`."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    @property
    def response_headers(self) -> dict[str, str]:
        """The headers the client gets with the error (`Retry-After` on a 429, ...)."""
        return self.headers


class ProxyError(MemproxyError):
    """An error memproxy raises itself, returned to the client as-is."""


class InternalError(MemproxyError):
    """A failure memproxy did not expect: a bare 500, whose cause was logged where it was
    caught and is never shown to the client."""

    def __init__(self) -> None:
        super().__init__(
            500,
            "memproxy failed to handle the request; the error was logged",
            type="server_error",
            code="internal_error",
        )


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ProxyError:
    return ProxyError(400, message, param=param, code=code)


def _field(loc: tuple[Any, ...]) -> str:
    """pydantic's ('blocks', 0, 'label') as blocks[0].label."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(exc: ValidationError, prefix: str = "") -> ProxyError:
    """The first problem of a pydantic-validated body as a 400 naming its field (never echoing
    the value): the agents API's bodies and the agent document share it."""
    first = exc.errors()[0]
    field = _field((*((prefix,) if prefix else ()), *first["loc"])) or None
    reason = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return bad_request(f"{field or 'body'}: {reason}", param=field, code="invalid_body")
