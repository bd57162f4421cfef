"""The chat completion object a stateful turn answers with, built in one place (pure).

The same object is returned to a non-streaming client, stored with the turn (a retried request
is answered from it, as JSON or replayed as a stream) and exported with the agent, so its shape
is OpenAI's `CreateChatCompletionResponse` whatever path produced it.
"""

from __future__ import annotations

from typing import Any


def full_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """`usage` with all three counts (the total derived when the upstream gave none) and
    whatever else the upstream reported (`prompt_tokens_details`...), summed over the steps."""
    prompt = usage.get("prompt_tokens", 0)
    completion_tokens = usage.get("completion_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": usage.get("total_tokens", prompt + completion_tokens),
        **{k: v for k, v in usage.items()
           if k not in ("prompt_tokens", "completion_tokens", "total_tokens")},
    }


def chat_completion(
    *,
    completion_id: str,
    created: int,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, Any],
    system_fingerprint: str | None = None,
    logprobs: dict[str, Any] | None = None,
    envelope: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`envelope`: the upstream's other top-level fields (`service_tier`...), passed on."""
    reply = {"role": "assistant", "content": message.get("content"), "refusal": None}
    reply.update({k: v for k, v in message.items() if k not in ("role",)})
    reply.setdefault("refusal", None)
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": reply, "logprobs": logprobs, "finish_reason": finish_reason}
        ],
        "usage": full_usage(usage),
    }
    for key, value in (envelope or {}).items():
        body.setdefault(key, value)
    if system_fingerprint:
        body["system_fingerprint"] = system_fingerprint
    return body
