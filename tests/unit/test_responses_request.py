"""A Responses request as a Chat Completions body (pure): every setting under its chat name,
instructions first for this request only, and a 400 naming the field for what memproxy cannot
do."""

from __future__ import annotations

import pytest

from proxy.errors import ProxyError
from proxy.responses import chat_body, conversation_id, normalize_input, validate_request
from tests.openapi_check import validate


def error_of(body: dict) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        validate_request(body)
    assert caught.value.status == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    return caught.value


def test_a_minimal_request():
    assert chat_body({"model": "m", "input": "hi"}, []) == {
        "model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_instructions_come_first_then_history_then_input():
    history = normalize_input([{"role": "user", "content": "earlier"},
                               {"role": "assistant", "content": "answer"}])
    body = chat_body({"model": "m", "input": "now", "instructions": "be kind"}, history)
    assert body["messages"] == [
        {"role": "system", "content": "be kind"}, {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "answer"}, {"role": "user", "content": "now"}]


def test_the_input_items_given_are_used_as_they_are():
    items = normalize_input("mine")
    body = chat_body({"model": "m", "input": "ignored"}, [], items)
    assert body["messages"] == [{"role": "user", "content": "mine"}]


def test_settings_under_their_chat_names():
    body = chat_body({
        "model": "m", "input": "x", "max_output_tokens": 100, "temperature": 0.5, "top_p": 0.9,
        "user": "u", "parallel_tool_calls": False, "top_logprobs": 3, "stream": True,
        "reasoning": {"effort": "low", "summary": "auto"}, "text": {"verbosity": "low"},
        "store": True, "metadata": {"k": "v"}, "truncation": "auto", "include": [],
        "safety_identifier": "s", "prompt_cache_key": "p", "service_tier": "auto",
    }, [])
    assert body == {
        "model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100,
        "temperature": 0.5, "top_p": 0.9, "user": "u", "parallel_tool_calls": False,
        "logprobs": True, "top_logprobs": 3, "stream": True,
        "stream_options": {"include_usage": True}, "reasoning_effort": "low",
        "verbosity": "low", "safety_identifier": "s", "prompt_cache_key": "p",
        "service_tier": "auto"}


def test_function_tools_are_nested_and_tool_choice_mapped():
    body = chat_body({"model": "m", "input": "x", "tool_choice": {"type": "function",
                                                                  "name": "get"},
                      "tools": [{"type": "function", "name": "get", "description": "d",
                                 "parameters": {"type": "object"}, "strict": True},
                                {"type": "function", "name": "bare", "parameters": None,
                                 "strict": None}]}, [])
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get", "description": "d",
                                          "parameters": {"type": "object"}, "strict": True}},
        {"type": "function", "function": {"name": "bare"}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get"}}
    for choice in ("auto", "none", "required"):
        assert chat_body({"model": "m", "input": "x", "tool_choice": choice}, [])[
            "tool_choice"] == choice


@pytest.mark.parametrize(("fmt", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": True,
      "description": "d"},
     {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"},
                                             "strict": True, "description": "d"}}),
    ({"type": "json_schema", "name": "n", "schema": {}},
     {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}),
])
def test_text_format_becomes_response_format(fmt, expected):
    body = chat_body({"model": "m", "input": "x", "text": {"format": fmt}}, [])
    assert body.get("response_format") == expected


def test_a_tool_output_needs_its_call_in_history_or_input():
    history = normalize_input([{"type": "function_call", "call_id": "c1", "name": "f",
                                "arguments": "{}"}])
    body = {"model": "m", "input": [{"type": "function_call_output", "call_id": "c1",
                                     "output": "ok"}]}
    assert chat_body(body, history)["messages"][-1] == {"role": "tool", "tool_call_id": "c1",
                                                        "content": "ok"}
    with pytest.raises(ProxyError) as caught:
        chat_body(body, [])
    assert caught.value.param == "input[0].call_id"


def test_input_may_be_left_out_when_continuing():
    assert validate_request({"model": "m", "previous_response_id": "resp_1"}) == []
    assert validate_request({"model": "m", "conversation": "conv_1"}) == []


def test_conversation_is_an_id_or_an_object():
    assert conversation_id({"conversation": "conv_1"}) == "conv_1"
    assert conversation_id({"conversation": {"id": "conv_2"}}) == "conv_2"
    assert conversation_id({}) is None


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"input": "x"}, "model", "model"),
    ({"model": "", "input": "x"}, "model", "model"),
    ({"model": "m"}, "input", "required"),
    ({"model": "m", "input": 3}, "input", "string or a list"),
    ({"model": "m", "input": "x", "previous_response_id": "r", "conversation": "c"},
     "conversation", "together"),
    ({"model": "m", "input": "x", "conversation": {"name": "c"}}, "conversation", "id"),
    ({"model": "m", "input": "x", "prompt": {"id": "p"}}, "prompt", "not supported"),
    ({"model": "m", "input": "x", "instructions": 3}, "instructions", "string"),
    ({"model": "m", "input": "x", "stream": "yes"}, "stream", "boolean"),
    ({"model": "m", "input": "x", "temperature": 3}, "temperature", "0 to 2"),
    ({"model": "m", "input": "x", "top_p": True}, "top_p", "0 to 1"),
    ({"model": "m", "input": "x", "max_output_tokens": 8}, "max_output_tokens", "16"),
    ({"model": "m", "input": "x", "top_logprobs": 21}, "top_logprobs", "0 to 20"),
    ({"model": "m", "input": "x", "truncation": "some"}, "truncation", "auto"),
    ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k", "strings"),
    ({"model": "m", "input": "x", "metadata": {str(i): "v" for i in range(17)}},
     "metadata", "16"),
    ({"model": "m", "input": "x", "tools": {}}, "tools", "list"),
    ({"model": "m", "input": "x", "tools": ["f"]}, "tools[0]", "object"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"},
                                            {"type": "web_search"}]},
     "tools[1]", "unsupported tool type 'web_search': memproxy supports function tools"),
    ({"model": "m", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": []}]},
     "tools[0]", "'file_search'"),
    ({"model": "m", "input": "x", "tools": [{"type": "mcp", "server_label": "s"}]},
     "tools[0]", "'mcp'"),
    ({"model": "m", "input": "x", "tools": [{"type": "computer_use_preview"}]},
     "tools[0]", "'computer_use_preview'"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "name"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f",
                                             "parameters": "{}"}]},
     "tools[0].parameters", "object"),
    ({"model": "m", "input": "x", "tool_choice": "any"}, "tool_choice", "'any'"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "allowed_tools", "mode": "auto",
                                                  "tools": []}},
     "tool_choice", "'allowed_tools'"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}},
     "tool_choice", "'web_search_preview'"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "function"}},
     "tool_choice.name", "name"),
    ({"model": "m", "input": "x", "text": "json"}, "text", "object"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}},
     "text.format.type", "json_schema"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name", "name"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
     "text.format.schema", "schema"),
    ({"model": "m", "input": "x", "reasoning": "high"}, "reasoning", "object"),
    ({"model": "m", "input": "x", "reasoning": {"effort": 1}}, "reasoning.effort", "string"),
])
def test_bad_requests_are_400s_naming_the_field(body, param, words):
    error = error_of(body)
    assert error.param == param
    assert words in error.message


def test_a_body_that_is_not_an_object():
    assert error_of([]).param is None


@pytest.mark.parametrize("body", [
    {"model": "m", "input": [{"role": ["user"], "content": "x"}]},
    {"model": "m", "input": [{"role": {"a": 1}, "content": "x"}]},
    {"model": "m", "input": [{"type": {"t": 1}, "role": "user", "content": "x"}]},
    {"model": "m", "input": [{"role": "user", "content": [{"type": ["input_text"]}]}]},
    {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image",
                                                           "image_url": "u", "detail": {}}]}]},
    {"model": "m", "input": "x", "tool_choice": ["auto"]},
    {"model": "m", "input": "x", "truncation": {}},
    {"model": "m", "input": "x", "tools": [{"type": {"x": 1}}]},
    {"model": "m", "input": "x", "text": {"format": {"type": []}}},
])
def test_json_of_any_shape_where_a_name_belongs_is_never_a_crash(body):
    try:
        chat_body(body, [])
    except ProxyError as error:
        assert error.status == 400 and error.param


def test_history_outputs_whose_call_is_gone_are_left_out_and_calls_need_outputs():
    history = normalize_input([{"type": "function_call_output", "call_id": "gone", "output": "x"},
                               {"role": "assistant", "content": "a"},
                               {"type": "function_call", "call_id": "c2", "name": "f",
                                "arguments": "{}"}])
    with pytest.raises(ProxyError) as caught:
        chat_body({"model": "m", "input": "go on"}, history)
    assert caught.value.param == "input" and "'c2'" in caught.value.message
    body = chat_body({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "c2", "output": "done"}]}, history)
    assert [m["role"] for m in body["messages"]] == ["assistant", "tool"]


def test_a_body_using_every_translation_is_a_valid_chat_request():
    history = normalize_input([
        {"role": "developer", "content": "d"},
        {"role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
            {"type": "input_file", "filename": "a.pdf",
             "file_data": "data:application/pdf;base64,AA"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "a"},
                                          {"type": "refusal", "refusal": "r"}]},
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1",
         "output": [{"type": "input_text", "text": "x"}, {"type": "input_text", "text": "y"}]},
    ])
    body = chat_body({
        "model": "m", "input": "x", "instructions": "i", "max_output_tokens": 100,
        "temperature": 0.5, "top_p": 0.9, "user": "u", "parallel_tool_calls": False,
        "top_logprobs": 3, "stream": True, "reasoning": {"effort": "low"},
        "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "n",
                                                "schema": {"type": "object"}, "strict": True,
                                                "description": "d"}},
        "safety_identifier": "s", "prompt_cache_key": "p", "service_tier": "auto",
        "tools": [{"type": "function", "name": "f", "description": "d",
                   "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
    }, history)
    validate("CreateChatCompletionRequest", body)
    assert [m["role"] for m in body["messages"]] == [
        "system", "developer", "user", "assistant", "tool", "user"]
