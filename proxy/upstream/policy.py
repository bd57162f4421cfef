"""How one request's upstream calls are made resilient: routing, breakers, retries, deadline.

`UpstreamClient` mixes this in; it provides `settings`, `endpoints`, `sleep`, `rng` and the
observer. Each call of a request goes through `_routed` (the primary, then every fallback that
serves the model while the errors allow it) and, per upstream, `_with_retries` (the circuit
breaker's permission, the deadline around each attempt, backoff between attempts that never
sleeps past the deadline). Outcomes are reported to the breaker and the observer in one place,
`_settle`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.config import UpstreamSettings
from proxy.upstream.circuit import CircuitState
from proxy.upstream.errors import (
    RETRY_AFTER_CAP_S,
    UpstreamError,
    backoff_delay,
    parse_retry_after,
)
from proxy.upstream.faults import circuit_open, counts_as_failure, failure_kind
from proxy.upstream.routing import Endpoint, Route, UpstreamObserver

__all__ = ["ResilientCalls"]

log = logging.getLogger("memproxy.upstream")
T = TypeVar("T")
_OWN_CODES = ("deadline_exceeded", "circuit_open")


class ResilientCalls:
    """The resilience half of `UpstreamClient` (a mixin; see the module docstring)."""

    settings: UpstreamSettings
    endpoints: list[Endpoint]
    sleep: Callable[[float], Awaitable[None]]
    rng: random.Random
    _observer: UpstreamObserver

    @property
    def observer(self) -> UpstreamObserver:
        return self._observer

    @observer.setter
    def observer(self, observer: UpstreamObserver) -> None:
        self._observer = observer
        for endpoint in self.endpoints:
            observer.circuit_changed(endpoint.name, endpoint.breaker.state.value)

    def _circuit_changed(self, endpoint: Endpoint, state: CircuitState) -> None:
        level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
        log.log(level, "upstream %s (%s): circuit %s", endpoint.name, endpoint.host, state.value)
        self._observer.circuit_changed(endpoint.name, state.value)

    def _retry_delay(self, error: UpstreamError, attempt: int) -> float | None:
        """Seconds to wait before retry `attempt` (0-based), or None to give up."""
        if not error.retryable or attempt >= self.settings.max_retries:
            return None
        asked = parse_retry_after(error.headers)
        if asked is None:
            return backoff_delay(attempt, self.rng)
        return asked if asked <= RETRY_AFTER_CAP_S else None

    def _settle(self, endpoint: Endpoint, error: UpstreamError | None) -> None:
        """Tell the endpoint's breaker (and the metrics) how an allowed call ended."""
        breaker = endpoint.breaker
        if error is None:
            breaker.record_success()
            return
        self._observer.upstream_failure(endpoint.name, failure_kind(error))
        if error.code in _OWN_CODES:
            breaker.release()
        elif counts_as_failure(error):
            breaker.record_failure()
        else:
            breaker.record_success()

    async def _with_retries(
        self,
        endpoint: Endpoint,
        route: Route,
        attempt: Callable[[], Awaitable[T]],
        assess: Callable[[T], UpstreamError | None] | None = None,
    ) -> T:
        """Call one upstream with the retry policy, its breaker and the deadline.

        `assess` classifies a returned result for the breaker (pass-through returns error
        statuses instead of raising them).
        """
        tries = 0
        while True:
            if not endpoint.breaker.allow():
                self._observer.upstream_failure(endpoint.name, "circuit_open")
                raise circuit_open(endpoint.host, endpoint.breaker.retry_after())
            route.attempts += 1
            try:
                result = await route.bound(attempt())
            except UpstreamError as error:
                self._settle(endpoint, error)
                delay = self._retry_delay(error, tries)
                left = route.remaining()
                if delay is None or (left is not None and delay >= left):
                    raise
                if not endpoint.breaker.allow():  # opened meanwhile: give up on this one
                    raise
                endpoint.breaker.release()  # the check above is not an attempt
                tries += 1
                await self.sleep(delay)
                continue
            except BaseException:
                endpoint.breaker.release()
                raise
            self._settle(endpoint, assess(result) if assess is not None else None)
            return result

    def _candidates(self, model: str | None) -> list[Endpoint]:
        return [e for e in self.endpoints if e.serves(model)]

    async def _routed(
        self, model: str | None, route: Route, call: Callable[[Endpoint], Awaitable[T]]
    ) -> T:
        """Try the primary, then each fallback serving `model`, until one answers."""
        failed: UpstreamError | None = None
        previous: tuple[Endpoint, UpstreamError] | None = None
        for endpoint in self._candidates(model):
            if previous is not None:
                before, error = previous
                log.warning(
                    "upstream %s (%s) failed (%s %s); trying upstream %s (%s)", before.name,
                    before.host, error.status, error.code, endpoint.name, endpoint.host,
                )
            try:
                result = await call(endpoint)
            except UpstreamError as error:
                if not error.fallback:
                    raise
                if failed is None or error.code != "circuit_open":
                    failed = error  # the most telling error: a real one over a fast-fail
                previous = (endpoint, error)
                continue
            self._answered(endpoint, route)
            return result
        assert failed is not None
        raise failed

    def _answered(self, endpoint: Endpoint, route: Route) -> None:
        route.answered_by = endpoint.index
        if endpoint.is_fallback:
            self._observer.fallback_used(endpoint.name)
            log.info("fallback upstream %s (%s) answered", endpoint.name, endpoint.host)
