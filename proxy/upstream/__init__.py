"""The OpenAI-compatible upstream: HTTP client, SSE parser and error mapping.

Import from here: `UpstreamClient`, `UpstreamError`, `Route`, `SSEDecoder`, `SSEEvent`.
"""

from proxy.upstream.circuit import CircuitBreaker, CircuitState
from proxy.upstream.client import HOP_BY_HOP, UpstreamClient
from proxy.upstream.errors import UpstreamError, error_from_transport
from proxy.upstream.routing import Route, UpstreamObserver
from proxy.upstream.sse import SSEDecoder, SSEEvent, aiter_sse

__all__ = [
    "HOP_BY_HOP",
    "CircuitBreaker",
    "CircuitState",
    "Route",
    "SSEDecoder",
    "SSEEvent",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamObserver",
    "aiter_sse",
    "error_from_transport",
]
