"""Which upstream a request goes to: the primary, then the configured fallbacks.

An `Endpoint` is one OpenAI-compatible upstream (base URL, key policy, the models it serves,
an optional model rename) with its own circuit breaker. A `Route` travels with one client
request through every call made for it: it carries the request's deadline in and reports which
upstream answered out (for the `x-memproxy-upstream` header, logs and metrics).

Key policy, chosen so that no key reaches a host it was not meant for: the primary gets the key
`UpstreamClient.resolve_key` chose (configured, or the client's own with `forward_client_key`);
a fallback gets only its own configured `api_key`, or no Authorization at all.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import httpx

from proxy.config import UpstreamSettings
from proxy.upstream.circuit import CircuitBreaker, CircuitState
from proxy.upstream.faults import deadline_exceeded

__all__ = [
    "Endpoint",
    "NullObserver",
    "Route",
    "UpstreamObserver",
    "build_endpoints",
    "join_url",
    "model_of",
]

T = TypeVar("T")


class UpstreamObserver(Protocol):
    """Receives what metrics need; labels are the upstream's index ("0" = primary)."""

    def upstream_failure(self, upstream: str, kind: str) -> None: ...

    def circuit_changed(self, upstream: str, state: str) -> None: ...

    def fallback_used(self, upstream: str) -> None: ...


class NullObserver:
    def upstream_failure(self, upstream: str, kind: str) -> None:
        pass

    def circuit_changed(self, upstream: str, state: str) -> None:
        pass

    def fallback_used(self, upstream: str) -> None:
        pass


@dataclass
class Route:
    """One client request's routing: its deadline in, the upstream that answered out."""

    deadline: float | None = None  # a time.monotonic() value; None = no deadline
    answered_by: int | None = None  # index of the upstream that answered the latest call
    attempts: int = 0  # upstream calls sent for this request, retries and fallbacks included
    budget_s: float | None = None  # the deadline's length, for the error message

    @classmethod
    def within(cls, seconds: float | None, *, start: float | None = None) -> Route:
        """A route whose deadline is `seconds` after `start` (a time.monotonic() value, default
        now); no deadline when `seconds` is None or <= 0."""
        if seconds is None or seconds <= 0:
            return cls()
        begin = time.monotonic() if start is None else start
        return cls(deadline=begin + seconds, budget_s=seconds)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or None without a deadline."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def check(self) -> None:
        """Raise `deadline_exceeded` when the deadline has passed."""
        if self.expired():
            raise deadline_exceeded(self.budget_s)

    async def bound(self, work: Awaitable[T]) -> T:
        """Await `work` within the deadline; past it, raise `deadline_exceeded`."""
        left = self.remaining()
        if left is None:
            return await work
        if left <= 0:
            if inspect.iscoroutine(work):
                work.close()
            raise deadline_exceeded(self.budget_s)
        try:
            async with asyncio.timeout(left) as scope:
                return await work
        except TimeoutError:
            if scope.expired():
                raise deadline_exceeded(self.budget_s) from None
            raise


def model_of(body: dict[str, Any] | None) -> str | None:
    """The request's model name, if it has one."""
    model = (body or {}).get("model")
    return model if isinstance(model, str) else None


def join_url(base: str, path: str) -> str:
    """`{base}{path}`; `/v1/...` is accepted too when `base` already ends in /v1."""
    if not path.startswith("/"):
        path = "/" + path
    if base.endswith("/v1") and (path.startswith("/v1/") or path == "/v1"):
        path = path[3:]
    return base + path


@dataclass
class Endpoint:
    """One upstream. Index 0 is the primary; 1.. are the fallbacks in configuration order."""

    index: int
    base: str
    api_key: str | None
    models: tuple[str, ...]
    rename: str | None
    breaker: CircuitBreaker
    host: str = field(init=False)

    def __post_init__(self) -> None:
        self.base = self.base.rstrip("/")
        url = httpx.URL(self.base)
        self.host = f"{url.host}:{url.port}" if url.port else url.host

    @property
    def name(self) -> str:
        return str(self.index)

    @property
    def is_fallback(self) -> bool:
        return self.index > 0

    def url(self, path: str) -> str:
        return join_url(self.base, path)

    def serves(self, model: str | None) -> bool:
        """The primary serves everything; a fallback the models its globs match (all if none)."""
        if not self.is_fallback or not self.models:
            return True
        return model is not None and any(fnmatch.fnmatchcase(model, g) for g in self.models)

    def key(self, resolved: str | None) -> str | None:
        """The key to send here: the resolved one for the primary, the own one for fallbacks."""
        return self.api_key if self.is_fallback else resolved

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request body for this upstream: the model renamed when configured."""
        if self.rename is None or body.get("model") == self.rename:
            return body
        return {**body, "model": self.rename}


def build_endpoints(
    settings: UpstreamSettings,
    clock: Callable[[], float],
    on_change: Callable[[Endpoint, CircuitState], None],
) -> list[Endpoint]:
    """The primary and the fallbacks, each with a breaker that reports its transitions."""
    specs: list[tuple[str, str | None, Sequence[str], str | None]] = [
        (settings.base_url, settings.api_key, (), None)
    ]
    specs += [(f.base_url, f.api_key, f.models, f.model) for f in settings.fallbacks]
    endpoints: list[Endpoint] = []
    for index, (base, key, models, rename) in enumerate(specs):
        breaker = CircuitBreaker(settings.circuit_failures, settings.circuit_reset_s, clock)
        endpoint = Endpoint(index, base, key, tuple(models), rename, breaker)
        breaker.on_change = _reporter(endpoint, on_change)
        endpoints.append(endpoint)
    return endpoints


def _reporter(
    endpoint: Endpoint, on_change: Callable[[Endpoint, CircuitState], None]
) -> Callable[[CircuitState], None]:
    return lambda state: on_change(endpoint, state)
