"""The one HTTP client memproxy uses to talk to its OpenAI-compatible upstream.

One `httpx.AsyncClient` per process gives connection pooling and keep-alive (a TLS handshake per
request would cost more than all of memproxy's own work). Every failure becomes an
`UpstreamError` in the OpenAI error shape. Retries follow the gateway convention: 429/5xx and
connection failures, jittered exponential backoff, `Retry-After` honoured; never after the
upstream may already have produced the completion (a read timeout, a broken stream).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx

from proxy import __version__
from proxy.config import UpstreamSettings
from proxy.upstream.errors import (
    RETRY_AFTER_CAP_S,
    UpstreamError,
    backoff_delay,
    dumps,
    error_from_body,
    error_from_response,
    error_from_transport,
    loads,
    parse_retry_after,
    stream_interrupted,
)
from proxy.upstream.sse import SSEDecoder, decode_events

__all__ = ["HOP_BY_HOP", "UpstreamClient"]

USER_AGENT = f"memproxy/{__version__}"
HOP_BY_HOP = frozenset(
    "connection keep-alive transfer-encoding te trailer upgrade host content-length".split()
)
DRAIN_TIMEOUT_S = 2.0  # after [DONE], read the rest briefly so the connection can be reused
MODELS_CACHE_MAX = 1024


def _ok(status: int) -> bool:
    return 200 <= status < 300


class UpstreamClient:
    """Calls the upstream. Create once at start-up, `await aclose()` at shutdown.

    `sleep`, `rng` and `clock` are attributes so that tests can replace them.
    """

    def __init__(
        self, settings: UpstreamSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        base = settings.base_url.rstrip("/")
        self._base = base
        self._base_has_v1 = base.endswith("/v1")
        url = httpx.URL(base)
        self._host = f"{url.host}:{url.port}" if url.port else url.host
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
        self._http.headers["User-Agent"] = USER_AGENT
        # forward() must not ask for an encoding the client did not ask for (the caller relays
        # raw bytes); chat() asks for compression explicitly.
        del self._http.headers["Accept-Encoding"]
        self._models: dict[str, tuple[float, dict[str, Any]]] = {}
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.rng = random.Random()
        self.clock: Callable[[], float] = time.monotonic

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- keys and urls -------------------------------------------------------------------------

    def resolve_key(self, client_authorization: str | None) -> str | None:
        """The key to send upstream, or None to send none.

        The client's bearer token is used only with `forward_client_key`, and then wins over
        the configured `api_key`; otherwise the configured key (possibly None).
        """
        if self.settings.forward_client_key and client_authorization:
            scheme, _, token = client_authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
        return self.settings.api_key

    def url(self, path: str) -> str:
        """`{base_url}{path}`; `/v1/...` is accepted too when base_url already ends in /v1."""
        if not path.startswith("/"):
            path = "/" + path
        if self._base_has_v1 and (path.startswith("/v1/") or path == "/v1"):
            path = path[3:]
        return self._base + path

    def _headers(
        self, api_key: str | None, accept: str, extra: Mapping[str, str] | None
    ) -> dict[str, str]:
        headers = dict(extra) if extra else {}
        headers["Content-Type"] = "application/json"
        headers["Accept"] = accept
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    # -- sending with retries ------------------------------------------------------------------

    def _retry_delay(self, error: UpstreamError, attempt: int) -> float | None:
        """Seconds to wait before retry `attempt` (0-based), or None to give up."""
        if not error.retryable or attempt >= self.settings.max_retries:
            return None
        asked = parse_retry_after(error.headers)
        if asked is None:
            return backoff_delay(attempt, self.rng)
        return asked if asked <= RETRY_AFTER_CAP_S else None

    async def _send(self, request: httpx.Request, api_key: str | None) -> httpx.Response:
        """Send with the retry policy; return an open 2xx response (body not read yet).

        Error responses are read (they are small) and closed before the retry decision.
        """
        attempt = 0
        while True:
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                error = error_from_transport(exc, host=self._host)
            else:
                if _ok(response.status_code):
                    return response
                try:
                    content = await response.aread()
                except httpx.HTTPError:
                    content = b""
                finally:
                    await response.aclose()
                error = error_from_response(
                    response.status_code, content, response.headers, secrets=(api_key,)
                )
            delay = self._retry_delay(error, attempt)
            if delay is None:
                raise error
            attempt += 1
            await self.sleep(delay)

    async def _request_json(
        self,
        method: str,
        path: str,
        api_key: str | None,
        body: dict[str, Any] | None,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = self._headers(api_key, "application/json", extra)
        headers["Accept-Encoding"] = "gzip, deflate"
        content = dumps(body) if body is not None else None
        if content is None:
            del headers["Content-Type"]
        request = self._http.build_request(method, self.url(path), content=content, headers=headers)
        response = await self._send(request, api_key)
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:  # got the head, lost the body: not retried
            raise error_from_transport(exc, host=self._host) from exc
        finally:
            await response.aclose()
        try:
            payload = loads(content)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise error_from_response(502, content, response.headers, secrets=(api_key,))
        # Some gateways (OpenRouter) report failures with a 2xx status and an error body.
        if "error" in payload and "choices" not in payload and "data" not in payload:
            raise error_from_body(content, response.headers, secrets=(api_key,))
        return payload

    # -- public calls --------------------------------------------------------------------------

    async def chat(
        self,
        body: dict[str, Any],
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST /chat/completions without streaming; the parsed completion or `UpstreamError`."""
        return await self._request_json("POST", "/chat/completions", api_key, body, headers)

    async def chat_stream(
        self,
        body: dict[str, Any],
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """POST /chat/completions with `stream: true`; yield each `data:` chunk as a dict.

        Errors before the body starts are retried like `chat`; after that none are: a broken or
        unterminated stream raises `UpstreamError` 502 `stream_interrupted`, an error event
        raises it with the upstream's message. Closing the generator early closes the response.
        """
        if body.get("stream") is not True:
            body = {**body, "stream": True}
        request = self._http.build_request(
            "POST",
            self.url("/chat/completions"),
            content=dumps(body),
            headers=self._headers(api_key, "text/event-stream", headers),
        )
        response = await self._send(request, api_key)
        byte_iter = response.aiter_bytes()
        decoder = SSEDecoder()
        seen = 0
        try:
            try:
                if "application/json" in response.headers.get("content-type", ""):
                    # An error with a 2xx status (OpenRouter), or a server ignoring `stream`.
                    content = await response.aread()
                    raise error_from_body(content, response.headers, secrets=(api_key,))
                async for raw in byte_iter:
                    chunks, done, error = decode_events(
                        decoder.feed(raw), final=False, secrets=(api_key,)
                    )
                    for chunk in chunks:
                        seen += 1
                        yield chunk
                    if error is not None:
                        raise error
                    if done:
                        await self._drain(byte_iter)
                        return
                chunks, done, error = decode_events(decoder.flush(), final=True, secrets=(api_key,))
                for chunk in chunks:
                    seen += 1
                    yield chunk
                if error is not None:
                    raise error
                if done:
                    return
            except httpx.TimeoutException as exc:
                raise error_from_transport(exc, host=self._host) from exc
            except httpx.TransportError as exc:
                raise stream_interrupted(
                    f"the upstream stream broke after {seen} chunks: {exc}"
                ) from exc
            raise stream_interrupted(
                f"the upstream stream ended without [DONE] after {seen} chunks"
            )
        finally:
            await byte_iter.aclose()
            await response.aclose()

    async def _drain(self, byte_iter: AsyncIterator[bytes]) -> None:
        """Read to the end of the body (normally at once) so the connection returns to the pool."""
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                async for _ in byte_iter:
                    pass
        except (TimeoutError, httpx.HTTPError):
            pass

    async def forward(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        content: bytes,
        api_key: str | None,
        stream: bool,
    ) -> httpx.Response:
        """Send a client's request on unchanged and return the open upstream response.

        `content` goes byte-for-byte; `headers` go minus hop-by-hop ones. With `api_key`,
        Authorization becomes `Bearer {api_key}`; with None the caller's headers are sent as
        given, so the caller must drop its own client's Authorization (memproxy's key) when the
        upstream should not see it. The response is returned whatever its status; the caller
        relays `aiter_raw()` (or reads it when `stream` is false) and must `aclose()` it.
        Only connection failures before anything was sent are retried.
        """
        connection_named = {
            token.strip().lower()
            for name, value in headers.items()
            if name.lower() == "connection"
            for token in value.split(",")
        }
        out: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower.startswith("proxy-") or lower in connection_named:
                continue
            if api_key and lower == "authorization":
                continue
            out[name] = value
        if api_key:
            out["Authorization"] = f"Bearer {api_key}"
        request = self._http.build_request(method, self.url(path), content=content, headers=out)
        attempt = 0
        while True:
            try:
                response = await self._http.send(request, stream=True)
                break
            except httpx.ConnectError as exc:
                error = error_from_transport(exc, host=self._host)
                if attempt >= self.settings.max_retries:
                    raise error from exc
                await self.sleep(backoff_delay(attempt, self.rng))
                attempt += 1
            except httpx.TransportError as exc:
                raise error_from_transport(exc, host=self._host) from exc
        if not stream:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                await response.aclose()
                raise error_from_transport(exc, host=self._host) from exc
        return response

    async def list_models(self, *, api_key: str | None) -> dict[str, Any]:
        """GET /models, cached `models_cache_s` per key (the cache holds a hash, not the key).

        The returned dict is shared with the cache: treat it as read-only.
        """
        ttl = self.settings.models_cache_s
        slot = hashlib.sha256((api_key or "").encode()).hexdigest()
        now = self.clock()
        cached = self._models.get(slot)
        if cached is not None and cached[0] > now:
            return cached[1]
        payload = await self._request_json("GET", "/models", api_key, None)
        if ttl > 0:
            if len(self._models) >= MODELS_CACHE_MAX:
                self._models = {k: v for k, v in self._models.items() if v[0] > now}
                if len(self._models) >= MODELS_CACHE_MAX:
                    self._models.pop(next(iter(self._models)))
            self._models[slot] = (now + ttl, payload)
        return payload

    def invalidate_models(self) -> None:
        self._models.clear()
