"""What is left of a forgotten message, and when a retention window ends (docs/forgetting.md).

A forgotten message keeps its row (the conversation tree, its seqs and parents, stays whole:
docs/conversation-tree.md) but nothing of what was said: its content becomes a placeholder,
the arguments of its tool calls `{}`, and every other field (reasoning, audio, refusals, names
of people...) is dropped. The model sees the placeholder where the message was, so a later
prompt never carries the forgotten text, and tool-call pairs still match by id.
"""

from __future__ import annotations

import re
from typing import Any

FORGOTTEN = "[forgotten]"
DAY_S = 86_400.0
_KEPT = ("role", "tool_call_id")


def redact(data: dict[str, Any]) -> dict[str, Any]:
    """The placeholder of a stored message (`data` is its OpenAI message object)."""
    out: dict[str, Any] = {k: data[k] for k in _KEPT if k in data}
    out["content"] = FORGOTTEN
    calls = data.get("tool_calls")
    if isinstance(calls, list):
        out["tool_calls"] = [_redact_call(c) for c in calls if isinstance(c, dict)]
    return out


def _redact_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    return {"id": call.get("id", ""), "type": call.get("type", "function"),
            "function": {"name": function.get("name", ""), "arguments": "{}"}}


def retention_days(global_days: float, settings: dict[str, Any], key: str) -> float:
    """The days an agent keeps `key` ("messages" / "responses"): its setting
    `retention_<key>_days` when it is a number >= 0, else the configured default; 0 = forever."""
    value = settings.get(f"retention_{key}_days")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return float(global_days)


def cutoff(now: float, days: float) -> float | None:
    """Rows created before this are past retention; None when kept forever."""
    return None if days <= 0 else now - days * DAY_S


_WORD = re.compile(r"[^\W_]+")


def query_words(query: str) -> list[str]:
    """The distinct lower-cased words of a forget query (every one must match)."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query or "")))


def matches_all(words: list[str], text: str) -> bool:
    """Whether `text` holds every word of a forget query, as a word or a word's inflection.

    The full-text search that finds candidates is an OR of stemmed terms, made to rank, not to
    decide: forgetting "my dog Rex" must not empty every message that says "my". So a candidate
    is forgotten only when each query word is among its words: the same word, or one with an
    ending of up to three letters more ("dog" finds "dogs", "walk" finds "walking") or two
    fewer ("dogs" finds "dog")."""
    if not words:
        return False
    tokens = {t.lower() for t in _WORD.findall(text)}
    return all(any(_same_word(w, t) for t in tokens) for w in words)


def _same_word(word: str, token: str) -> bool:
    if word == token:
        return True
    if len(word) >= 3 and token.startswith(word) and len(token) - len(word) <= 3:
        return True  # dog → dogs, walk → walking
    return len(token) >= 3 and word.startswith(token) and len(word) - len(token) <= 2


def scrub_lines(words: list[str], text: str) -> str:
    """`text` (a memory block, a block revision) without its lines that hold every word of a
    forget query: what the model wrote down from a forgotten message is a line of a block."""
    if not words or not text:
        return text
    return "\n".join(line for line in text.split("\n") if not matches_all(words, line))
