"""The fields a rich upstream adds to an answer, when a `Reply` scripts them (issue #17):
extra message fields (`reasoning_content`, `annotations`, `audio`...) and choice `logprobs`.

Non-stream, the fields go on the message and the logprobs on the choice; streamed, each text
field is sent in small deltas before the content (as reasoning models do), other fields in one
delta, and each content chunk carries the logprobs of its own text.
"""

from __future__ import annotations

from typing import Any

from .scripted_model import Reply


def token_logprobs(text: str) -> dict[str, Any]:
    """A choice's `logprobs` for `text`, one entry per word-ish piece."""
    return {"content": [{"token": t, "logprob": -0.25, "bytes": list(t.encode()),
                         "top_logprobs": []} for t in text.split(" ") if t],
            "refusal": None}


def enrich_completion(completion: dict[str, Any], reply: Reply) -> dict[str, Any]:
    choice = completion["choices"][0]
    choice["message"].update(reply.fields)
    if reply.logprobs:
        choice["logprobs"] = token_logprobs(reply.content or "")
    return completion


def enrich_chunks(chunks: list[dict[str, Any]], reply: Reply) -> list[dict[str, Any]]:
    if not reply.fields and not reply.logprobs:
        return chunks
    out: list[dict[str, Any]] = []
    template = chunks[0]
    for chunk in chunks:
        choices = chunk.get("choices") or []
        delta = choices[0]["delta"] if choices else {}
        if reply.logprobs and isinstance(delta.get("content"), str) and delta["content"]:
            choices[0]["logprobs"] = token_logprobs(delta["content"])
        out.append(chunk)
        if chunk is template:  # after the role chunk: the extra fields
            for key, value in reply.fields.items():
                pieces = ([value[i:i + 5] for i in range(0, len(value), 5)]
                          if isinstance(value, str) else [value])
                for piece in pieces:
                    out.append({**template, "choices": [
                        {"index": 0, "delta": {key: piece}, "logprobs": None,
                         "finish_reason": None}]})
    return out
