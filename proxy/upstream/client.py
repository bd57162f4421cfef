"""The one HTTP client memproxy uses to talk to its OpenAI-compatible upstreams.

One `httpx.AsyncClient` per process gives connection pooling and keep-alive (a TLS handshake per
request would cost more than all of memproxy's own work). Every failure becomes an
`UpstreamError` in the OpenAI error shape. Resilience (docs/resilience.md), in the order a call
meets it:

- routing: the primary, then each fallback that serves the model, when the one before failed
  with an error that allows it (`UpstreamError.fallback`) or its circuit is open;
- a circuit breaker per upstream (`circuit.py`) that fails fast while an upstream is down;
- retries: 429/5xx and connection failures, jittered exponential backoff, `Retry-After`
  honoured; never after the upstream may already have produced the completion (a read
  timeout, a broken stream);
- timeouts: connect and read (httpx), the first token of a stream, and the request's deadline
  (`Route.deadline`), which bounds every attempt and every backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx

from proxy import __version__
from proxy.config import LimitsSettings, UpstreamSettings
from proxy.upstream.bounded import BodyTooLarge, read_bounded
from proxy.upstream.errors import (
    UpstreamError,
    dumps,
    error_from_body,
    error_from_response,
    error_from_transport,
    json_answer,
    stream_interrupted,
)
from proxy.upstream.faults import first_token_timeout
from proxy.upstream.forwarding import HOP_BY_HOP, Forwarding
from proxy.upstream.http11.direct import DirectJSON, Prepared, headers_of
from proxy.upstream.http11.transport import LeanTransport
from proxy.upstream.http11.wire import Timeouts
from proxy.upstream.routing import Endpoint, NullObserver, Route, build_endpoints, model_of
from proxy.upstream.streaming import OpenStream

__all__ = ["HOP_BY_HOP", "UpstreamClient"]


log = logging.getLogger("memproxy.upstream")
USER_AGENT = f"memproxy/{__version__}"
DRAIN_TIMEOUT_S = 2.0  # after [DONE], read the rest briefly so the connection can be reused
MODELS_CACHE_MAX = 1024


def _ok(status: int) -> bool:
    return 200 <= status < 300


def _too_large(exc: BodyTooLarge, status: int, headers: Mapping[str, str],
               secrets: tuple) -> UpstreamError:
    """A body over the bound: a 2xx answer fails as `upstream_response_too_large`; an error
    status keeps its status (and retry headers), without its unread message."""
    if _ok(status):
        return exc.error()
    return error_from_response(status, b"", headers, secrets=secrets)


class NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: memproxy is not a browser session."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class UpstreamClient(Forwarding):
    """Calls the upstreams. Create once at start-up, `await aclose()` at shutdown.

    `sleep`, `rng` and `clock` (the circuit breakers' time) are attributes so that tests can
    replace them; `observer` receives failures, circuit changes and fallback use (metrics).
    """

    def __init__(
        self, settings: UpstreamSettings, *, transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = LimitsSettings().max_upstream_response_bytes,
    ) -> None:
        self.settings = settings
        # [limits] max_upstream_response_bytes: the most of one answer kept (bounded.py).
        self.max_response_bytes = max_response_bytes
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.connect_timeout_s,
            pool=settings.connect_timeout_s,
        )
        limits = httpx.Limits(
            max_connections=200, max_keepalive_connections=100, keepalive_expiry=30.0
        )
        self._http = httpx.AsyncClient(
            timeout=timeout, limits=limits, transport=transport, follow_redirects=False
        )
        # The one client serves every tenant: a cookie one upstream response sets must never
        # ride along on another client's request. (It also saves httpx's cookie parsing on
        # every response.) The public setter would copy the jar into a plain Cookies.
        self._http._cookies = NoCookies()
        self._http.headers["User-Agent"] = USER_AGENT
        # forward() must not ask for an encoding the client did not ask for (the caller relays
        # raw bytes); chat() asks for compression explicitly.
        del self._http.headers["Accept-Encoding"]
        # JSON calls skip httpx when its transport is the lean one (upstream/http11/direct.py).
        self._direct = DirectJSON(
            transport.wire,
            Timeouts(settings.connect_timeout_s, settings.read_timeout_s,
                     settings.connect_timeout_s),
            self._http.headers,
        ) if isinstance(transport, LeanTransport) else None
        # Headers every call carries unless it sets them itself (the app adds X-Request-Id):
        # merged by `_json_attempt` for JSON calls, by a request hook for the calls through
        # httpx (streams, pass-through).
        self.call_headers: Callable[[], Mapping[str, str]] = dict
        self._http.event_hooks["request"] = [*self._http.event_hooks["request"],
                                             self._add_call_headers]
        self._models: dict[str, tuple[float, dict[str, Any]]] = {}
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.rng = random.Random()
        self.clock: Callable[[], float] = time.monotonic
        self.endpoints = build_endpoints(settings, lambda: self.clock(), self._circuit_changed)
        self._observer = NullObserver()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- keys and urls -------------------------------------------------------------------------

    def resolve_key(self, client_authorization: str | None) -> str | None:
        """The key to send to the primary upstream, or None to send none.

        The client's bearer token is used only with `forward_client_key`, and then wins over
        the configured `api_key`; otherwise the configured key (possibly None).
        """
        if self.settings.forward_client_key and client_authorization:
            scheme, _, token = client_authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
        return self.settings.api_key

    def secrets(self, api_key: str | None) -> tuple[str | None, ...]:
        """Every key a request may carry upstream: the one resolved for it (the client's own
        with `forward_client_key`) and each configured upstream's and fallback's. None of
        them may reach a client (`masking.py`)."""
        return (api_key, *(endpoint.api_key for endpoint in self.endpoints))

    def url(self, path: str) -> str:
        """The primary's `{base_url}{path}` (`/v1/...` accepted when base_url ends in /v1)."""
        return self.endpoints[0].url(path)

    def _headers(
        self, api_key: str | None, accept: str, extra: Mapping[str, str] | None
    ) -> dict[str, str]:
        headers = dict(extra) if extra else {}
        headers["Content-Type"] = "application/json"
        headers["Accept"] = accept
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    # -- JSON calls --------------------------------------------------------------------------

    async def _add_call_headers(self, request: httpx.Request) -> None:
        for name, value in self.call_headers().items():
            if name not in request.headers:
                request.headers[name] = value

    def _json_attempt(
        self, endpoint: Endpoint, method: str, path: str, key: str | None,
        body: dict[str, Any] | None, extra: Mapping[str, str] | None, secrets: tuple,
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """One attempt of a JSON call, ready to be made (and remade by a retry)."""
        headers = self._headers(key, "application/json", extra)
        headers["Accept-Encoding"] = "gzip, deflate"
        for name, value in self.call_headers().items():
            if not any(name.lower() == given.lower() for given in headers):
                headers[name] = value
        content = dumps(body) if body is not None else None
        if content is None:
            del headers["Content-Type"]
        url = endpoint.url(path)
        if self._direct is not None:
            prepared = self._direct.prepare(method, url, headers, content)
            if prepared is not None:
                return lambda: self._direct_call(prepared, endpoint.host, secrets)
        request = self._http.build_request(method, url, content=content, headers=headers)
        return lambda: self._httpx_call(request, endpoint.host, secrets)

    async def _direct_call(self, prepared: Prepared, host: str, secrets: tuple) -> dict:
        """As `_httpx_call`, over `DirectJSON`."""
        assert self._direct is not None
        try:
            conn, head = await self._direct.open(prepared)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, host=host) from exc
        if log.isEnabledFor(logging.DEBUG):  # the line httpx logs for the calls it makes
            log.debug('HTTP Request: %s %s "%s %d %s"', prepared.method, prepared.url,
                      head.version.decode("latin-1"), head.status, head.reason.decode("latin-1"))
        try:
            reply = await self._direct.read(prepared, conn, head, self.max_response_bytes)
        except BodyTooLarge as exc:
            raise _too_large(exc, head.status, headers_of(head), secrets) from None
        except httpx.HTTPError as exc:
            error = error_from_transport(exc, host=host)
            if _ok(head.status):
                error.retryable = False
            raise error from exc
        return json_answer(reply.status, reply.content, reply.headers, secrets)

    async def _httpx_call(self, request: httpx.Request, host: str, secrets: tuple) -> dict:
        """One attempt: send, read, parse. Errors after the head was received are not
        retryable: the upstream may already have done the work."""
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, host=host) from exc
        try:
            try:
                content = await read_bounded(response, self.max_response_bytes)
            except BodyTooLarge as exc:
                raise _too_large(exc, response.status_code, response.headers, secrets) from None
            except httpx.HTTPError as exc:
                error = error_from_transport(exc, host=host)
                if _ok(response.status_code):
                    error.retryable = False
                raise error from exc
        finally:
            await response.aclose()
        return json_answer(response.status_code, content, response.headers, secrets)

    async def chat(
        self,
        body: dict[str, Any],
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        route: Route | None = None,
    ) -> dict[str, Any]:
        """POST /chat/completions without streaming; the parsed completion or `UpstreamError`.

        `route` carries the deadline in and the answering upstream out."""
        route = route if route is not None else Route()

        async def call(endpoint: Endpoint) -> dict[str, Any]:
            key = endpoint.key(api_key)
            attempt = self._json_attempt(endpoint, "POST", "/chat/completions", key,
                                         endpoint.body(body), headers, (key, api_key))
            return await self._with_retries(endpoint, route, attempt)

        return await self._routed(model_of(body), route, call)

    # -- streaming ---------------------------------------------------------------------------

    async def chat_stream(
        self,
        body: dict[str, Any],
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
        route: Route | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """POST /chat/completions with `stream: true`; yield each `data:` chunk as a dict.

        Until the first token everything may be retried or sent to a fallback, and the first
        token must come within `first_token_timeout_s`; after it nothing is retried: a broken
        or unterminated stream raises `UpstreamError` 502 `stream_interrupted`, an error event
        raises it with the upstream's message. Closing the generator early closes the response.
        """
        route = route if route is not None else Route()
        if body.get("stream") is not True:
            body = {**body, "stream": True}

        async def call(endpoint: Endpoint) -> OpenStream:
            key = endpoint.key(api_key)
            request = self._http.build_request(
                "POST", endpoint.url("/chat/completions"), content=dumps(endpoint.body(body)),
                headers=self._headers(key, "text/event-stream", headers),
            )
            return await self._with_retries(
                endpoint, route, lambda: self._open_stream(endpoint, request, route, (key,))
            )

        opened = await self._routed(model_of(body), route, call)
        try:
            async for chunk in opened.rest(lambda: self._next_bytes(opened, route),
                                           lambda: self._drain(opened.byte_iter)):
                yield chunk
        except httpx.TimeoutException as exc:
            error = error_from_transport(exc, host=opened.endpoint.host)
            self._mid_stream(opened, error)
            raise error from exc
        except httpx.TransportError as exc:
            error = stream_interrupted(f"the upstream stream broke after {opened.seen} chunks: {exc}")
            self._mid_stream(opened, error)
            raise error from exc
        except UpstreamError as error:
            self._mid_stream(opened, error)
            raise
        finally:
            await opened.aclose()

    def _mid_stream(self, opened: OpenStream, error: UpstreamError) -> None:
        """A stream that failed after its first token: the breaker hears of it too."""
        if error.code != "deadline_exceeded":
            self._settle(opened.endpoint, error)

    async def _open_stream(
        self, endpoint: Endpoint, request: httpx.Request, route: Route, secrets: tuple
    ) -> OpenStream:
        """One attempt: send and read up to the first token, within `first_token_timeout_s`
        (and the deadline, which `Route.bound` around this enforces)."""
        limit = self.settings.first_token_timeout_s
        try:
            async with asyncio.timeout(limit) as scope:
                try:
                    response = await self._http.send(request, stream=True)
                except httpx.TransportError as exc:
                    raise error_from_transport(exc, host=endpoint.host) from exc
                opened = OpenStream(endpoint, response, secrets, self.max_response_bytes)
                try:
                    await self._first_token(opened)
                except BaseException:
                    await opened.aclose()
                    raise
                return opened
        except TimeoutError:
            if scope.expired():
                raise first_token_timeout(endpoint.host, limit) from None
            raise

    async def _first_token(self, opened: OpenStream) -> None:
        response, host = opened.response, opened.endpoint.host
        if not _ok(response.status_code):
            try:  # only the start of an error body matters
                content = await read_bounded(response, self.max_response_bytes, truncate=True)
            except httpx.HTTPError:
                content = b""
            raise error_from_response(
                response.status_code, content, response.headers, secrets=opened.secrets
            )
        try:
            if "application/json" in response.headers.get("content-type", ""):
                # An error with a 2xx status (OpenRouter), or a server ignoring `stream`.
                try:
                    content = await read_bounded(response, self.max_response_bytes)
                except BodyTooLarge as exc:
                    raise exc.error() from None
                raise error_from_body(content, response.headers, secrets=opened.secrets)
            await opened.read_to_first_token(lambda: self._drain(opened.byte_iter))
        except httpx.TimeoutException as exc:
            raise error_from_transport(exc, host=host) from exc
        except httpx.TransportError as exc:
            raise stream_interrupted(
                f"the upstream stream broke after {opened.seen} chunks: {exc}"
            ) from exc

    async def _next_bytes(self, opened: OpenStream, route: Route) -> bytes | None:
        """The next piece of the body, or None at its end, never waiting past the deadline.

        While the deadline is further away than the read timeout, httpx's read timeout bounds
        each read and no timer is set up per chunk (the hot path)."""
        left = route.remaining()
        if left is not None and left <= self.settings.read_timeout_s:
            return await route.bound(anext(opened.byte_iter, None))
        return await anext(opened.byte_iter, None)

    async def _drain(self, byte_iter: AsyncIterator[bytes]) -> None:
        """Read to the end of the body (normally at once) so the connection returns to the pool."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                async for _ in byte_iter:
                    pass
        except (TimeoutError, httpx.HTTPError):
            pass

    # -- models ------------------------------------------------------------------------------

    async def list_models(self, *, api_key: str | None) -> dict[str, Any]:
        """GET /models from the primary, cached `models_cache_s` per key (the cache holds a
        hash, not the key). The returned dict is shared with the cache: treat it as read-only.
        """
        ttl = self.settings.models_cache_s
        slot = hashlib.sha256((api_key or "").encode()).hexdigest()
        now = self.clock()
        cached = self._models.get(slot)
        if cached is not None and cached[0] > now:
            return cached[1]
        primary = self.endpoints[0]
        attempt = self._json_attempt(primary, "GET", "/models", api_key, None, None, (api_key,))
        payload = await self._with_retries(primary, Route(), attempt)
        if ttl > 0:
            if len(self._models) >= MODELS_CACHE_MAX:
                self._models = {k: v for k, v in self._models.items() if v[0] > now}
                if len(self._models) >= MODELS_CACHE_MAX:
                    self._models.pop(next(iter(self._models)))
            self._models[slot] = (now + ttl, payload)
        return payload

    def invalidate_models(self) -> None:
        self._models.clear()
