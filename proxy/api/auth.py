"""API keys → tenants (DESIGN §3.1).

Keys come from `[auth.keys]` (plain or `sha256:<hex>`), `[auth] admin_keys`, and keys stored
hashed in the database by `memproxy keys add`. Only hashes are kept in memory; comparisons are
constant-time. With no key configured anywhere the server is open and every caller is the
tenant `default`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from ..config import AuthSettings
from ..errors import ProxyError
from ..store.base import ApiKeyStore

OPEN_TENANT = "default"
DB_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Caller:
    tenant: str
    admin: bool = False
    key: str | None = None  # the raw bearer token, kept only to forward upstream when asked


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
