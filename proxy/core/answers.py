"""One upstream answer in one shape, whether it came as a completion or as a stream of chunks.

Models and servers misbehave in small ways: `choices: []`, a null message, content that is not
a string, tool calls without ids or with object arguments, chunks whose choices are not
objects. Reading them defensively here means the agent loop sees an `Answer` (possibly empty,
which it knows how to handle) instead of failing with a 500 on an unexpected shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "AnswerBuilder", "CallPiece", "FieldsPiece", "TextPiece", "answer_of", "merge_usage"]

_FINAL_WHEN_EMPTY = frozenset({"length", "content_filter"})  # an empty answer that is an answer
# Message (or delta) keys the loop reads itself; every other key is the upstream's, passed on.
_KNOWN_MESSAGE_KEYS = frozenset({"role", "content", "refusal", "tool_calls"})
# Top-level keys memproxy sets itself; other keys (`service_tier`, a gateway's `provider`...)
# of the final step are passed on. `obfuscation` pads each streamed chunk: not a field.
_KNOWN_ENVELOPE_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage",
                                  "system_fingerprint", "obfuscation"})


@dataclass
class Answer:
    content: str = ""
    refusal: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    fingerprint: str | None = None
    usage: dict[str, Any] | None = None
    # What memproxy does not interpret but the client must get (issue #17): the message's
    # other fields (`annotations`, `audio`, `reasoning_content`, ...), the choice's
    # `logprobs`, and the completion's other top-level fields (`service_tier`, ...).
    fields: dict[str, Any] = field(default_factory=dict)
    logprobs: dict[str, Any] | None = None
    envelope: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """No answer at all, and not because the model was cut off or filtered."""
        return not (self.content or self.calls or self.refusal) and (
            self.finish_reason not in _FINAL_WHEN_EMPTY
        )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _call(raw: Any) -> dict[str, Any] | None:
    """A tool call in the standard shape (arguments as a string), or None if it is not one."""
    if not isinstance(raw, dict):
        return None
    fn = _dict(raw.get("function"))
    arguments = fn.get("arguments")
    if arguments is None:
        arguments = ""
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    call = dict(raw)
    call["id"] = _str(raw.get("id")) or ""
    call["type"] = raw.get("type") or "function"
    call["function"] = {**fn, "name": _str(fn.get("name")) or "", "arguments": arguments}
    return call


def answer_of(completion: dict[str, Any]) -> Answer:
    """The first choice of a `chat.completion`, read defensively."""
    choices = completion.get("choices")
    choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    message = _dict(choice.get("message"))
    raw_calls = message.get("tool_calls")
    calls = [c for c in map(_call, raw_calls) if c] if isinstance(raw_calls, list) else []
    usage = completion.get("usage")
    logprobs = choice.get("logprobs")
    return Answer(
        content=_str(message.get("content")) or "",
        refusal=_str(message.get("refusal")),
        calls=calls,
        finish_reason=_str(choice.get("finish_reason")),
        response_id=_str(completion.get("id")),
        model=_str(completion.get("model")),
        created=completion.get("created") if isinstance(completion.get("created"), int) else None,
        fingerprint=_str(completion.get("system_fingerprint")),
        usage=usage if isinstance(usage, dict) else None,
        fields={k: v for k, v in message.items() if k not in _KNOWN_MESSAGE_KEYS},
        logprobs=logprobs if isinstance(logprobs, dict) else None,
        envelope={k: v for k, v in completion.items() if k not in _KNOWN_ENVELOPE_KEYS},
    )


def merge_usage(total: dict[str, Any], usage: dict[str, Any] | None) -> None:
    """Add `usage` into `total`: every integer count, nested detail objects included
    (`prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`...),
    so that a turn of several steps reports what all of them cost."""
    if not isinstance(usage, dict):
        return
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, float):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict):
            inner = total.get(key)
            if not isinstance(inner, dict):
                inner = total[key] = {}
            merge_usage(inner, value)


def _fold_field(fields: dict[str, Any], key: str, value: Any) -> None:
    """A streamed delta field into the whole message's: text is concatenated (reasoning
    deltas), lists extended (annotations), anything else the latest value."""
    old = fields.get(key)
    if isinstance(value, str) and isinstance(old, str):
        fields[key] = old + value
    elif isinstance(value, list) and isinstance(old, list):
        fields[key] = old + value
    elif isinstance(value, dict) and isinstance(old, dict):
        merged = dict(old)
        for inner_key, inner in value.items():
            _fold_field(merged, inner_key, inner)
        fields[key] = merged
    elif value is not None or key not in fields:
        fields[key] = value


@dataclass
class TextPiece:
    text: str


@dataclass
class FieldsPiece:
    """A chunk's delta fields memproxy does not interpret (e.g. `reasoning_content`) and its
    choice's `logprobs`: forwarded as they came when the step's text is."""

    fields: dict[str, Any]
    logprobs: dict[str, Any] | None


@dataclass
class CallPiece:
    """A chunk added to tool call `index`; `arguments` is the fragment it added."""

    index: int
    arguments: str


class AnswerBuilder:
    """Folds `chat.completion.chunk`s into an `Answer`, reporting what each chunk added."""

    def __init__(self) -> None:
        self.answer = Answer()
        self._calls: dict[int, dict[str, Any]] = {}

    def call(self, index: int) -> dict[str, Any]:
        return self._calls[index]

    def feed(self, chunk: dict[str, Any]) -> list[TextPiece | CallPiece | FieldsPiece]:
        answer = self.answer
        answer.response_id = answer.response_id or _str(chunk.get("id"))
        answer.model = answer.model or _str(chunk.get("model"))
        if answer.created is None and isinstance(chunk.get("created"), int):
            answer.created = chunk["created"]
        answer.fingerprint = _str(chunk.get("system_fingerprint")) or answer.fingerprint
        if isinstance(chunk.get("usage"), dict):
            answer.usage = chunk["usage"]
        for key, value in chunk.items():
            if key not in _KNOWN_ENVELOPE_KEYS and value is not None:
                answer.envelope[key] = value
        pieces: list[TextPiece | CallPiece | FieldsPiece] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            choice = _dict(choice)
            delta = _dict(choice.get("delta"))
            text = _str(delta.get("content"))
            if text:
                answer.content += text
                pieces.append(TextPiece(text))
            refusal = _str(delta.get("refusal"))
            if refusal:
                answer.refusal = (answer.refusal or "") + refusal
            parts = delta.get("tool_calls")
            for part in parts if isinstance(parts, list) else ():
                piece = self._fold_call(_dict(part))
                if piece is not None:
                    pieces.append(piece)
            extra = {k: v for k, v in delta.items()
                     if k not in _KNOWN_MESSAGE_KEYS and v is not None}
            for key, value in extra.items():
                _fold_field(answer.fields, key, value)
            logprobs = choice.get("logprobs")
            logprobs = logprobs if isinstance(logprobs, dict) else None
            if logprobs is not None:
                answer.logprobs = answer.logprobs or {}
                for key, value in logprobs.items():
                    _fold_field(answer.logprobs, key, value)
            if extra or logprobs is not None:
                pieces.append(FieldsPiece(extra, logprobs))
            finish = _str(choice.get("finish_reason"))
            if finish:
                answer.finish_reason = finish
        return pieces

    def _fold_call(self, part: dict[str, Any]) -> CallPiece | None:
        index = part.get("index", 0)
        if not isinstance(index, int):
            return None
        call = self._calls.get(index)
        if call is None:
            call = {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            self._calls[index] = call
        if _str(part.get("id")):
            call["id"] = part["id"]
        fn = _dict(part.get("function"))
        if _str(fn.get("name")):
            call["function"]["name"] += fn["name"]
        args = _str(fn.get("arguments")) or ""
        call["function"]["arguments"] += args
        return CallPiece(index, args)

    def finish(self) -> Answer:
        self.answer.calls = [self._calls[i] for i in sorted(self._calls)]
        return self.answer
