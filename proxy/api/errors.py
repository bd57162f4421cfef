"""Errors as HTTP responses: the app's exception handlers.

Handlers raise; nothing in between turns errors into responses. Starlette runs these handlers
for exceptions raised by an endpoint (its `ExceptionMiddleware` sits inside every user
middleware), so an error still passes through CORS and gets its request id on the way out.
Middleware sits outside that handler and sends `error_response(exc)` itself (the rate limiter's
429). Errors in a stream that has already started are no HTTP response any more: chat.py writes
them as an SSE event with the same `.body`. Anything that is not a `MemproxyError` is a bug,
answered by `RequestContextMiddleware` as a logged, bare 500.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from ..errors import MemproxyError, error_body


def error_response(exc: MemproxyError) -> JSONResponse:
    """The OpenAI-shaped response of an error: its status, body and headers."""
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.response_headers)


async def memproxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MemproxyError)  # registered for that class only
    return error_response(exc)


async def not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        error_body(f"no route for {request.method} {request.url.path}", code="not_found"),
        status_code=404,
    )


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        error_body(f"{request.method} is not allowed on {request.url.path}",
                   code="method_not_allowed"),
        status_code=405,
    )


EXCEPTION_HANDLERS: dict[type[Exception] | int, ExceptionHandler] = {
    MemproxyError: memproxy_error,
    404: not_found,  # the router's own errors, in the same shape
    405: method_not_allowed,
}
