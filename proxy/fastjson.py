"""Compact JSON for the hot path: orjson when installed, the stdlib where orjson cannot.

orjson is several times faster at encoding request bodies and stored rows, but refuses what the
stdlib accepts (integers beyond 64 bits, non-string keys, lone surrogates): those values fall
back to the stdlib, which writes the same compact form. Decoding text the stdlib wrote
(`tolerant_loads`) likewise falls back when orjson refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is an optional speed-up
    orjson = None  # type: ignore[assignment]


def _std_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON bytes."""
    if orjson is None:  # pragma: no cover
        return _std_dumps(value).encode()
    try:
        return orjson.dumps(value)
    except TypeError:  # non-str keys, integers beyond 64 bits, lone surrogates
        return _std_dumps(value).encode()


def dumps_text(value: Any) -> str:
    """Compact JSON text (for a database column)."""
    if orjson is None:  # pragma: no cover
        return _std_dumps(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _std_dumps(value)


loads: Callable[[str | bytes], Any] = json.loads if orjson is None else orjson.loads
"""Strict decoding of what others sent (an upstream's answer): orjson when installed."""


def tolerant_loads(text: str | bytes) -> Any:
    """Decode JSON this process stored: orjson, or the stdlib for what only it accepts."""
    if orjson is None:  # pragma: no cover
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
