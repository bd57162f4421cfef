"""Encoding chat completions and chunks the way OpenAI does, for both response modes."""

from __future__ import annotations

from typing import Any

from ..core.completions import full_usage
from ..fastjson import dumps

DONE = b"data: [DONE]\n\n"


def event(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


class ChunkWriter:
    """Builds `chat.completion.chunk` objects that share one id, created and model."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self.id = completion_id
        self.created = created
        self.model = model
        self.fingerprint: str | None = None
        self.envelope: dict[str, Any] = {}  # the upstream's other top-level fields, once known

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None,
              logprobs: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": logprobs,
                 "finish_reason": finish_reason}
            ],
        }
        if self.fingerprint:
            body["system_fingerprint"] = self.fingerprint
        for key, value in self.envelope.items():
            body.setdefault(key, value)
        return event(body)

    def usage(self, usage: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }
        for key, value in self.envelope.items():
            body.setdefault(key, value)
        return event(body)


_OWN_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage",
                       "system_fingerprint"})


def replay_chunks(response: dict[str, Any], include_usage: bool) -> list[bytes]:
    """A stored non-stream response as the stream a streaming client expects."""
    choice = response["choices"][0]
    message = choice["message"]
    writer = ChunkWriter(response["id"], response["created"], response["model"])
    writer.fingerprint = response.get("system_fingerprint")
    writer.envelope = {k: v for k, v in response.items() if k not in _OWN_KEYS}
    out = [writer.chunk({"role": "assistant", "content": ""})]
    fields = {k: v for k, v in message.items()
              if k not in ("role", "content", "tool_calls", "function_call") and v is not None}
    if fields:  # annotations, reasoning_content, refusal...
        out.append(writer.chunk(fields))
    if message.get("content"):
        out.append(writer.chunk({"content": message["content"]}, logprobs=choice.get("logprobs")))
    if message.get("function_call"):
        out.append(writer.chunk({"function_call": message["function_call"]}))
    for index, call in enumerate(message.get("tool_calls") or []):
        out.append(
            writer.chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.get("id"),
                            "type": "function",
                            "function": call.get("function"),
                        }
                    ]
                }
            )
        )
    out.append(writer.chunk({}, choice["finish_reason"]))
    if include_usage:
        out.append(writer.usage(response.get("usage") or full_usage({})))
    out.append(DONE)
    return out
