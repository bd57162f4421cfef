"""Who is calling: the tenant a request acts for, as authentication found it.

Plain data, here rather than next to the `Authenticator` (proxy/api/auth.py), because a turn
(proxy/turn/) carries the caller too: its tenant scopes every row, its key may be forwarded
upstream.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    tenant: str
    admin: bool = False
    key: str | None = None  # the raw bearer token, kept only to forward upstream when asked
