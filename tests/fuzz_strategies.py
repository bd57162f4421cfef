"""Hypothesis strategies for fuzzing `POST /v1/chat/completions` (issue #8.3).

Three families, each producing a `FuzzCase` (path, headers, raw body bytes, and the parsed body
when there is one):

- `valid_case()`: bodies the OpenAI API accepts — every message role, multimodal content parts,
  tool definitions and tool calls (whose arguments text may hold escaped lone surrogates, deep
  nesting or no JSON at all), sampling and streaming options, odd but legal unicode, and
  unknown top-level fields (`x_fuzz_*`) that must reach the upstream untouched;
- `near_valid_case()`: a valid body with one to three mutations — a field dropped, nulled,
  emptied or given the wrong type, unknown fields in messages, deep nesting, huge strings,
  `n > 1`, unknown roles, a lone surrogate in any string — and sometimes encoded badly (lone surrogates, invalid UTF-8, a BOM,
  truncation, trailing bytes);
- `garbage_case()`: bytes that are not a chat body at all (random bytes, JSON that is not an
  object, truncated or nested-to-death JSON).

Headers cover pass-through (no agent, `X-Memory: off`), an agent by header or by path, valid
and hostile agent/conversation ids, retry markers and idempotency keys, odd content types, and
raw header bytes no text can hold (UTF-8-encoded surrogates, invalid UTF-8, latin-1).
The agents and conversations come from small pools so that stateful cases build up history.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

MODEL = "gpt-4o-mini"
AGENTS = ("fz-a", "fz-b", "fz.c@x", "fz-ü")
CONVERSATIONS = tuple(f"fc{i}" for i in range(40))
HOSTILE_IDS = ("", "..", ".", "a/b", "a b", "x" * 201, "'; DROP TABLE agents;--", "%2e%2e",
               "a\tb", "<script>")
UNKNOWN_PREFIX = "x_fuzz_"
"""Top-level fields with this prefix are unknown to OpenAI and memproxy alike."""

JsonValue = Any


@dataclass
class FuzzCase:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any = None  # the JSON value encoded in `raw`, when it is one

    @property
    def stateful_headers(self) -> bool:
        """Whether the path or headers name an agent (memory is not switched off)."""
        lower = {k.lower(): v for k, v in self.headers.items()}
        if lower.get("x-memory", "").strip().lower() in ("off", "false", "0", "no"):
            return False
        return self.path.startswith("/agents/") or bool(lower.get("x-agent-id", "").strip())


# --- text -------------------------------------------------------------------------------------

ODD_TEXT = ("", " ", "\u0000", "\u202eevil", "\ufeffbom", "e\u0301\u0301\u0301", "🧠💾🔥" * 3,
            "\U0010ffff", "\\u0000", "line\r\nbreak", "# Task:", "### Task:\nGenerate a title",
            "My name is Fuzz", "What is my name?", "Remember in archive: fuzz fact",
            "Search archive: fuzz \" OR * NEAR(", "Search history: \"unbalanced AND (",
            "Search history: *", "Replace memory: Fuzz => Zuff",
            "Use tool core_memory_append with {\"label\": \"nope\", \"content\": 1}",
            "Use tool archival_memory_search with {\"query\": \"x\", \"top_k\": -5}",
            "Use tool conversation_search with {\"query\": \"\", \"start_date\": \"yesterday\"}",
            "Use tool core_memory_replace with not json", "<memory_blocks>", "null")

text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ODD_TEXT),
    st.text(st.characters(codec="utf-8"), max_size=20),
)
short_id = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                        st.floats(allow_nan=False, allow_infinity=False), text)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


# --- valid bodies -----------------------------------------------------------------------------

def _part(kind: str, value: str) -> dict[str, Any]:
    if kind == "text":
        return {"type": "text", "text": value}
    if kind == "image_url":
        return {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                    "detail": "low"}}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    if kind == "file":
        return {"type": "file", "file": {"file_id": "file-abc", "filename": value or "f.txt"}}
    return {"type": "refusal", "refusal": value}


user_parts = st.lists(st.builds(_part, st.sampled_from(["text", "text", "image_url",
                                                        "input_audio", "file"]), text),
                      min_size=1, max_size=3)
text_parts = st.lists(st.builds(_part, st.just("text"), text), min_size=1, max_size=3)
LONE_SURROGATES = ("\ud800", "\udfff", "a\udc80b", "\ud83d", "x\udbff\udbffy")
"""Not Unicode text: valid in a JSON escape (`"\\ud800"`), invalid in UTF-8."""

# Tool-call arguments are JSON text inside the JSON body: the outer body stays valid whatever
# they hold, so these reach the stateful path (hashing, storage) as OpenAI would accept them.
odd_arguments = st.sampled_from([
    '{"q": "\\ud800"}', '{"q": "a\\udfffb", "n": 1}', '["\\udc80"]', "\\ud800",
    "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, "not json {", "",
    '{"q": "\\u0000"}',
])
tool_arguments = st.one_of(
    st.dictionaries(st.text(max_size=6), json_scalar, max_size=3).map(json.dumps),
    st.dictionaries(st.text(max_size=6), json_scalar, max_size=3).map(json.dumps),
    odd_arguments,
)
tool_call = st.builds(
    lambda i, name, args: {"id": f"call_{i}", "type": "function",
                           "function": {"name": name, "arguments": args}},
    short_id, st.sampled_from(["get_weather", "lookup", "core_memory_append"]), tool_arguments,
)


@st.composite
def message(draw: st.DrawFn, role: str | None = None) -> dict[str, Any]:
    role = role or draw(st.sampled_from(["system", "developer", "user", "user", "assistant",
                                         "tool"]))
    out: dict[str, Any] = {"role": role}
    if role in ("system", "developer"):
        out["content"] = draw(st.one_of(text, text_parts))
    elif role == "user":
        out["content"] = draw(st.one_of(text, text, user_parts))
    elif role == "assistant":
        calls = draw(st.lists(tool_call, max_size=2))
        out["content"] = draw(st.one_of(text, st.none(), text_parts) if calls
                              else st.one_of(text, text_parts))
        if calls:
            out["tool_calls"] = calls
        if draw(st.booleans()):
            out["refusal"] = None
    else:
        out["tool_call_id"] = f"call_{draw(short_id)}"
        out["content"] = draw(st.one_of(text, text_parts))
    if role in ("system", "developer", "user", "assistant") and draw(st.integers(0, 5)) == 0:
        out["name"] = draw(short_id)
    return out


@st.composite
def messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A plausible list: optional system, then turns, ending (mostly) with a user message."""
    out: list[dict[str, Any]] = []
    if draw(st.booleans()):
        out.append(draw(message("system")))
    for _ in range(draw(st.integers(0, 3))):
        out += [draw(message("user")), draw(message("assistant"))]
    out.append(draw(message("user")) if draw(st.integers(0, 6)) else draw(message()))
    return out


tool_definition = st.builds(
    lambda name, desc, props, strict: {"type": "function", "function": {
        "name": name, "description": desc, "strict": strict,
        "parameters": {"type": "object", "properties": {
            p: {"type": "string"} for p in props}, "required": sorted(props)[:1]}}},
    short_id, text, st.sets(short_id, max_size=3), st.booleans(),
)
tool_choice = st.one_of(st.sampled_from(["auto", "none", "required"]), st.builds(
    lambda name: {"type": "function", "function": {"name": name}}, short_id))

OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 4096),
    "max_completion_tokens": st.integers(1, 4096),
    "n": st.just(1),
    "stop": st.one_of(text, st.lists(text, max_size=4)),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "seed": st.integers(-(2**31), 2**31),
    "user": short_id,
    "metadata": st.dictionaries(short_id, st.text(max_size=20), max_size=3),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "tools": st.lists(tool_definition, max_size=3),
    "tool_choice": tool_choice,
    "parallel_tool_calls": st.booleans(),
    "stream": st.booleans(),
    "stream_options": st.builds(lambda b: {"include_usage": b}, st.booleans()),
    "logprobs": st.booleans(),
    "store": st.booleans(),
    "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
    "modalities": st.just(["text"]),
    "service_tier": st.sampled_from(["auto", "default"]),
    "logit_bias": st.dictionaries(st.integers(0, 100000).map(str), st.integers(-100, 100),
                                  max_size=3),
}


@st.composite
def valid_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(st.sampled_from([MODEL, "gpt-4o"])),
                            "messages": draw(messages())}
    for key in draw(st.sets(st.sampled_from(sorted(OPTIONAL_FIELDS)), max_size=6)):
        body[key] = draw(OPTIONAL_FIELDS[key])
    if "tool_choice" in body and not body.get("tools"):
        del body["tool_choice"]  # OpenAI refuses a tool_choice without tools
    for key in draw(st.sets(short_id, max_size=2)):
        body[UNKNOWN_PREFIX + key] = draw(json_value)
    return body


# --- near-valid bodies ------------------------------------------------------------------------

wrong_type = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                       st.text(max_size=5), st.just([]), st.just({}), st.lists(json_scalar,
                                                                                max_size=3))


DEEP_MARK = "__fuzz_deep__"


def _nested(depth: int, kind: str) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@st.composite
def _mutate(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))  # a private deep copy
    msgs = body.get("messages")
    target = draw(st.integers(0, 99))
    kind = draw(st.sampled_from([
        "drop_top", "wrong_top", "null_top", "empty_messages", "wrong_message",
        "drop_role", "bad_role", "wrong_content", "message_extra", "drop_tool_call_id",
        "wrong_tool_calls", "wrong_tools", "n", "deep", "huge", "unknown_top", "empty_parts",
        "stream_type", "surrogate", "surrogate",
    ]))
    keys = sorted(body) or ["model"]
    if kind == "drop_top":
        body.pop(keys[target % len(keys)], None)
    elif kind == "wrong_top":
        body[draw(st.sampled_from([*keys, "temperature", "max_tokens", "stream_options",
                                   "tool_choice", "user"]))] = draw(wrong_type)
    elif kind == "null_top":
        body[keys[target % len(keys)]] = None
    elif kind == "empty_messages":
        body["messages"] = []
    elif kind == "unknown_top":
        body[draw(st.sampled_from(["", "choices", "__proto__", "messages ", UNKNOWN_PREFIX]))] = \
            draw(json_value)
    elif kind == "n":
        body["n"] = draw(st.integers(2, 5))
    elif kind == "surrogate":
        _put_surrogate(draw, body)
    elif kind == "stream_type":
        body["stream"] = draw(st.sampled_from(["true", 1, 0, None, [], {"on": True}]))
    elif kind == "wrong_tools":
        body["tools"] = draw(st.one_of(wrong_type, st.lists(wrong_type, min_size=1, max_size=3),
                                       st.just([{"type": "function"}]),
                                       st.just([{"type": "function", "function": {"name": 5}}])))
    elif kind == "deep":
        depth = draw(st.sampled_from([30, 200, 600, 1100, 3000]))
        spot = draw(st.sampled_from(["top", "content", "tool_args"]))
        shape = draw(st.sampled_from(["list", "dict"]))
        # Deeper than Python's json module goes: a placeholder that `encode` writes out raw.
        value = _nested(depth, shape) if depth < 1000 else f"{DEEP_MARK}{depth}:{shape}"
        if spot == "top" or not isinstance(msgs, list) or not msgs \
                or not isinstance(msgs[-1], dict):  # an earlier draw may have made it a non-dict
            body[UNKNOWN_PREFIX + "deep"] = value
        else:
            msgs[-1]["content" if spot == "content" else "x_deep"] = value
    elif kind == "huge":
        size = draw(st.sampled_from([5_000, 30_000, 300_000]))
        char = draw(st.sampled_from(["x", "é", "🧠", "\u0000", " "]))
        if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict):
            msgs[-1]["content"] = char * size
        else:
            body["model"] = char * size
    elif isinstance(msgs, list) and msgs:
        i = target % len(msgs)
        if kind == "wrong_message":
            msgs[i] = draw(wrong_type)
        elif isinstance(msgs[i], dict):
            m = msgs[i]
            if kind == "drop_role":
                m.pop("role", None)
            elif kind == "bad_role":
                m["role"] = draw(st.sampled_from(["", "USER", "bot", "function", None, 3,
                                                  "system ", "tool"]))
            elif kind == "wrong_content":
                m["content"] = draw(st.one_of(wrong_type, st.lists(wrong_type, max_size=3),
                                              st.just([{"type": "text"}]),
                                              st.just([{"type": "text", "text": 5}]),
                                              st.just([{"type": "mystery", "data": "x"}])))
            elif kind == "message_extra":
                m[draw(st.sampled_from(["x_extra", "cache_control", "tool_calls", "name"]))] = \
                    draw(json_value)
            elif kind == "drop_tool_call_id":
                m["role"] = "tool"
                m.pop("tool_call_id", None)
            elif kind == "wrong_tool_calls":
                m["role"] = "assistant"
                m["tool_calls"] = draw(st.one_of(
                    wrong_type, st.lists(wrong_type, min_size=1, max_size=2),
                    st.just([{"id": "c1", "type": "function", "function": {"name": "f"}}]),
                    st.just([{"id": 7, "function": {"name": None, "arguments": {"a": 1}}}])))
            elif kind == "empty_parts":
                m["content"] = []
    return body


def _put_surrogate(draw: st.DrawFn, body: dict[str, Any]) -> None:
    """A lone surrogate somewhere a string goes: message content, a content part, a name,
    tool-call arguments, the model, an unknown field or metadata (`encode` writes it as a
    `\\udXXX` escape or as raw CESU-8 bytes: never valid)."""
    lone = draw(st.sampled_from(LONE_SURROGATES))
    msgs = body.get("messages")
    last = msgs[-1] if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) else None
    spot = draw(st.sampled_from(["content", "part", "name", "tool_args", "model", "unknown",
                                 "metadata"]))
    if last is not None and spot == "content":
        last["content"] = f"hi {lone} there"
    elif last is not None and spot == "part":
        last["content"] = [{"type": "text", "text": lone}]
    elif last is not None and spot == "name":
        last["name"] = lone
    elif last is not None and spot == "tool_args":
        last.update(role="assistant", content=None, tool_calls=[{
            "id": "call_s", "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"q": lone},
                                                                   ensure_ascii=False)}}])
    elif spot == "model":
        body["model"] = lone
    elif spot == "metadata":
        body["metadata"] = {"k": lone}
    else:
        body[UNKNOWN_PREFIX + "s"] = lone


@st.composite
def near_valid_body(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(valid_body())
    for _ in range(draw(st.integers(1, 3))):
        body = draw(_mutate(body))
    return body


# --- encodings --------------------------------------------------------------------------------

@st.composite
def encode(draw: st.DrawFn, body: Any, *, corrupt: bool) -> bytes:
    """JSON text for `body`, in one of several legal spellings; with `corrupt`, sometimes made
    invalid (lone surrogates as raw bytes, invalid UTF-8, a BOM, truncation, trailing bytes)."""
    raw = json.dumps(body, ensure_ascii=draw(st.booleans()),
                     indent=draw(st.sampled_from([None, None, 1])),
                     separators=draw(st.sampled_from([None, (",", ":")]))
                     ).encode("utf-8", "surrogatepass")
    raw = re.sub(rb'"' + DEEP_MARK.encode() + rb'(\d+):(list|dict)"', _write_deep, raw)
    if not corrupt or draw(st.integers(0, 3)):
        return raw
    how = draw(st.sampled_from(["utf8", "bom", "truncate", "trailing", "nan", "dup"]))
    if how == "utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])) + \
            raw[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if how == "trailing":
        return raw + draw(st.sampled_from([b"}", b" garbage", b"\x00", b"\n{}"]))
    if how == "nan":
        return raw[:-1] + b', "temperature": NaN}' if raw.endswith(b"}") else raw
    return raw[:-1] + b', "model": 12}' if raw.endswith(b"}") else raw


def _write_deep(match: re.Match[bytes]) -> bytes:
    depth = int(match.group(1))
    if match.group(2) == b"list":
        return b"[" * depth + b'"bottom"' + b"]" * depth
    return b'{"k":' * depth + b'"bottom"' + b"}" * depth


# --- requests ---------------------------------------------------------------------------------

@st.composite
def request_target(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    """A path and headers: pass-through, agent by header, by path, or memory switched off."""
    headers: dict[str, str] = {}
    agent = draw(st.one_of(st.sampled_from(AGENTS), st.sampled_from(HOSTILE_IDS)) if
                 draw(st.integers(0, 9)) == 0 else st.sampled_from(AGENTS))
    conversation = draw(st.one_of(st.sampled_from(CONVERSATIONS), st.sampled_from(HOSTILE_IDS))
                        if draw(st.integers(0, 9)) == 0 else st.sampled_from(CONVERSATIONS))
    how = draw(st.sampled_from(["none", "header", "header", "header", "path", "path_conv",
                                "memory_off", "bare"]))
    path = "/v1/chat/completions"
    if how == "bare":
        path = "/chat/completions"
    elif how == "header":
        headers["X-Agent-Id"] = agent
        if draw(st.booleans()):
            headers["X-Conversation-Id"] = conversation
    elif how == "path":
        path = f"/agents/{_path_segment(agent)}/v1/chat/completions"
    elif how == "path_conv":
        path = (f"/agents/{_path_segment(agent)}/conversations/"
                f"{_path_segment(conversation)}/v1/chat/completions")
    elif how == "memory_off":
        headers.update({"X-Agent-Id": agent, "X-Memory": "off"})
    if draw(st.integers(0, 4)) == 0:
        headers["Idempotency-Key"] = draw(short_id)
    if draw(st.integers(0, 4)) == 0:
        headers["x-stainless-retry-count"] = draw(st.sampled_from(["0", "1", "2", "-1", "x", ""]))
    if draw(st.integers(0, 5)) == 0:
        headers["X-OpenWebUI-Chat-Id"] = conversation
    headers["Content-Type"] = draw(st.sampled_from(
        ["application/json"] * 6 + ["text/plain", "application/x-www-form-urlencoded", ""]))
    if draw(st.integers(0, 4)) == 0:
        headers["Authorization"] = draw(st.sampled_from(["Bearer sk-fuzz", "Bearer", "Basic x", "sk-bare"]))
    safe: dict[str, str | bytes] = {k: _header_safe(v) for k, v in headers.items()}
    if draw(st.integers(0, 9)) == 0:  # bytes no header may carry as text
        name = draw(st.sampled_from(["X-Agent-Id", "X-Conversation-Id", "X-Request-Id",
                                     "Idempotency-Key", "X-OpenWebUI-Chat-Id", "X-Memory",
                                     "Authorization", "x-stainless-retry-count"]))
        safe[name] = draw(BAD_HEADER_BYTES)
    return path, safe  # type: ignore[return-value]


BAD_HEADER_BYTES = st.sampled_from([
    b"a\xed\xa0\x80b", b"\xed\xb0\x80", b"\xff\xfe", b"\xc0\x80", b"%ED%A0%80", b"\\ud800",
    b"Bearer \xed\xa0\x80", b"\x80" * 50, "fz-\u00fc".encode("latin-1"),
])
"""Header values as raw bytes: UTF-8-encoded surrogates, invalid and overlong UTF-8, latin-1."""


def _path_segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="") or "%20"


def _header_safe(value: str) -> str:
    """httpx sends header values as ASCII: percent-encode anything else."""
    return "".join(c if 32 <= ord(c) < 127 else f"%{ord(c):02x}" for c in value[:300])


def valid_case() -> st.SearchStrategy[FuzzCase]:
    return st.builds(lambda target, body_raw: FuzzCase(target[0], target[1], body_raw[1],
                                                       body_raw[0]),
                     request_target(), valid_body().flatmap(
                         lambda b: encode(b, corrupt=False).map(lambda raw: (b, raw))))


def near_valid_case() -> st.SearchStrategy[FuzzCase]:
    return st.builds(lambda target, body_raw: FuzzCase(target[0], target[1], body_raw[1],
                                                       body_raw[0]),
                     request_target(), near_valid_body().flatmap(
                         lambda b: encode(b, corrupt=True).map(lambda raw: (b, raw))))


garbage_bytes = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: json.dumps(v).encode(), json_value.filter(lambda v: not isinstance(v,
                                                                                         dict))),
    st.sampled_from([b"", b"{", b"}", b"null", b"[]", b"{}", b'{"model": }', b"\x00" * 10,
                     b"[" * 100_000, b'{"a":' * 50_000, b'{"messages": "' + b"\\" * 1000 + b'"',
                     b"\xef\xbb\xbf{}", b'{"model": "m", "messages": [] ', b"{'a': 1}"]),
    st.text(max_size=100).map(lambda t: t.encode("utf-16")),
)


def garbage_case() -> st.SearchStrategy[FuzzCase]:
    return st.builds(lambda target, raw: FuzzCase(target[0], target[1], raw),
                     request_target(), garbage_bytes)
