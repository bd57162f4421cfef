"""A chat completion's answer as a Responses `Response` object.

`output_items` turns the assistant's chat message into output items (one `message` item for
its text and refusal, one `function_call` item per tool call); `response_object` wraps them with
the request's settings echoed back the way OpenAI does, so an SDK reading `response.tools` or
`response.text` sees what it sent; `usage_from_chat` renames the token counts;
`finish_status` maps a chat `finish_reason` to the response's status.
`output_text` is left out: the SDKs compute it from `output`.
"""

from __future__ import annotations

from typing import Any

from .ids import new_id
from .items import IdMaker

_ECHOED_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "reasoning": None,
    "store": True,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_logprobs": 0,
    "truncation": "disabled",
    "tool_choice": "auto",
    "background": False,
}
_ECHOED_IF_SET = ("user", "safety_identifier", "prompt_cache_key", "service_tier")


def output_text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_items(reply: dict, ids: IdMaker = new_id, *, status: str = "completed") -> list[dict]:
    """The chat assistant message `reply` as output items: its text (and refusal) as one
    `message` item, then each tool call as a `function_call` item (`call_id` = the chat id)."""
    items: list[dict] = []
    parts: list[dict] = []
    text = _text(reply.get("content"))
    if text:
        parts.append(output_text_part(text))
    if reply.get("refusal"):
        parts.append({"type": "refusal", "refusal": reply["refusal"]})
    if parts:
        items.append({"id": ids("msg"), "type": "message", "status": status,
                      "role": "assistant", "content": parts})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append({
            "id": ids("fc"),
            "type": "function_call",
            "status": "completed",
            "call_id": call.get("id") or ids("call"),
            "name": function.get("name") or "",
            "arguments": function.get("arguments") or "",
        })
    return items


def _text(content: Any) -> str:
    """Chat content as text: a string, or the text of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") in ("text", "output_text"))
    return ""


def usage_from_chat(usage: dict | None) -> dict | None:
    """Chat `usage` in the Responses shape (`ResponseUsage`); None stays None."""
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
            "cache_write_tokens": int(prompt_details.get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0),
        },
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def finish_status(finish_reason: str | None) -> tuple[str, dict | None]:
    """(status, incomplete_details) for a chat `finish_reason`."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def echoed_tools(tools: Any) -> list[dict]:
    """The request's function tools as a Response lists them (every field present)."""
    return [
        {"type": "function", "name": t.get("name"), "description": t.get("description"),
         "parameters": t.get("parameters"), "strict": t.get("strict")}
        for t in tools or [] if isinstance(t, dict)
    ]


def response_object(
    request: dict,
    *,
    response_id: str,
    created_at: float,
    status: str,
    output: list[dict],
    usage: dict | None = None,
    error: dict | None = None,
    incomplete_details: dict | None = None,
    previous_response_id: str | None = None,
    conversation_id: str | None = None,
    model: str | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The `Response` object for `request` (a validated CreateResponse body)."""
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": status,
        "completed_at": (int(completed_at) if completed_at is not None
                         else int(created_at) if status == "completed" else None),
        "error": error,
        "incomplete_details": incomplete_details,
        "model": model or request.get("model", ""),
        "output": output,
        "previous_response_id": previous_response_id,
        "conversation": {"id": conversation_id} if conversation_id else None,
    }
    for key, default in _ECHOED_DEFAULTS.items():
        value = request.get(key)
        response[key] = default if value is None else value
    response["tools"] = echoed_tools(request.get("tools"))
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    response["text"] = {**text, "format": text.get("format") or {"type": "text"}}
    response["metadata"] = request.get("metadata") or {}
    for key in _ECHOED_IF_SET:
        if request.get(key) is not None:
            response[key] = request[key]
    if usage is not None:
        response["usage"] = usage
    return response
