"""Context window of a model (docs/design.md §3.1, "Per-model context windows"). First match wins:

1. `[models."PATTERN"] context_window` from the settings. An exact key beats every glob; among
   globs (`fnmatch`, case-insensitive) the longest pattern wins, ties going to the one with
   fewer wildcards, then alphabetical order. Entries whose `context_window` is unset are
   skipped.
2. The upstream's `/v1/models` listing: vLLM's `max_model_len`, OpenRouter's
   `context_length` (or `top_provider.context_length`), `context_window` (Groq and others),
   `max_context_length` (LM Studio). The id must match exactly, or else case-insensitively.
   `upstream_models` may also be the `{id: window}` dict `parse_upstream_windows` returns.
3. `KNOWN_WINDOWS`, a table of well-known model families (see `known_window`).
4. `[memory] default_context_window`.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Mapping
from typing import Any

from ..config import Settings

# Keys are lower-case family names; `known_window` finds the longest key that occurs in the
# model name on separator boundaries, so dated variants (gpt-4o-2024-08-06), provider prefixes
# (openai/gpt-4o, anthropic/claude-3.5-sonnet), fine-tunes (ft:gpt-4o-mini:org::id) and
# suffixes (qwen2.5:7b, llama-3.1-8b-instruct) resolve to their family. Where providers differ,
# the smaller (safer) figure is used.
KNOWN_WINDOWS: dict[str, int] = {
    # OpenAI
    "gpt-5": 400_000,
    "gpt-5-chat": 128_000,
    "gpt-4.5": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-1106-preview": 128_000,
    "gpt-4-0125-preview": 128_000,
    "gpt-4-vision-preview": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-3.5-turbo-0301": 4_096,
    "gpt-3.5-turbo-instruct": 4_096,
    "gpt-35-turbo": 16_385,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o1-preview": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
    "codex-mini": 200_000,
    "gpt-oss": 131_072,
    # Anthropic
    "claude": 200_000,
    "claude-2": 100_000,
    "claude-2.0": 100_000,
    "claude-2.1": 200_000,
    "claude-instant": 100_000,
    "claude-instant-1": 100_000,
    # Meta
    "llama-2": 4_096,
    "llama2": 4_096,
    "llama-3": 8_192,
    "llama3": 8_192,
    "llama-3.1": 131_072,
    "llama3.1": 131_072,
    "llama-3.2": 131_072,
    "llama3.2": 131_072,
    "llama-3.3": 131_072,
    "llama3.3": 131_072,
    "llama-4": 131_072,
    "llama4": 131_072,
    # Mistral
    "mistral": 32_768,
    "mistral-7b": 32_768,
    "mistral-small": 32_768,
    "mistral-medium": 131_072,
    "mistral-large": 131_072,
    "mistral-nemo": 131_072,
    "ministral": 131_072,
    "pixtral": 131_072,
    "codestral": 32_768,
    "mixtral": 32_768,
    "mixtral-8x7b": 32_768,
    "mixtral-8x22b": 65_536,
    # Qwen
    "qwen": 32_768,
    "qwen2": 32_768,
    "qwen2.5": 32_768,
    "qwen3": 32_768,
    "qwq": 32_768,
    # Google
    "gemini": 1_048_576,
    "gemini-pro": 32_760,
    "gemini-1.0": 32_760,
    "gemini-1.5": 1_048_576,
    "gemini-1.5-pro": 2_097_152,
    "gemini-pro-1.5": 2_097_152,
    "gemini-flash-1.5": 1_048_576,
    "gemini-2.0": 1_048_576,
    "gemini-2.5": 1_048_576,
    "gemma": 8_192,
    "gemma-2": 8_192,
    "gemma2": 8_192,
    "gemma-3": 131_072,
    "gemma-3-1b": 32_768,
    "gemma3": 131_072,
    # DeepSeek
    "deepseek-chat": 65_536,
    "deepseek-reasoner": 65_536,
    "deepseek-coder": 16_384,
    "deepseek-v2": 128_000,
    "deepseek-v3": 128_000,
    "deepseek-r1": 128_000,
    # others
    "command-r": 128_000,
    "command-r-plus": 128_000,
    "command-a": 256_000,
    "grok-2": 131_072,
    "grok-3": 131_072,
    "grok-4": 256_000,
    "phi-3": 4_096,
    "phi-3-mini-128k": 128_000,
    "phi-3.5": 128_000,
    "phi-4": 16_384,
    "kimi-k2": 131_072,
}

_SEP = r"[-_:/@ ]"
# Longest first, so the first key found is the most specific one.
_KNOWN_PATTERNS = [
    (re.compile(rf"(?:^|{_SEP}){re.escape(key)}(?:$|{_SEP})"), window)
    for key, window in sorted(KNOWN_WINDOWS.items(), key=lambda kv: len(kv[0]), reverse=True)
]

# Keys in /v1/models entries that carry the window, in order of preference.
_UPSTREAM_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if number > 0 else None
    return None


def _entry_window(entry: Mapping[str, Any]) -> int | None:
    for key in _UPSTREAM_KEYS:
        window = _positive_int(entry.get(key))
        if window:
            return window
    provider = entry.get("top_provider")
    if isinstance(provider, Mapping):
        return _positive_int(provider.get("context_length"))
    return None


def parse_upstream_windows(models_json: Any) -> dict[str, int]:
    """Model id -> context window from a `/v1/models` response; models without one are left out.

    Accepts the OpenAI shape `{"data": [...]}` or a bare list; anything malformed gives `{}`.
    """
    if isinstance(models_json, Mapping):
        entries = models_json.get("data")
    else:
        entries = models_json
    if not isinstance(entries, list):
        return {}
    windows: dict[str, int] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        window = _entry_window(entry)
        if window:
            windows[entry["id"]] = window
    return windows


def _glob_rank(pattern: str) -> tuple[int, int, str]:
    wildcards = sum(pattern.count(c) for c in "*?[")
    return (-len(pattern), wildcards, pattern)


def configured_window(model: str, settings: Settings) -> int | None:
    """The window `[models]` in the settings gives `model`, or None."""
    models = settings.models
    exact = models.get(model)
    if exact is not None and exact.context_window is not None:
        return exact.context_window
    lowered = model.lower()
    for pattern in sorted(models, key=_glob_rank):
        entry = models[pattern]
        if entry.context_window is None or pattern == model:
            continue
        if fnmatch.fnmatchcase(lowered, pattern.lower()):
            return entry.context_window
    return None


def upstream_window(model: str, upstream_models: Any) -> int | None:
    """The window the upstream's `/v1/models` response reports for `model`, or None.

    `upstream_models` is the response JSON, or the `{id: window}` dict that
    `parse_upstream_windows` made of it (so a caller may parse once per refresh).
    """
    if isinstance(upstream_models, Mapping) and "data" not in upstream_models:
        windows = {k: w for k, v in upstream_models.items() if (w := _positive_int(v)) is not None}
    else:
        windows = parse_upstream_windows(upstream_models)
    if model in windows:
        return windows[model]
    lowered = model.lower()
    for model_id, window in windows.items():
        if model_id.lower() == lowered:
            return window
    return None


def known_window(model: str) -> int | None:
    """The window of `model`'s family in `KNOWN_WINDOWS`, or None.

    A key matches when it occurs in the lower-cased name with a separator (or the start or end
    of the name) on both sides: `gpt-4o` matches `openai/gpt-4o-2024-08-06` but `gpt-4` does
    not match `gpt-4o` or `gpt-4.1`. The longest matching key wins.
    """
    return _known_window(model.strip().lower())


@functools.lru_cache(maxsize=1024)
def _known_window(name: str) -> int | None:
    if not name:
        return None
    for pattern, window in _KNOWN_PATTERNS:
        if pattern.search(name):
            return window
    return None


def context_window(model: str, settings: Settings, upstream_models: Any = None) -> int:
    """The context window to budget `model`'s prompts against (see the module docstring)."""
    for window in (
        configured_window(model, settings),
        upstream_window(model, upstream_models) if upstream_models else None,
        known_window(model),
    ):
        if window:
            return window
    return settings.memory.default_context_window
