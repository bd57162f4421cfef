"""The errors memproxy's own resilience produces, and how upstream failures are classified.

`errors.py` maps what an upstream did wrong into the OpenAI shape; this module adds the errors
memproxy raises itself while protecting a request (a stream that never brings a token, a spent
deadline, an open circuit) and the two classifications the client needs: does
a failure count against the upstream's circuit breaker, and which bounded metrics label it gets.
"""

from __future__ import annotations

import math

from proxy.upstream.errors import UpstreamError

__all__ = [
    "circuit_open",
    "counts_as_failure",
    "deadline_exceeded",
    "failure_kind",
    "first_token_timeout",
]


def first_token_timeout(host: str, seconds: float) -> UpstreamError:
    """A stream that brought no token in time. Not retried on the same (stuck) upstream, but
    nothing has reached the client yet, so a fallback may still answer."""
    return UpstreamError(
        504,
        f"the upstream at {host} sent no token within {seconds:g} s",
        code="first_token_timeout",
        retryable=False,
        fallback=True,
    )


def deadline_exceeded(seconds: float | None = None) -> UpstreamError:
    """The request's whole time budget (`request_deadline_s`) is spent."""
    within = f" of {seconds:g} s" if seconds is not None else ""
    return UpstreamError(
        504,
        f"the request did not finish within its deadline{within} (request_deadline_s)",
        type="timeout_error",
        code="deadline_exceeded",
        retryable=False,
        fallback=False,
    )


def circuit_open(host: str, retry_after: float) -> UpstreamError:
    """Failing fast: the upstream failed repeatedly and its circuit breaker is open."""
    return UpstreamError(
        503,
        f"the upstream at {host} is failing; requests to it are paused (circuit open)",
        code="circuit_open",
        headers={"retry-after": str(max(1, math.ceil(retry_after)))},
        retryable=False,
        fallback=True,
    )


_OWN_CODES = frozenset({"deadline_exceeded", "circuit_open"})
_KINDS = {
    "upstream_unreachable": "connect",
    "upstream_disconnected": "disconnect",
    "upstream_timeout": "timeout",
    "first_token_timeout": "first_token_timeout",
    "stream_interrupted": "stream_interrupted",
    "bad_upstream_response": "bad_response",
    "empty_response": "empty_response",
    "circuit_open": "circuit_open",
    "deadline_exceeded": "deadline",
    "upstream_response_too_large": "too_large",
}
# The upstream answered, only at more length than memproxy accepts: not a sign of ill health.
_ANSWERED = frozenset({"upstream_response_too_large"})


def counts_as_failure(error: UpstreamError) -> bool:
    """Whether the error says the upstream is unhealthy (circuit breaker): connect errors, 5xx,
    timeouts, broken streams. 4xx and 429 mean it answered; memproxy's own limits are not its
    fault."""
    return error.status >= 500 and error.code not in _OWN_CODES and error.code not in _ANSWERED


def failure_kind(error: UpstreamError) -> str:
    """A bounded label for metrics."""
    kind = _KINDS.get(error.code or "")
    if kind is not None:
        return kind
    if error.status == 429:
        return "http_429"
    return "http_5xx" if error.status >= 500 else "http_4xx"
