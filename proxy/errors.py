"""OpenAI-shaped errors.

Every error memproxy returns, its own or the upstream's, has the body
`{"error": {"message", "type", "param", "code"}}` and a matching HTTP status, so the official SDKs
raise their usual exception classes. Messages never carry stack traces, keys or SQL.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    """An error to return to the client as-is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ProxyError:
    return ProxyError(400, message, param=param, code=code)


def internal_error() -> ProxyError:
    return ProxyError(
        500,
        "memproxy failed to handle the request; the error was logged",
        type="server_error",
        code="internal_error",
    )
