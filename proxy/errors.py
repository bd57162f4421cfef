"""OpenAI-shaped errors: one exception tree, every error a client can see.

Every error memproxy returns, its own or the upstream's, has the body
`{"error": {"message", "type", "param", "code"}}` and a matching HTTP status, so the official SDKs
raise their usual exception classes. Messages never carry stack traces, keys or SQL.

One root, so that the HTTP layer needs one exception handler and other code one `except`
(the shape of httpx's `_exceptions.py`):

    MemproxyError        .status .message .type .param .code .headers .body
    ├── ProxyError       raised by memproxy itself (400 bad body, 401 key, 404, 409, 413, 429 ...)
    ├── UpstreamError    what the upstream answered or how reaching it failed (adds
    │                    .retryable and .fallback; proxy/upstream/errors.py maps answers to it)
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


RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class UpstreamError(MemproxyError):
    """An upstream failure, ready to be returned to the client.

    `body` is always `{"error": {"message", "type", "param", "code"}}`; `headers` holds the
    upstream headers worth relaying (lower-case names: retry-after, x-ratelimit-*, ...);
    `retryable` says whether sending the same request again may succeed; `fallback` whether
    the next fallback upstream should be tried (by default: when retryable).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "upstream_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        retryable: bool | None = None,
        fallback: bool | None = None,
    ) -> None:
        super().__init__(status, message, type=type, param=param, code=code, headers=headers)
        self.retryable = status in RETRYABLE_STATUSES if retryable is None else retryable
        self._fallback = fallback

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"

    @property
    def fallback(self) -> bool:
        return self.retryable if self._fallback is None else self._fallback

    @property
    def response_headers(self) -> dict[str, str]:
        """Only `Retry-After` reaches the client: the SDKs honour it, while the upstream's
        `x-ratelimit-*` describe memproxy's upstream key and its `x-request-id` is not the id
        of the client's request (that one is memproxy's own)."""
        return {k: v for k, v in self.headers.items() if k.lower() == "retry-after"}


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


def quota_exceeded(quota: str, limit: int) -> ProxyError:
    """A per-tenant quota (`[limits] quota`) would be exceeded: 403 `quota_exceeded`, nothing
    written (docs/forgetting.md, "Quotas"). Not a 429: waiting does not help, so SDKs must not
    retry it."""
    return ProxyError(403, f"quota exceeded: at most {limit} ({quota.replace('_', ' ')})",
                      code="quota_exceeded", param=quota)
