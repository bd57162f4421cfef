"""The middleware stack: request ids and the access log, CORS, authentication, per-key limits.

Order, outermost first (`build_middleware`):
1. `RequestContextMiddleware` — gives every request an id (the client's `X-Request-Id` when
   sane, else a fresh one), exposes it to every log record of the request, returns it as
   `x-request-id` on every response, writes one access-log line when the response is done, and
   turns an exception that escaped a handler into an OpenAI-shaped 500 instead of plain text
   (507 when the storage is full, api/storage_full.py; a client gone mid-body is a 499 line).
2. `CORSMiddleware` — only when `[server] cors_origins` lists origins; otherwise browsers get
   no Access-Control headers at all.
3. `AuthenticationMiddleware` (auth.py) — the caller, found once, for the limiter and handlers.
4. `RateLimitMiddleware` — only when a `[limits]` rate or concurrency limit is set.

`MemproxyError`s raised by handlers become responses in the app's exception handler
(api/errors.py), inside all of these, so they get CORS headers and a request id too.

`RequestContextMiddleware` also counts the requests in flight (`InFlight`), so that the app's
shutdown can let cancelled turns finish their bookkeeping before the store closes.

Pure ASGI middleware (not `BaseHTTPMiddleware`) so streamed responses pass through untouched
and the request's context variables are visible inside the handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..errors import InternalError, MemproxyError, error_body
from ..obs.logs import (
    REQUEST_FIELDS,
    REQUEST_ID,
    annotate,
    current_request_id,
    install_record_factory,
    new_request_id,
    sane_request_id,
    secrets_from_settings,
)
from .auth import AuthenticationMiddleware
from .errors import error_response
from .ratelimit import RateLimitMiddleware

if TYPE_CHECKING:
    from ..turn import TurnSession
    from ..upstream import UpstreamClient

log = logging.getLogger("memproxy")
access_log = logging.getLogger("memproxy.access")

REQUEST_ID_HEADER = "x-request-id"
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Agent-Id",
    "X-Conversation-Id",
    "X-Memory",
    "X-Request-Id",
    "Idempotency-Key",
    # what the official JavaScript SDK sends from a browser (dangerouslyAllowBrowser)
    "X-Stainless-Arch",
    "X-Stainless-Lang",
    "X-Stainless-OS",
    "X-Stainless-Package-Version",
    "X-Stainless-Retry-Count",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Timeout",
    "OpenAI-Organization",
    "OpenAI-Project",
)
CORS_EXPOSE_HEADERS = (
    "x-request-id",
    "x-memproxy-agent-id",
    "x-memproxy-conversation-id",
    "x-memproxy-turn-id",
    "x-memproxy-steps",
    "x-memproxy-context-tokens",
    "x-memproxy-overhead-ms",
    "x-memproxy-replayed",
    "x-memproxy-upstream",
    "retry-after",
)


class InFlight:
    """Counts the HTTP requests being handled, so that shutdown can wait for them.

    uvicorn waits for open connections up to `[server] shutdown_timeout_s`, then cancels the
    requests still running and at once starts the lifespan shutdown, which closes the store.
    A cancelled turn still has bookkeeping to do (mark the turn failed, release its lease), so
    the lifespan first waits here, briefly, until every request has unwound.
    """

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    def _event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            if self.count == 0:
                self._idle.set()
        return self._idle

    def enter(self) -> None:
        self.count += 1
        self._event().clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._event().set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is running; False if some still run after `timeout_s`."""
        try:
            await asyncio.wait_for(self._event().wait(), timeout_s)
        except TimeoutError:
            log.warning("%d request(s) still running at shutdown", self.count)
            return False
        return True


class RequestContextMiddleware:
    """Request id, access log line, and a last-resort OpenAI-shaped 500 (see module doc)."""

    def __init__(self, app: ASGIApp, inflight: InFlight | None = None,
                 secrets: tuple[str, ...] = ()) -> None:
        self.app = app
        self.inflight = inflight or InFlight()
        self.secrets = secrets  # configured keys: never accepted inside a request id
        install_record_factory()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.inflight.enter()
        try:
            await self._handle(scope, receive, send)
        finally:
            self.inflight.leave()

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        # an id holding the caller's own key or a configured one is replaced, never logged
        refused = (*self.secrets, _credential(headers.get("authorization")))
        request_id = sane_request_id(headers.get(REQUEST_ID_HEADER), refused)
        request_id = request_id or new_request_id()
        fields: dict[str, Any] = {}
        rid_token = REQUEST_ID.set(request_id)
        fields_token = REQUEST_FIELDS.set(fields)
        started = time.perf_counter()
        status: int | None = None

        async def tagged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                theirs = headers.get(REQUEST_ID_HEADER)
                if theirs is None:
                    headers[REQUEST_ID_HEADER] = request_id
                elif theirs != request_id:
                    # a pass-through answer keeps the upstream's own id (transparency)
                    # (an upstream may echo the client's id, key included: same check)
                    fields["upstream_request_id"] = sane_request_id(theirs, refused)
            await send(message)

        try:
            await self.app(scope, receive, tagged_send)
        except ClientDisconnect:
            pass  # the client left mid-body: its line below says 499, at INFO, no traceback
        except Exception as exc:
            error = _unexpected(scope, exc)  # 507 on a full disk, else a bare 500
            if isinstance(error, InternalError):
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if status is None:
                status = error.status
                response = error_response(error)
                response.headers[REQUEST_ID_HEADER] = request_id
                await response(scope, receive, send)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            line = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status if status is not None else 499,  # client went away first
                "duration_ms": round(duration_ms, 2),
            }
            line.update({k: v for k, v in fields.items() if k not in line and v is not None})
            access_log.info("request", extra={"fields": line})
            REQUEST_FIELDS.reset(fields_token)
            REQUEST_ID.reset(rid_token)


def _unexpected(scope: Scope, exc: Exception) -> MemproxyError:
    state = getattr(getattr(scope.get("app"), "state", None), "memproxy", None)
    storage = getattr(state, "storage", None)
    return InternalError() if storage is None else storage.error_for(exc)


def _credential(authorization: str | None) -> str | None:
    """What a request id must not contain: the Authorization value without its scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or scheme


class OpenAICORSMiddleware(CORSMiddleware):
    """Starlette's CORS with a refused preflight answered in the OpenAI error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        reason = response.body.decode(errors="replace")
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "content-type")}
        return JSONResponse(
            error_body(f"{reason} (see [server] cors_origins)", code="cors_rejected"),
            status_code=response.status_code,
            headers=headers,
        )


def cors_allow_headers(settings: Settings) -> list[str]:
    """The fixed list plus the identity headers the configuration names."""
    names = list(CORS_ALLOW_HEADERS)
    identity = settings.identity
    for name in (*identity.agent_headers, *identity.conversation_headers):
        if name.lower() not in {n.lower() for n in names}:
            names.append(name)
    return names


def build_middleware(settings: Settings, inflight: InFlight | None = None) -> list[Middleware]:
    """The user middleware list for `Starlette(middleware=...)`, outermost first."""
    stack = [Middleware(RequestContextMiddleware, inflight=inflight,
                        secrets=tuple(secrets_from_settings(settings)))]
    if settings.server.cors_origins:
        stack.append(
            Middleware(
                OpenAICORSMiddleware,
                allow_origins=list(settings.server.cors_origins),
                allow_methods=CORS_METHODS,
                allow_headers=cors_allow_headers(settings),
                expose_headers=CORS_EXPOSE_HEADERS,
                allow_credentials=False,  # keys travel in Authorization, never in cookies
            )
        )
    stack.append(Middleware(AuthenticationMiddleware))
    limits = settings.limits
    if limits.requests_per_minute or limits.concurrent_turns:
        stack.append(Middleware(RateLimitMiddleware, limits=limits))
    return stack


# -- hooks for handlers and the upstream client ---------------------------------------------


def annotate_request(request: Request, body: dict[str, Any], include_content: bool) -> None:
    """Access-log fields known once the chat body is parsed: the model and, only with
    `[logging] include_content`, the text of the last message."""
    model = body.get("model")
    annotate(model=model if isinstance(model, str) else None)
    if include_content:
        from ..core.messages import content_text

        messages = body.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
            annotate(input=content_text(messages[-1].get("content"))[:4000])


def annotate_turn(session: TurnSession) -> None:
    """Access-log fields of a stateful turn (call when it has finished or failed)."""
    annotate(
        agent=session.agent.agent_id,
        conversation=session.conversation.conversation_id,
        turn=session.turn_id,
        steps=session.done.steps if session.done else None,
        overhead_ms=round(session.overhead_ms(), 2),
        upstream_ms=round(session.loop.upstream_seconds * 1000, 2),
    )


def tag_upstream_requests(upstream: UpstreamClient) -> None:
    """Send the request id upstream as `X-Request-Id` on every call made for a request,
    unless the call already carries one (a pass-through keeps the client's own)."""
    upstream.call_headers = _request_id_header


def _request_id_header() -> dict[str, str]:
    request_id = current_request_id()
    return {} if request_id is None else {REQUEST_ID_HEADER: request_id}
