"""Reading and comparing OpenAI chat messages.

Chat UIs echo back what they were sent with small changes: whitespace trimmed, a string turned
into a list of content parts, a `name` or `cache_control` added, tool-call arguments re-encoded.
`visible_hash` ignores exactly those differences so a resent history matches what was stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from .types import Message

SYSTEM_ROLES = frozenset({"system", "developer"})


def content_text(content: Any) -> str:
    """The plain text of a message's `content`: a string, a list of parts, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part.get("refusal"), str):
                    texts.append(part["refusal"])
        return "\n".join(texts)
    return str(content)


def message_text(message: Message) -> str:
    """Searchable text of a message: its content, plus the tool calls an assistant made."""
    text = content_text(message.get("content"))
    calls = message.get("tool_calls") or []
    if calls:
        rendered = []
        for call in calls:
            fn = call.get("function") or {}
            rendered.append(f"{fn.get('name', '')}({fn.get('arguments', '')})")
        text = (text + "\n" if text else "") + "\n".join(rendered)
    return text


def _normal_text(text: str) -> str:
    # runs of whitespace to one space, none at the ends: what `re.sub(r"\s+", " ", t).strip()`
    # gives (str.split and the regex's \s agree on what whitespace is), three times faster
    return " ".join(text.split())


def _normal_arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            return _normal_text(arguments)
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _non_text_parts(content: Any) -> list[Any]:
    """Images, audio and files in a content list, normalized for hashing."""
    if not isinstance(content, list):
        return []
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") not in (None, "text", "refusal"):
            clean = {k: v for k, v in part.items() if k != "cache_control"}
            parts.append(clean)
    return parts


def normal_form(message: Message) -> list[Any]:
    """What identifies a message for reconciliation, independent of cosmetic changes."""
    role = str(message.get("role", ""))
    form: list[Any] = [role, _normal_text(content_text(message.get("content")))]
    parts = _non_text_parts(message.get("content"))
    if parts:
        form.append(parts)
    if role == "assistant":
        calls = []
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            calls.append([fn.get("name", ""), _normal_arguments(fn.get("arguments", ""))])
        if calls:
            form.append(calls)
    return form


# The encoders the hashes use, made once: `json.dumps` with options builds a new encoder on
# every call. Their output (and so every stored hash) is exactly `json.dumps`'s.
_HASH_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)
_REQUEST_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)


# Chat UIs resend the same messages every turn (a 200-message history hashed anew each time was
# most of a turn's own cost). A message whose content is a string and that carries no tool
# calls hashes by its role and text alone, so those hashes are kept, a bounded number.
_HASHES: dict[tuple[str, str], str] = {}
HASH_CACHE_SIZE = 16_384


def visible_hash(message: Message) -> str:
    content = message.get("content")
    key = None
    if isinstance(content, str) and not message.get("tool_calls"):
        key = (str(message.get("role", "")), content)
        cached = _HASHES.get(key)
        if cached is not None:
            return cached
    raw = _HASH_JSON.encode(normal_form(message))
    # surrogatepass: the same bytes for every valid string; a lone surrogate (reachable only
    # through tool-call arguments, JSON text inside the JSON) still hashes instead of raising
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    if key is not None:
        if len(_HASHES) >= HASH_CACHE_SIZE:
            _HASHES.clear()
        _HASHES[key] = digest
    return digest


def split_system(messages: Iterable[Message]) -> tuple[list[Message], list[Message]]:
    """Separate the client's system/developer messages from the conversation messages."""
    system: list[Message] = []
    rest: list[Message] = []
    for message in messages:
        (system if message.get("role") in SYSTEM_ROLES else rest).append(message)
    return system, rest


def request_hash(body: dict[str, Any]) -> str:
    """A fingerprint of a request for recognising retries of the same request."""
    relevant = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    raw = _REQUEST_JSON.encode(relevant)
    return hashlib.sha256(raw.encode()).hexdigest()


def head_hash(first_user_hash: str, first_reply_hash: str) -> str:
    """Identifies a conversation by its first exchange, for clients that resend whole histories
    without naming the conversation."""
    return hashlib.sha256(f"{first_user_hash}:{first_reply_hash}".encode()).hexdigest()[:32]
