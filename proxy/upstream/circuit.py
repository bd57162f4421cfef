"""A circuit breaker per upstream: stop waiting on an upstream that is down.

Without it every request pays the full cost of a dead upstream (connect timeouts, retries with
backoff) before it fails or reaches a fallback. With it, after `failures` consecutive failed
calls the circuit *opens*: calls are refused at once (the caller fails fast or moves on to a
fallback). After `reset_s` it is *half-open*: exactly one trial call is let through; its success
closes the circuit, its failure opens it again for another `reset_s`.

Pure state machine: no I/O, no sleeping, time comes from the injected `clock`, so it is tested
exhaustively with a fake clock. Every `allow()` that returns True must be answered by one of
`record_success()`, `record_failure()` or `release()` (the call was abandoned, e.g. cancelled).
A trial whose outcome never arrives does not wedge the circuit: after another `reset_s` a new
trial is let through.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class CircuitBreaker:
    """Counts consecutive failures of one upstream and decides whether a call may go out.

    `failures <= 0` disables the breaker: every call is allowed and nothing is counted.
    `on_change(state)` is called after every state transition (for metrics and logs).
    """

    def __init__(
        self,
        failures: int,
        reset_s: float,
        clock: Callable[[], float],
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self.threshold = failures
        self.reset_s = max(0.0, reset_s)
        self.clock = clock
        self.on_change = on_change
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_at: float | None = None  # when the half-open trial was let through

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    @property
    def state(self) -> CircuitState:
        """The state now: an open circuit whose reset time has passed reads as half-open."""
        if self._state is CircuitState.OPEN and self.clock() >= self._opened_at + self.reset_s:
            self._set(CircuitState.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until a call may be let through again (0 when one may go now)."""
        state = self.state
        now = self.clock()
        if state is CircuitState.OPEN:
            return max(0.0, self._opened_at + self.reset_s - now)
        if state is CircuitState.HALF_OPEN and self._trial_in_flight(now):
            assert self._trial_at is not None
            return max(0.0, self._trial_at + self.reset_s - now)
        return 0.0

    def allow(self) -> bool:
        """May a call go out now? In half-open state this claims the single trial."""
        if not self.enabled:
            return True
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        now = self.clock()
        if self._trial_in_flight(now):
            return False
        self._trial_at = now
        return True

    def record_success(self) -> None:
        """The upstream answered (any answer that is not a failure, 4xx included)."""
        if not self.enabled:
            return
        self._consecutive = 0
        self._trial_at = None
        self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        """A connect error, 5xx or timeout. Opens the circuit at the threshold, or at once when
        the failed call was the half-open trial."""
        if not self.enabled:
            return
        self._consecutive += 1
        state = self.state
        if state is CircuitState.HALF_OPEN or (
            state is CircuitState.CLOSED and self._consecutive >= self.threshold
        ):
            self._open()
        # Already open: a call let through before the circuit opened failed late; the reset
        # time is not pushed back by it.

    def release(self) -> None:
        """A call that was let through ended without an outcome (cancelled): free the trial."""
        if self.enabled and self._state is CircuitState.HALF_OPEN:
            self._trial_at = None

    def _trial_in_flight(self, now: float) -> bool:
        return self._trial_at is not None and now < self._trial_at + self.reset_s

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._trial_at = None
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state is self._state:
            return
        self._state = state
        if self.on_change is not None:
            self.on_change(state)
