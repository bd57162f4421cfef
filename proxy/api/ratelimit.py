"""Per-key limits (`[limits] requests_per_minute`, `[limits] concurrent_turns`).

Why: one runaway script (or one leaked key) must not be able to starve every other user of the
upstream budget or of the database. Each API key — each tenant on an open server, where
callers have no key of their own — gets

- a token bucket of `requests_per_minute` requests, refilled continuously, for the chat
  endpoint and the agents API (checked by `RateLimitMiddleware` before the handler runs);
- at most `concurrent_turns` stateful chat turns at once (taken by the chat handler through
  `begin_turn()` just before the turn starts, given back by `end_turn()` as soon as the turn
  has finished — before the last bytes of the answer go out, so a client that sends its next
  request the moment it has the answer is never refused — and in any case when the request
  ends, whatever happened to it).

Over a limit the caller gets 429 `rate_limit_error` / `rate_limit_exceeded` with `Retry-After`,
before anything is stored or sent upstream. The counters live in this process: with several
workers or processes each has its own, so a key may get up to N times the limit in total.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import LimitsSettings
from ..core.caller import Caller
from ..errors import ProxyError
from ..obs.logs import annotate
from ..turn import Replay, StatefulService, TurnRequest, TurnSession
from .auth import hash_key, scope_caller
from .errors import error_response

MAX_BUCKETS = 10_000  # idle (full) buckets are forgotten beyond this many keys
CONCURRENCY_RETRY_AFTER_S = 1


def rate_limited(message: str, retry_after_s: float) -> ProxyError:
    """The OpenAI-shaped 429 the SDKs turn into `RateLimitError`."""
    seconds = max(1, math.ceil(retry_after_s))
    return ProxyError(
        429,
        message,
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(seconds)},
    )


def bucket_id(caller: Caller, open_server: bool) -> str:
    """Whose budget a request spends: the key's hash, or the tenant on an open server."""
    if open_server or caller.key is None:
        return f"tenant:{caller.tenant}"
    return f"key:{hash_key(caller.key)}"


@dataclass
class TokenBucket:
    capacity: float
    per_second: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Spend one token; 0.0 if there was one, else the seconds until there will be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.updated) * self.per_second >= self.capacity


@dataclass
class RateLimiter:
    """The counters of one process. `clock` is replaceable so tests need not sleep."""

    requests_per_minute: int = 0
    concurrent_turns: int = 0
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _turns: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, limits: LimitsSettings) -> RateLimiter:
        return cls(limits.requests_per_minute, limits.concurrent_turns)

    @property
    def enabled(self) -> bool:
        return bool(self.requests_per_minute or self.concurrent_turns)

    def check_rate(self, bucket: str) -> None:
        """Count one request against `bucket`; raise the 429 if its budget is spent."""
        if not self.requests_per_minute:
            return
        now = self.clock()
        found = self._buckets.get(bucket)
        if found is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle(now)
            rate = float(self.requests_per_minute)
            found = self._buckets[bucket] = TokenBucket(rate, rate / 60.0, rate, now)
        wait = found.take(now)
        if wait > 0:
            raise rate_limited(
                f"rate limit reached: {self.requests_per_minute} requests per minute for this"
                " API key; retry after the time in Retry-After",
                wait,
            )

    def acquire_turn(self, bucket: str) -> bool:
        """Take a turn slot; False when `bucket` already runs `concurrent_turns` turns."""
        if not self.concurrent_turns:
            return True
        running = self._turns.get(bucket, 0)
        if running >= self.concurrent_turns:
            return False
        self._turns[bucket] = running + 1
        return True

    def release_turn(self, bucket: str) -> None:
        running = self._turns.get(bucket, 0) - 1
        if running > 0:
            self._turns[bucket] = running
        else:
            self._turns.pop(bucket, None)

    def running_turns(self, bucket: str) -> int:
        return self._turns.get(bucket, 0)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:  # every key busy: forget the oldest
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for key in oldest[: len(oldest) // 2]:
                del self._buckets[key]


@dataclass
class RequestLimits:
    """The limiter and budget of the running request (see `CURRENT`)."""

    limiter: RateLimiter
    bucket: str
    turns: int = 0  # slots this request holds, released when the request ends

    def release(self) -> None:
        while self.turns:
            self.turns -= 1
            self.limiter.release_turn(self.bucket)


# Set by the middleware for the request it runs; the handler (and the streaming task it
# starts, which inherits the context) reach the request's limits through it.
CURRENT: ContextVar[RequestLimits | None] = ContextVar("memproxy_limits", default=None)


def begin_turn() -> None:
    """Called by the chat handler right before a stateful turn starts (before any store
    write): take a slot of the caller's `concurrent_turns`, or raise the 429."""
    limits = CURRENT.get()
    if limits is None or not limits.limiter.concurrent_turns:
        return
    if not limits.limiter.acquire_turn(limits.bucket):
        annotate(limited="concurrent_turns")
        raise rate_limited(
            f"too many turns at once: {limits.limiter.concurrent_turns} concurrent turns are"
            " allowed per API key; retry when one has finished",
            CONCURRENCY_RETRY_AFTER_S,
        )
    limits.turns += 1


def end_turn() -> None:
    """Give back the running request's turn slot (idempotent; a no-op without limits)."""
    limits = CURRENT.get()
    if limits is not None:
        limits.release()


_LIMITED_PARTS = ("/responses", "/conversations")  # and what is below them


def limited_path(path: str) -> bool:
    """The chat endpoint (all its aliases), the Responses and Conversations APIs (under every
    base URL), and the agents API."""
    if path.endswith("/chat/completions") or path == "/v1/agents" or path.startswith(
            "/v1/agents/"):
        return True
    return any(part + "/" in path or path.endswith(part) for part in _LIMITED_PARTS)


async def start_turn(service: StatefulService, request: TurnRequest,
                     api_key: str | None) -> TurnSession | Replay:
    """`service.start` inside a `concurrent_turns` slot, given back if it fails to start; the
    caller gives it back (`end_turn`) when the turn is over."""
    begin_turn()  # before anything is stored
    try:
        return await service.start(request, api_key)
    except BaseException:
        end_turn()
        raise


class RateLimitMiddleware:
    """Applies `requests_per_minute` and holds `concurrent_turns` slots for the request's life.

    Runs inside `AuthenticationMiddleware` and reads its caller: a request whose authentication
    failed is left for the handler to answer (401) and is not counted. Its own 429 it sends
    itself (middleware is outside the app's exception handlers).
    """

    def __init__(self, app: ASGIApp, limits: LimitsSettings) -> None:
        self.app = app
        self.limiter = RateLimiter.from_settings(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not limited_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = getattr(scope["app"].state, "memproxy", None) if "app" in scope else None
        if state is None:
            await self.app(scope, receive, send)
            return
        caller = scope_caller(scope)
        if caller is None:
            await self.app(scope, receive, send)
            return
        bucket = bucket_id(caller, state.auth.open)
        try:
            self.limiter.check_rate(bucket)
        except ProxyError as exc:
            annotate(limited="requests_per_minute")
            await error_response(exc)(scope, receive, send)
            return
        limits = RequestLimits(self.limiter, bucket)
        token = CURRENT.set(limits)
        try:
            await self.app(scope, receive, send)
        finally:
            limits.release()
            CURRENT.reset(token)
