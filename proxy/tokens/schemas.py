"""Token counts of a request's tool schemas, and of a whole prompt with tools (docs/design.md §4.1).

Tool schemas
    OpenAI renders `tools` into the system prompt as a TypeScript-like `namespace functions`.
    `count_tools` renders the same text (`render_tools`) and adds `TOOLS_OVERHEAD`. When the
    request also has a system message OpenAI merges the two and the total is 4 tokens lower
    (`TOOLS_SYSTEM_DISCOUNT`); `count_prompt(messages, tools)` applies that, while
    `count_messages(...) + count_tools(...)` is a slight over-estimate, the safe side for a
    budget. On the 24 requests whose prompt_tokens the API reported that tests/unit/
    test_tokens.py holds as reference data (gpt-3.5-turbo/gpt-4, cl100k: plain messages,
    names, legacy functions, tool calls, nested/enum/array schemas), `count_prompt` is exact and
    `count_messages + count_tools` is never below the real count and at most
    `TOOL_SCHEMA_MARGIN` (4) above it. The constants were fitted on much of that same data, so
    for other schema shapes (defaults, anyOf, deep nesting) and for o200k models the error is
    not measured; the calibration factor absorbs what remains.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .counting import _as_text, _count, count_messages, count_text
from .encodings import encoding_for

try:
    import orjson

    def _json_key(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    _json_loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is an optional speed-up

    def _json_key(value: Any) -> bytes:
        return json.dumps(value, sort_keys=True).encode()

    _json_loads = json.loads

TOOLS_OVERHEAD = 9
TOOLS_SYSTEM_DISCOUNT = 4
TOOL_SCHEMA_MARGIN = 4
"""Measured: on the reference data `count_messages + count_tools` is between 0 and 4 tokens
above the real prompt_tokens of a request with tools (the system-message discount, less the
newline OpenAI sometimes adds to the first system message); `count_prompt` is exact there."""


# --------------------------------------------------------------------------- tool schemas


def _comment_lines(text: Any, indent: str) -> list[str]:
    text = _as_text(text).strip()
    if not text:
        return []
    return [f"{indent}// {line}".rstrip() for line in text.splitlines()]


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _ts_type(schema: Any, indent: str) -> str:
    """A JSON schema as the TypeScript-like type OpenAI shows the model."""
    if not isinstance(schema, Mapping):
        return "any"
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return " | ".join(_literal(v) for v in schema["enum"])
    if "const" in schema:
        return _literal(schema["const"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return " | ".join(_ts_type(s, indent) for s in schema[key])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_type({**schema, "type": k}, indent) for k in kind) or "any"
    if kind in ("string", "boolean", "null"):
        return kind
    if kind in ("number", "integer"):
        return "number"
    if kind == "array":
        items = schema.get("items")
        inner = _ts_type(items, indent) if items else "any"
        return f"({inner})[]" if " | " in inner else f"{inner}[]"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, Mapping) or not props:
            return "object"
        body = _ts_properties(schema, indent + "  ")
        return "{\n" + body + "\n" + indent + "}"
    return "any"


def _ts_properties(schema: Mapping[str, Any], indent: str) -> str:
    required = schema.get("required") or []
    lines: list[str] = []
    props = schema.get("properties") or {}
    for name, prop in props.items():
        if isinstance(prop, Mapping):
            lines.extend(_comment_lines(prop.get("description"), indent))
        optional = "" if name in required else "?"
        line = f"{indent}{name}{optional}: {_ts_type(prop, indent)},"
        if isinstance(prop, Mapping) and "default" in prop:
            line += f" // default: {_literal(prop['default'])}"
        lines.append(line)
    return "\n".join(lines)


def render_tools(tools: Iterable[Mapping[str, Any]]) -> str:
    """The `namespace functions {...}` text OpenAI puts in the system prompt for `tools`."""
    lines = ["namespace functions {", ""]
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not fn.get("name"):
            continue
        lines.extend(_comment_lines(fn.get("description"), ""))
        params = fn.get("parameters")
        if isinstance(params, Mapping) and params.get("properties"):
            lines.append(f"type {fn['name']} = (_: {{")
            lines.append(_ts_properties(params, ""))
            lines.append("}) => any;")
        else:
            lines.append(f"type {fn['name']} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def count_tools(tools: Iterable[Mapping[str, Any]] | None, model: str | None = None) -> int:
    """Prompt tokens the `tools` of a request cost (0 for none); see TOOL_SCHEMA_MARGIN.

    Memoized on the schemas' JSON: the same tools (memproxy's own, a client's fixed set) are
    counted on every turn, and rendering them is the expensive part."""
    tools = list(tools or [])
    if not tools:
        return 0
    try:
        key = _json_key(tools)
    except (TypeError, ValueError):
        return count_text(render_tools(tools), model) + TOOLS_OVERHEAD
    return _count_tools_cached(key, model or "")


@functools.lru_cache(maxsize=256)
def _count_tools_cached(key: bytes, model: str) -> int:
    return count_text(render_tools(_json_loads(key)), model or None) + TOOLS_OVERHEAD


def count_prompt(
    messages: Iterable[Mapping[str, Any]],
    tools: Iterable[Mapping[str, Any]] | None = None,
    model: str | None = None,
) -> int:
    """Prompt tokens of a whole request: messages, tool schemas and their interaction.

    With tools, OpenAI appends a newline to the first system message and merges the tool
    namespace into it, which saves `TOOLS_SYSTEM_DISCOUNT` tokens.
    """
    messages = list(messages)
    total = count_messages(messages, model)
    tools = list(tools or [])
    if not tools:
        return total
    total += count_tools(tools, model)
    for message in messages:
        if message.get("role") == "system":
            content = message.get("content")
            if isinstance(content, str):
                enc = encoding_for(model)
                total += _count(enc, content + "\n") - _count(enc, content)
            total -= TOOLS_SYSTEM_DISCOUNT
            break
    return total
