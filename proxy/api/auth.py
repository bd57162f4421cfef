"""API keys → tenants (docs/design.md §3.1), checked once per request by `AuthenticationMiddleware`.

Keys come from `[auth.keys]` (plain or `sha256:<hex>`), `[auth] admin_keys`, and keys stored
hashed in the database by `memproxy keys add` (tenant or `--admin` keys; re-read while the
server runs, see `Authenticator`). Only hashes are kept in memory; comparisons are
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
from ..store.base import ApiKeyEntry, ApiKeyStore

OPEN_TENANT = "default"
UNKNOWN_KEY_RETRY_SECONDS = 1.0  # an unknown key is not looked up again sooner
UNKNOWN_LOOKUPS_PER_SECOND = 20  # look-ups of keys not seen recently, per process
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
    """Keys from the configuration (fixed for the process) and from the database (re-read).

    Stored keys change while servers run (`memproxy keys add / rm`, from any process), so no
    restart is needed for either:
    - a key this process has not seen is looked up when presented, so a new key works on its
      first request. An unknown key is remembered as unknown for `UNKNOWN_KEY_RETRY_SECONDS`,
      and at most `UNKNOWN_LOOKUPS_PER_SECOND` such look-ups run per second (a flood of random
      keys costs the database little; past the budget a key is refused without a look-up);
    - a known key is re-read at most every `[auth] key_recheck_seconds`, so a removed key stops
      working, and a changed tenant or admin flag applies, within that many seconds;
    - an open server (no key anywhere) closes as soon as a stored key exists: it counts the
      stored keys every `[auth] key_recheck_seconds`, and a presented key found in the table
      closes it at once. Removing every stored key does not re-open a running server (only a restart
      can serve open: refusing is the safe side).
    """

    def __init__(self, settings: AuthSettings, store: ApiKeyStore) -> None:
        self.store = store
        self.config_keys = {_stored_hash(k): tenant for k, tenant in settings.keys.items()}
        self.admin_hashes = {_stored_hash(k) for k in settings.admin_keys}
        self.recheck_seconds = settings.key_recheck_seconds
        self._db_has_keys = False
        self._counted_at = -float("inf")
        self._db_cache: dict[str, tuple[ApiKeyEntry | None, float]] = {}
        self._lookup_window = (-float("inf"), 0)  # (second it started, look-ups in it)

    async def refresh(self) -> None:
        """Learn whether the database holds keys (so the server is not open)."""
        self._counted_at = time.monotonic()
        if await self.store.count_api_keys() > 0:
            self._db_has_keys = True

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
            await self._close_if_keys_exist(token)
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
        entry = await self._db_lookup(digest) if self._db_has_keys else None
        if entry is not None:
            if entry.admin:
                return Caller(OPEN_TENANT, admin=True, key=token)
            return Caller(entry.tenant, key=token)
        raise ProxyError(
            401, "invalid API key", type="invalid_request_error", code="invalid_api_key"
        )

    async def _close_if_keys_exist(self, token: str | None) -> None:
        """Open so far: has a key been stored since? (see the class doc)."""
        if token is not None and await self._db_lookup(hash_key(token)) is not None:
            self._db_has_keys = True
            return
        if time.monotonic() - self._counted_at >= self.recheck_seconds:
            await self.refresh()

    def _lookup_allowed(self, now: float) -> bool:
        started, count = self._lookup_window
        if now - started >= 1.0:
            self._lookup_window = (now, 1)
            return True
        if count >= UNKNOWN_LOOKUPS_PER_SECOND:
            return False
        self._lookup_window = (started, count + 1)
        return True

    async def _db_lookup(self, digest: str) -> ApiKeyEntry | None:
        now = time.monotonic()
        cached = self._db_cache.get(digest)
        if cached is not None:
            entry, read_at = cached
            fresh_for = self.recheck_seconds if entry is not None else UNKNOWN_KEY_RETRY_SECONDS
            if now - read_at < fresh_for:
                return entry
        if (cached is None or cached[0] is None) and not self._lookup_allowed(now):
            return None  # over the budget for unknown keys: refused, not remembered
        entry = await self.store.api_key_entry(digest)
        if len(self._db_cache) > 10_000:
            self._db_cache.clear()
        self._db_cache[digest] = (entry, now)
        return entry


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
