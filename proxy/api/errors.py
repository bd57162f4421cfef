"""Errors as HTTP responses: the app's exception handlers.

Endpoints raise a `MemproxyError` (proxy/errors.py) and `memproxy_error` answers it. Starlette
runs these handlers around the endpoint, inside every user middleware, so the answer still
passes through CORS and gets its request id on the way out. Middleware is outside them: what it
refuses it answers itself with `error_response` (the rate limiter's 429). A stream that has
started can no longer become an error response: chat.py ends it with an SSE event holding the
same `.body`.

Anything else is a bug: the chat endpoint and the agents API log it under their own logger and
raise an `InternalError` (so the 500 still gets CORS headers); elsewhere it reaches
`RequestContextMiddleware`, which logs it and answers the same bare 500.
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
