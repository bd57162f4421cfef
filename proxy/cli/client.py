"""The one way every data command reaches the agents REST API.

With `--url` the requests go to a running memproxy over HTTP. Without it the command builds the
app itself (`create_app(settings)`), runs its lifespan (which opens the database and applies
migrations) and sends the same requests in-process through an ASGI transport, so each operation
has exactly one implementation: the server's. Local mode acts as an admin: a random admin key
is added to the settings for this process only and sent with every request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from ..config import ConfigError
from .common import CliError, settings_from_args
from .startup import database_error, require_database
from .transport import streaming_transport

LOCAL_BASE_URL = "http://memproxy.local"
TIMEOUT = httpx.Timeout(60.0, read=600.0)
RATE_LIMIT_RETRIES = 20
MAX_RETRY_AFTER_S = 60.0


class ApiError(CliError):
    """The API answered with an error: `message` is the API's own message."""

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.api_code = code


def error_message(response: httpx.Response) -> tuple[str, str | None]:
    """The OpenAI-shaped error's message and code, or a short description of the body."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = payload["error"]
        return str(error.get("message") or f"HTTP {response.status_code}"), error.get("code")
    text = " ".join(response.text.split())[:200]
    if "html" in response.headers.get("content-type", "") or text.startswith("<"):
        text = ""  # a web page's markup says nothing on one line
    return f"HTTP {response.status_code}: {text or response.reason_phrase}", None


def openai_shaped(response: httpx.Response) -> bool:
    """Whether the body is an OpenAI-shaped error (`{"error": {...}}`), as memproxy's are."""
    try:
        payload = response.json()
    except ValueError:
        return False
    return isinstance(payload, dict) and isinstance(payload.get("error"), dict)


def retry_after(response: httpx.Response) -> float:
    """The seconds a 429 asks to wait (`Retry-After`), within [0.1, MAX_RETRY_AFTER_S]."""
    try:
        seconds = float(response.headers.get("retry-after", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.1), MAX_RETRY_AFTER_S)


def path_id(value: str, what: str) -> str:
    """`value` quoted for a URL path. An id with a slash could never name one path segment,
    so it is refused here; every other rule is the server's to enforce."""
    if not value or "/" in value:
        raise CliError(f"invalid {what} {value!r}")
    return quote(value, safe="")


class Api:
    """A thin JSON client: `await api.get(path)` returns the decoded body or raises ApiError."""

    def __init__(self, http: httpx.AsyncClient, *, tenant: str | None, key: str | None,
                 app: Any = None) -> None:
        self.http = http
        self.tenant = tenant
        self.key = key
        """The bearer token sent (local mode: this process's admin key)."""
        self.app = app
        """Local mode: the in-process ASGI app (None with --url)."""

    @property
    def local(self) -> bool:
        return self.app is not None

    @property
    def base_url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def agent_path(self, agent: str, *parts: str) -> str:
        """`/v1/agents/{agent}/parts...`, each part quoted."""
        return "/".join(["/v1/agents", path_id(agent, "agent id"), *parts])

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      json: Any = None, content: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if self.tenant:
            query.setdefault("tenant", self.tenant)
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                response = await self.http.request(
                    method, path, params=query, json=json, content=content, headers=headers
                )
            except httpx.HTTPError as exc:
                raise CliError(f"cannot reach memproxy at {self.base_url}: "
                               f"{exc or type(exc).__name__}") from exc
            # A server with `[limits] requests_per_minute` refuses bursts (e.g. `load`) before
            # doing anything: wait as told and send the same request again.
            if response.status_code != 429 or attempt == RATE_LIMIT_RETRIES:
                break
            await asyncio.sleep(retry_after(response))
        if response.status_code >= 400:
            message, code = error_message(response)
            if response.status_code == 404 and not self.local and not openai_shaped(response):
                # Not memproxy's error shape: the URL is some other server (the upstream's?).
                message += (f" (is {self.base_url} a memproxy? --url takes the server's root, "
                            "e.g. http://127.0.0.1:8080)")
            raise ApiError(message, response.status_code, code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"memproxy answered {method} {path} with a body that is not JSON"
                           ) from exc

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self.request("POST", path, params=params, json=body)

    async def put(self, path: str, body: Any, **params: Any) -> Any:
        return await self.request("PUT", path, params=params, json=body)

    async def delete(self, path: str, **params: Any) -> Any:
        return await self.request("DELETE", path, params=params)

    async def paged(self, path: str, *, page: int = 1000, **params: Any
                    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a paged list (`has_more` / `next_after`)."""
        after: Any = None
        while True:
            body = await self.get(path, limit=page, after=after, **params)
            for item in body.get("data", []):
                yield item
            after = body.get("next_after")
            if not body.get("has_more") or after is None:
                return


def normalize_url(url: str) -> str:
    """The server root: `http://h:8080/v1/` → `http://h:8080`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        hint = f" (did you mean http://{url}?)" if url and "://" not in url else ""
        raise CliError(f"--url must start with http:// or https://, got {url!r}{hint}", code=2)
    if url.endswith("/v1"):
        url = url[:-3]
    return url


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Hide the app's start-up warnings (e.g. "no upstream API key") from commands that never
    call the upstream; errors still show."""
    logger = logging.getLogger("memproxy")
    previous = logger.level
    if enabled:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace, *, upstream: bool = False,
                  streaming: bool = False) -> AsyncIterator[Api]:
    """An `Api` for the command's connection options (see the module doc).

    `upstream`: the command calls the model (keep the app's upstream warnings visible).
    `streaming`: local mode streams response bodies (chat) instead of buffering them.
    """
    url = getattr(args, "url", None)
    tenant = getattr(args, "tenant", None)
    if url:
        key = getattr(args, "key", None)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(base_url=normalize_url(url), headers=headers,
                                     timeout=TIMEOUT) as http:
            yield Api(http, tenant=tenant, key=key)
        return
    from ..app import create_app

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        raise CliError(str(exc), code=2) from exc
    require_database(args, settings)  # never a new empty SQLite file (startup.py)
    token = "mp-local-" + secrets.token_urlsafe(24)
    settings.auth.admin_keys = [*settings.auth.admin_keys, token]
    # The local admin key is this process's own; it must never be forwarded upstream.
    settings.upstream.forward_client_key = False
    # Per-key limits protect a server from its clients; here the operator is the only one.
    settings.limits.requests_per_minute = 0
    settings.limits.concurrent_turns = 0
    app = create_app(settings)
    transport: httpx.AsyncBaseTransport = (
        streaming_transport(app) if streaming else httpx.ASGITransport(app)
    )
    with _quiet(not upstream):
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(app.router.lifespan_context(app))
            except Exception as exc:
                raise CliError(database_error(settings.database.url, exc), code=2) from exc
            http = await stack.enter_async_context(httpx.AsyncClient(
                transport=transport, base_url=LOCAL_BASE_URL,
                headers={"authorization": f"Bearer {token}"}, timeout=TIMEOUT,
            ))
            yield Api(http, tenant=tenant, key=token, app=app)
