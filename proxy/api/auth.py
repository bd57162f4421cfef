"""API keys → tenants (docs/design.md §3.1), checked once per request by `AuthenticationMiddleware`.

Keys come from `[auth.keys]` (plain or `sha256:<hex>`), `[auth] admin_keys`, and keys stored
hashed in the database by `memproxy keys add`. Only hashes are kept in memory; comparisons are
constant-time. With no key configured anywhere the server is open and every caller is the
tenant `default`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import AuthSettings
from ..core.caller import Caller
from ..errors import ProxyError
from ..store.base import ApiKeyStore

OPEN_TENANT = "default"
DB_CACHE_SECONDS = 30.0
CALLER_SCOPE_KEY = "memproxy.caller"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _stored_hash(entry: str) -> str:
    return entry[7:].lower() if entry.startswith("sha256:") else hash_key(entry)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    def __init__(self, settings: AuthSettings, store: ApiKeyStore) -> None:
        self.store = store
        self.config_keys = {_stored_hash(k): tenant for k, tenant in settings.keys.items()}
        self.admin_hashes = {_stored_hash(k) for k in settings.admin_keys}
        self._db_has_keys = False
        self._db_cache: dict[str, tuple[str | None, float]] = {}

    async def refresh(self) -> None:
        """Learn whether the database holds keys (so the server is not open)."""
        self._db_has_keys = await self.store.count_api_keys() > 0

    @property
    def open(self) -> bool:
        return not (self.config_keys or self.admin_hashes or self._db_has_keys)

    def _match(self, digest: str, table: dict[str, str] | set[str]) -> str | bool | None:
        # Constant-time comparison against every entry so timing reveals nothing.
        found: str | bool | None = None
        for candidate in table:
            if hmac.compare_digest(candidate, digest):
                found = table[candidate] if isinstance(table, dict) else True
        return found

    async def authenticate(self, authorization: str | None) -> Caller:
        token = bearer_token(authorization)
        if self.open:
            return Caller(OPEN_TENANT, admin=True, key=token)
        if token is None:
            raise ProxyError(
                401,
                "missing API key: send it as 'Authorization: Bearer KEY'",
                type="invalid_request_error",
                code="missing_api_key",
            )
        digest = hash_key(token)
        if self._match(digest, self.admin_hashes):
            return Caller(OPEN_TENANT, admin=True, key=token)
        tenant = self._match(digest, self.config_keys)
        if isinstance(tenant, str):
            return Caller(tenant, key=token)
        tenant_db = await self._db_lookup(digest)
        if tenant_db is not None:
            return Caller(tenant_db, key=token)
        raise ProxyError(
            401, "invalid API key", type="invalid_request_error", code="invalid_api_key"
        )

    async def _db_lookup(self, digest: str) -> str | None:
        if not self._db_has_keys:
            return None
        cached = self._db_cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[1] < DB_CACHE_SECONDS:
            return cached[0]
        tenant = await self.store.tenant_for_key_hash(digest)
        if len(self._db_cache) > 10_000:
            self._db_cache.clear()
        self._db_cache[digest] = (tenant, now)
        return tenant


class AuthenticationMiddleware:
    """Authenticates every HTTP request once, before the rate limiter and the handlers.

    Like Starlette's `AuthenticationMiddleware` (which sets `scope["user"]`) it answers nothing
    itself: it puts the outcome in the scope, the `Caller` or the exception authentication
    raised (401 `missing_api_key` / `invalid_api_key`, or a failing key store), and
    `request_caller()` raises that exception where a handler needs a caller. So routes without
    authentication (health, metrics, the inspector's files, unknown paths) never fail on it, and
    each handler's 401 comes exactly where it asks for the caller.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = getattr(scope["app"].state, "memproxy", None) if "app" in scope else None
        if scope["type"] == "http" and state is not None:  # (no state: a test's bare app)
            authorization = Headers(scope=scope).get("authorization")
            outcome: Caller | Exception
            try:
                outcome = await state.auth.authenticate(authorization)
            except Exception as exc:
                outcome = exc
            scope[CALLER_SCOPE_KEY] = outcome
        await self.app(scope, receive, send)


def scope_caller(scope: Scope) -> Caller | None:
    """The authenticated caller of a request, or None when authentication failed."""
    outcome = scope.get(CALLER_SCOPE_KEY)
    return outcome if isinstance(outcome, Caller) else None


def request_caller(request: Request) -> Caller:
    """The caller `AuthenticationMiddleware` found, or the error it met (raised here)."""
    outcome = request.scope[CALLER_SCOPE_KEY]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
