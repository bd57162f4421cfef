"""The OpenAI-compatible upstream: HTTP client, SSE parser and error mapping.

Import from here: `UpstreamClient`, `UpstreamError`, `SSEDecoder`, `SSEEvent`.
"""

from proxy.upstream.client import HOP_BY_HOP, UpstreamClient
from proxy.upstream.errors import UpstreamError, error_from_transport
from proxy.upstream.sse import SSEDecoder, SSEEvent, aiter_sse

__all__ = [
    "HOP_BY_HOP",
    "SSEDecoder",
    "SSEEvent",
    "UpstreamClient",
    "UpstreamError",
    "aiter_sse",
    "error_from_transport",
]
