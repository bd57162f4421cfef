"""Responses input items: validated and normalized once, then turned into chat messages.

A Responses request's `input` is a string or a list of items (`InputParam` in OpenAI's API
description). `normalize_input` checks every item and gives it the one shape memproxy stores
and lists back (`GET /v1/responses/{id}/input_items`, conversation items): an `id`, a `type`,
message content as a list of parts. A bad item is a 400 naming its exact place
(`input[2].call_id`), before anything is stored or sent upstream.

`items_to_messages` turns normalized items (a stored chain's, a conversation's, this request's)
into Chat Completions messages: `function_call` items become an assistant message's
`tool_calls` (one message per run of calls, joined to the assistant message right before them,
as a chat model produced them), `function_call_output` a `tool` message, `reasoning` items
nothing (a chat upstream has no place for them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ProxyError, bad_request
from .ids import new_id

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
INPUT_PART_TYPES = ("input_text", "input_image", "input_file")
# tuples, not sets: a client may send any JSON value where a name is expected, and a list
# or an object must be a 400, not an unhashable-type 500
_TEXT_PARTS = ("input_text", "output_text")
_DETAILS = ("low", "high", "auto")
_STATUSES = ("in_progress", "completed", "incomplete")

IdMaker = Callable[[str], str]


def normalize_input(value: Any, param: str = "input", *, ids: IdMaker = new_id) -> list[dict]:
    """The request's input as normalized items (a string is one user message)."""
    if isinstance(value, str):
        return [_message({"role": "user", "content": value}, param, ids)]
    if not isinstance(value, list):
        raise bad_request(f"{param} must be a string or a list of items", param=param)
    return [normalize_item(item, f"{param}[{i}]", ids=ids) for i, item in enumerate(value)]


def normalize_item(item: Any, param: str, *, ids: IdMaker = new_id) -> dict:
    """One input item, checked and completed (`id`, `type`, content parts)."""
    if not isinstance(item, dict):
        raise bad_request(f"{param} must be an object", param=param)
    kind = item.get("type")
    if kind is None:
        if "role" in item:
            kind = "message"  # EasyInputMessage: {role, content}
        elif "id" in item:
            kind = "item_reference"
        else:
            raise bad_request(f"{param}.type is required", param=f"{param}.type")
    if kind == "message":
        return _message(item, param, ids)
    if kind == "function_call":
        return _function_call(item, param, ids)
    if kind == "function_call_output":
        return _function_call_output(item, param, ids)
    if kind == "reasoning":
        return _reasoning(item, param, ids)
    if kind == "item_reference":  # resolved against stored items by `resolve_references`
        return {"type": "item_reference", "id": _string(item, "id", param)}
    raise bad_request(
        f"{param}.type: unsupported item type {kind!r}: memproxy supports message, "
        "function_call, function_call_output and reasoning items",
        param=f"{param}.type",
    )


def _string(item: dict, key: str, param: str, *, empty: bool = False) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (not empty and not value):
        need = "a string" if empty else "a non-empty string"
        raise bad_request(f"{param}.{key} must be {need}", param=f"{param}.{key}")
    return value


def _message(item: dict, param: str, ids: IdMaker) -> dict:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise bad_request(
            f"{param}.role must be one of user, assistant, system, developer (got {role!r})",
            param=f"{param}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        parts = [_text_part(role, content)]
    elif isinstance(content, list):
        parts = [_part(role, p, f"{param}.content[{j}]") for j, p in enumerate(content)]
    else:
        raise bad_request(
            f"{param}.content must be a string or a list of content parts",
            param=f"{param}.content",
        )
    return {"id": _id(item, "msg", ids), "type": "message", "role": role,
            "status": _status(item, param),
            "content": parts}


def _text_part(role: str, text: str) -> dict:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def _part(role: str, part: Any, param: str) -> dict:
    if not isinstance(part, dict):
        raise bad_request(f"{param} must be an object", param=param)
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        if kind == "output_text" and role != "assistant":
            raise bad_request(
                f"{param}.type: output_text parts belong to assistant messages; use input_text",
                param=f"{param}.type",
            )
        normal = _text_part(role, _string(part, "text", param, empty=True))
        if role == "assistant" and isinstance(part.get("annotations"), list):
            normal["annotations"] = part["annotations"]
        return normal
    if kind == "refusal":
        if role != "assistant":
            raise bad_request(f"{param}.type: refusal parts belong to assistant messages",
                              param=f"{param}.type")
        return {"type": "refusal", "refusal": _string(part, "refusal", param, empty=True)}
    if kind in ("input_image", "input_file"):
        if role != "user":
            raise bad_request(f"{param}.type: {kind} parts are only allowed in user messages",
                              param=f"{param}.type")
        return _image(part, param) if kind == "input_image" else _file(part, param)
    allowed = "output_text, refusal" if role == "assistant" else ", ".join(INPUT_PART_TYPES)
    raise bad_request(f"{param}.type: unsupported content part type {kind!r} (expected "
                      f"{allowed})", param=f"{param}.type")


def _image(part: dict, param: str) -> dict:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        if part.get("file_id"):
            raise bad_request(
                f"{param}.file_id: images by file id are not supported; send image_url "
                "(an https or data: URL)",
                param=f"{param}.file_id",
            )
        raise bad_request(f"{param}.image_url must be a non-empty string",
                          param=f"{param}.image_url")
    detail = part.get("detail")
    return {"type": "input_image", "image_url": url,
            "detail": detail if detail in _DETAILS else "auto"}


def _file(part: dict, param: str) -> dict:
    if part.get("file_url"):
        raise bad_request(f"{param}.file_url: files by URL are not supported; send file_data "
                          "(a base64 data URL) or file_id", param=f"{param}.file_url")
    normal: dict[str, Any] = {"type": "input_file"}
    for key in ("file_id", "file_data", "filename"):
        value = part.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise bad_request(f"{param}.{key} must be a string", param=f"{param}.{key}")
            normal[key] = value
    if "file_id" not in normal and "file_data" not in normal:
        raise bad_request(f"{param} needs file_data or file_id", param=f"{param}.file_data")
    return normal


def _function_call(item: dict, param: str, ids: IdMaker) -> dict:
    return {
        "id": _id(item, "fc", ids),
        "type": "function_call",
        "call_id": _string(item, "call_id", param),
        "name": _string(item, "name", param),
        "arguments": _string(item, "arguments", param, empty=True),
        "status": _status(item, param),
    }


def _function_call_output(item: dict, param: str, ids: IdMaker) -> dict:
    output = item.get("output")
    if isinstance(output, list):
        parts = []
        for j, part in enumerate(output):
            where = f"{param}.output[{j}]"
            if not isinstance(part, dict) or part.get("type") != "input_text":
                raise bad_request(f"{where}: function call outputs may hold input_text parts "
                                  "only", param=where)
            parts.append({"type": "input_text", "text": _string(part, "text", where, empty=True)})
        output = parts
    elif not isinstance(output, str):
        raise bad_request(f"{param}.output must be a string or a list of input_text parts",
                          param=f"{param}.output")
    return {
        "id": _id(item, "fco", ids),
        "type": "function_call_output",
        "call_id": _string(item, "call_id", param),
        "output": output,
        "status": _status(item, param),
    }


def _reasoning(item: dict, param: str, ids: IdMaker) -> dict:
    summary = item.get("summary", [])
    if not isinstance(summary, list):
        raise bad_request(f"{param}.summary must be a list", param=f"{param}.summary")
    normal = {**item, "id": _id(item, "rs", ids), "type": "reasoning", "summary": summary}
    return normal


def _status(item: dict, param: str) -> str:
    status = item.get("status")
    if status is None:
        return "completed"
    if status not in _STATUSES:
        raise bad_request(f"{param}.status must be in_progress, completed or incomplete",
                          param=f"{param}.status")
    return status


def _id(item: dict, prefix: str, ids: IdMaker) -> str:
    value = item.get("id")
    return value if isinstance(value, str) and value else ids(prefix)


def references(items: list[dict]) -> list[str]:
    """The ids of the `item_reference` items among `items`."""
    return [item["id"] for item in items if item.get("type") == "item_reference"]


def resolve_references(items: list[dict], known: dict[str, dict],
                       param: str = "input") -> list[dict]:
    """`items` with each `item_reference` replaced by the item it names (`known`: by id, from
    the history or the store); one that names no known item is a 404 naming it."""
    resolved: list[dict] = []
    for i, item in enumerate(items):
        if item.get("type") != "item_reference":
            resolved.append(item)
            continue
        found = known.get(item["id"])
        if found is None or found.get("type") == "item_reference":
            raise ProxyError(404, f"Item with id '{item['id']}' not found.",
                             param=f"{param}[{i}]", code="item_not_found")
        resolved.append(found)
    return resolved


def check_call_ids(history: list[dict], items: list[dict], param: str = "input") -> None:
    """Calls and outputs pair up as a chat upstream requires, or a 400 naming the item: every
    `function_call_output` in `items` answers a `function_call` before it (in the history or
    earlier in `items`), and every call (history or input) has its output. OpenAI's Responses
    API refuses both too; the upstream's own error would not say which item is wrong."""
    calls = {i.get("call_id") for i in history if i.get("type") == "function_call"}
    for index, item in enumerate(items):
        kind = item.get("type")
        if kind == "function_call":
            calls.add(item["call_id"])
        elif kind == "function_call_output" and item["call_id"] not in calls:
            raise bad_request(
                f"{param}[{index}].call_id: no function_call with call_id "
                f"{item['call_id']!r} comes before this output",
                param=f"{param}[{index}].call_id",
            )
    everything = [*history, *items]
    answered = {i["call_id"] for i in everything if i.get("type") == "function_call_output"}
    for item in everything:
        if item.get("type") == "function_call" and item["call_id"] not in answered:
            raise bad_request(
                f"{param}: no function_call_output for the function_call with call_id "
                f"{item['call_id']!r}; send its output as an input item",
                param=param,
            )


def drop_orphan_outputs(history: list[dict]) -> list[dict]:
    """The history without the outputs whose call is not in it. A stored chain stops at a
    deleted or expired response; an output answering a call made there has nothing to answer
    any more, and a chat upstream rejects a tool message without its call. The client cannot
    fix a stored chain, so these are dropped rather than refused."""
    calls: set[str] = set()
    kept = []
    for item in history:
        kind = item.get("type")
        if kind == "function_call":
            calls.add(item.get("call_id", ""))
        elif kind == "function_call_output" and item.get("call_id") not in calls:
            continue
        kept.append(item)
    return kept


def items_to_messages(items: Iterable[dict]) -> list[dict]:
    """Normalized items (oldest first) as Chat Completions messages."""
    messages: list[dict] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments", "")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": _tool_content(item.get("output", ""))})
        # reasoning items (and anything else stored) have no chat form: dropped
    return messages


def _chat_message(item: dict) -> dict:
    role = item["role"]
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    parts = content or []
    if role == "assistant":
        texts = [p.get("text", "") for p in parts if p.get("type") in _TEXT_PARTS]
        refusals = [p.get("refusal", "") for p in parts if p.get("type") == "refusal"]
        text = "".join(texts) if texts or not refusals else None  # "" rather than null
        message: dict[str, Any] = {"role": role, "content": text}
        if refusals:
            message["refusal"] = "".join(refusals)
        return message
    return {"role": role, "content": _chat_content([_chat_part(p) for p in parts])}


def _chat_part(part: dict) -> dict:
    kind = part.get("type")
    if kind == "input_image":
        image = {"url": part["image_url"]}
        if part.get("detail") in _DETAILS:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        return {"type": "file", "file": {k: part[k] for k in ("file_id", "file_data", "filename")
                                         if part.get(k) is not None}}
    return {"type": "text", "text": part.get("text", "")}


def _chat_content(parts: list[dict]) -> str | list[dict]:
    """One text part is plain string content (what chat clients send, and what memproxy's
    message hashes see most); anything else stays a list of parts, losslessly."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    if not parts:
        return ""
    return parts


def _tool_content(output: Any) -> str | list[dict]:
    if isinstance(output, str):
        return output
    return _chat_content([{"type": "text", "text": p.get("text", "")} for p in output])


def chain_items(chain: Iterable[Any]) -> list[dict]:
    """The items a stored chain puts before a new request, oldest first: each stored
    response's input items, then its output. `chain` holds StoredResponse-like objects
    (`.input_items`, `.body["output"]`); earlier responses' `instructions` are not carried
    (OpenAI's rule)."""
    items: list[dict] = []
    for stored in chain:
        items.extend(stored.input_items or [])
        items.extend((stored.body or {}).get("output") or [])
    return items
