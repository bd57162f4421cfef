"""A chat answer as a Responses `Response` (pure), validated against OpenAI's description."""

from __future__ import annotations

import pytest

from proxy.responses import (
    finish_status,
    new_id,
    output_items,
    response_object,
    usage_from_chat,
)
from tests.openapi_check import validate_response

CHAT_USAGE = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
              "prompt_tokens_details": {"cached_tokens": 6},
              "completion_tokens_details": {"reasoning_tokens": 2}}


def test_ids_have_their_prefix_and_are_unique():
    ids = {new_id("resp") for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("resp_") and len(i) == 53 for i in ids)


def test_text_and_tool_calls_become_a_message_then_function_calls():
    items = output_items({"role": "assistant", "content": "Hi", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    message, call = items
    assert message["id"].startswith("msg_") and call["id"].startswith("fc_")
    assert message == {"id": message["id"], "type": "message", "status": "completed",
                       "role": "assistant", "content": [
                           {"type": "output_text", "text": "Hi", "annotations": [],
                            "logprobs": []}]}
    assert call == {"id": call["id"], "type": "function_call", "status": "completed",
                    "call_id": "call_1", "name": "f", "arguments": "{}"}


def test_a_refusal_is_a_refusal_part_and_parts_content_is_read():
    [message] = output_items({"content": [{"type": "text", "text": "a"},
                                          {"type": "text", "text": "b"}], "refusal": "no"},
                             status="incomplete")
    assert message["status"] == "incomplete"
    assert [p["type"] for p in message["content"]] == ["output_text", "refusal"]
    assert message["content"][0]["text"] == "ab"


def test_an_empty_answer_has_no_items():
    assert output_items({"role": "assistant", "content": None}) == []
    assert output_items({"role": "assistant", "content": ""}) == []


def test_usage_is_renamed_with_details_defaulting_to_zero():
    assert usage_from_chat(CHAT_USAGE) == {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 14}
    bare = usage_from_chat({"prompt_tokens": 1, "completion_tokens": 2})
    assert bare["input_tokens_details"]["cached_tokens"] == 0
    assert bare["output_tokens_details"]["reasoning_tokens"] == 0
    assert bare["total_tokens"] == 3
    assert usage_from_chat(None) is None


@pytest.mark.parametrize(("reason", "status", "details"), [
    ("stop", "completed", None), ("tool_calls", "completed", None), (None, "completed", None),
    ("length", "incomplete", {"reason": "max_output_tokens"}),
    ("content_filter", "incomplete", {"reason": "content_filter"}),
])
def test_finish_reasons(reason, status, details):
    assert finish_status(reason) == (status, details)


def build(request: dict, **overrides) -> dict:
    fields = {"response_id": new_id("resp"), "created_at": 1_700_000_000.5,
              "status": "completed", "output": output_items({"content": "ok"}),
              "usage": usage_from_chat(CHAT_USAGE)}
    return response_object(request, **{**fields, **overrides})


def test_a_minimal_response_echoes_openai_defaults_and_validates():
    response = build({"model": "m", "input": "x"})
    validate_response(response)
    assert response["object"] == "response" and response["created_at"] == 1_700_000_000
    assert response["completed_at"] == 1_700_000_000
    assert {k: response[k] for k in ("instructions", "tools", "tool_choice", "parallel_tool_calls",
                                     "temperature", "top_p", "text", "truncation", "metadata",
                                     "store", "background", "previous_response_id",
                                     "conversation", "error", "incomplete_details")} == {
        "instructions": None, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True,
        "temperature": 1.0, "top_p": 1.0, "text": {"format": {"type": "text"}},
        "truncation": "disabled", "metadata": {}, "store": True, "background": False,
        "previous_response_id": None, "conversation": None, "error": None,
        "incomplete_details": None}
    assert "output_text" not in response


def test_a_full_request_is_echoed_and_validates():
    request = {
        "model": "m", "input": "x", "instructions": "be kind", "temperature": 0.2, "top_p": 0.5,
        "max_output_tokens": 64, "parallel_tool_calls": False, "store": False,
        "metadata": {"k": "v"}, "user": "u", "truncation": "auto",
        "reasoning": {"effort": "low", "summary": None},
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"},
                            "strict": True}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"},
    }
    response = build(request, previous_response_id="resp_prev", conversation_id="conv_1",
                     model="m-2025")
    validate_response(response)
    assert response["tools"] == [{"type": "function", "name": "f", "description": None,
                                  "parameters": {"type": "object"}, "strict": None}]
    assert response["conversation"] == {"id": "conv_1"}
    assert response["model"] == "m-2025" and response["user"] == "u"
    for key in ("instructions", "temperature", "top_p", "max_output_tokens", "text",
                "tool_choice", "metadata", "store", "truncation", "reasoning"):
        assert response[key] == request[key]


def test_incomplete_failed_and_in_progress_responses_validate():
    validate_response(build({"model": "m"}, status="incomplete",
                            incomplete_details={"reason": "max_output_tokens"}))
    failed = build({"model": "m"}, status="failed", output=[], usage=None,
                   error={"code": "server_error", "message": "upstream failed"})
    validate_response(failed)
    assert "usage" not in failed and failed["completed_at"] is None
    validate_response(build({"model": "m"}, status="in_progress", output=[], usage=None))


def test_the_validator_rejects_a_broken_response():
    response = build({"model": "m"})
    del response["output"][0]["content"][0]["logprobs"]
    with pytest.raises(AssertionError):
        validate_response(response)


def test_text_settings_without_a_format_echo_the_text_format():
    response = build({"model": "m", "text": {"verbosity": "low"}})
    validate_response(response)
    assert response["text"] == {"verbosity": "low", "format": {"type": "text"}}


def test_the_openai_sdk_parses_the_response():
    from openai.types.responses import Response

    response = build({"model": "m", "tools": [{"type": "function", "name": "f"}],
                      "text": {"format": {"type": "json_object"}}},
                     output=output_items({"content": "Hi", "tool_calls": [
                         {"id": "c1", "type": "function",
                          "function": {"name": "f", "arguments": "{}"}}]}))
    parsed = Response.model_validate(response)
    assert parsed.output_text == "Hi"
    assert parsed.output[1].call_id == "c1"
    assert parsed.usage.input_tokens_details.cached_tokens == 6
