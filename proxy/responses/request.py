"""A Responses request (`CreateResponse`) checked, then rewritten as a Chat Completions body.

`validate_request` rejects what memproxy cannot do with a 400 naming the field, before
anything is stored or sent: hosted tools (web search, file search, MCP, ...), item references,
prompt templates, both `previous_response_id` and `conversation`. `chat_body` builds the body
the upstream (or a stateful turn) gets: `instructions` first as a system message for this request
only, then the history's and the input's items as messages, and the settings under their chat
names (docs/responses.md "How requests translate").
"""

from __future__ import annotations

from typing import Any

from ..errors import bad_request
from .items import check_call_ids, drop_orphan_outputs, items_to_messages, normalize_input

_TOOL_CHOICES = ("auto", "none", "required")  # a tuple: `in` must not hash a client's dict
_PASSED = ("temperature", "top_p", "user", "parallel_tool_calls", "safety_identifier",
           "prompt_cache_key", "service_tier")


def validate_request(body: Any) -> list[dict]:
    """Check a `POST /v1/responses` body; return its input as normalized items."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required (a non-empty string)", param="model")
    if body.get("previous_response_id") is not None and body.get("conversation") is not None:
        raise bad_request("previous_response_id and conversation cannot be used together",
                          param="conversation")
    conversation_id(body)
    if body.get("prompt") is not None:
        raise bad_request("prompt templates are not supported: send instructions and input",
                          param="prompt")
    for key in ("instructions", "previous_response_id", "user"):
        _optional(body, key, str, "a string")
    for key in ("stream", "store", "background", "parallel_tool_calls"):
        _optional(body, key, bool, "a boolean")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    tokens = body.get("max_output_tokens")
    if tokens is not None and (not _is_int(tokens) or tokens < 16):
        raise bad_request("max_output_tokens must be an integer of at least 16",
                          param="max_output_tokens")
    logprobs = body.get("top_logprobs")
    if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= 20):
        raise bad_request("top_logprobs must be an integer from 0 to 20", param="top_logprobs")
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise bad_request("truncation must be 'auto' or 'disabled'", param="truncation")
    _metadata(body.get("metadata"))
    chat_tools(body.get("tools"))
    chat_tool_choice(body.get("tool_choice"))
    response_format(body.get("text"))
    _reasoning(body.get("reasoning"))
    if "input" not in body or body["input"] is None:
        if body.get("previous_response_id") is None and body.get("conversation") is None:
            raise bad_request("input is required", param="input")
        return []
    items = normalize_input(body["input"])
    return items


def chat_body(body: dict, history_items: list[dict],
              input_items: list[dict] | None = None) -> dict[str, Any]:
    """The Chat Completions body for a Responses request.

    `history_items`: the stored chain's or the conversation's items, oldest first;
    `input_items`: this request's normalized input (validated from `body` when omitted). The
    request must have passed `validate_request`. Outputs in the history whose call is gone
    (the chain stopped at a deleted response) are left out; a call without its output, or an
    input output without its call, is a 400."""
    if input_items is None:
        input_items = validate_request(body)
    history_items = drop_orphan_outputs(history_items)
    check_call_ids(history_items, input_items)
    messages: list[dict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages += items_to_messages([*history_items, *input_items])
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    tools = chat_tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    choice = chat_tool_choice(body.get("tool_choice"))
    if choice is not None:
        out["tool_choice"] = choice
    for key in _PASSED:
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    if body.get("top_logprobs"):
        out["logprobs"] = True
        out["top_logprobs"] = body["top_logprobs"]
    fmt = response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    text = body.get("text")
    if isinstance(text, dict) and text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def conversation_id(body: dict) -> str | None:
    """The Conversations-API id a request names (`conversation`: an id or `{id}`), if any."""
    value = body.get("conversation")
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise bad_request("conversation must be a conversation id or {id}", param="conversation")
    return value


def chat_tools(tools: Any) -> list[dict]:
    """Flat Responses function tools as nested chat tools; any other tool type is a 400."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("tools must be a list", param="tools")
    out = []
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise bad_request(f"{param} must be an object", param=param)
        kind = tool.get("type")
        if kind != "function":
            raise bad_request(f"unsupported tool type {kind!r}: memproxy supports function tools",
                              param=param)
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"{param}.name must be a non-empty string", param=f"{param}.name")
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise bad_request(f"{param}.parameters must be an object (a JSON schema)",
                              param=f"{param}.parameters")
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> str | dict | None:
    """`auto`/`none`/`required` as they are; `{type: function, name}` nested; the rest 400."""
    if choice is None or choice in _TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("tool_choice.name must be a non-empty string",
                              param="tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise bad_request(
        f"unsupported tool_choice {kind!r}: memproxy supports 'auto', 'none', 'required' and "
        "{type: 'function', name}",
        param="tool_choice",
    )


def response_format(text: Any) -> dict | None:
    """`text.format` as the chat `response_format` (None for plain text)."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise bad_request("text must be an object", param="text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name = fmt.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request("text.format.name must be a non-empty string",
                              param="text.format.name")
        if not isinstance(fmt.get("schema"), dict):
            raise bad_request("text.format.schema must be an object (a JSON schema)",
                              param="text.format.schema")
        schema = {"name": name, "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise bad_request("text.format.type must be 'text', 'json_object' or 'json_schema'",
                      param="text.format.type")


def _reasoning(reasoning: Any) -> None:
    if reasoning is not None and not isinstance(reasoning, dict):
        raise bad_request("reasoning must be an object", param="reasoning")
    effort = (reasoning or {}).get("effort")
    if effort is not None and not isinstance(effort, str):
        raise bad_request("reasoning.effort must be a string", param="reasoning.effort")


def _metadata(metadata: Any) -> None:
    """OpenAI's limits: at most 16 pairs, keys up to 64 characters, string values up to 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise bad_request("metadata must be an object of at most 16 string pairs",
                          param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise bad_request(
                f"metadata.{key}: keys are at most 64 characters, values strings of at most 512",
                param=f"metadata.{key}",
            )


def _optional(body: dict, key: str, kind: type, name: str) -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise bad_request(f"{key} must be {name}", param=key)


def _number(body: dict, key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"{key} must be a number from {low} to {high}", param=key)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
