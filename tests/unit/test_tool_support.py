"""Recognising an upstream's refusal of tools (models/tool_support.py), `[models."x"] tools`,
and the pure parts of fact extraction (core/facts.py)."""

from __future__ import annotations

import pytest

from proxy.config import load_settings
from proxy.core.facts import NONE, appended, extraction_request, parse_facts
from proxy.errors import ProxyError, UpstreamError
from proxy.models.tool_support import (
    configured_tools,
    rejects_tools,
    says_no_tools,
    without_tools,
)

REFUSALS = [
    "registry.ollama.ai/library/gemma3:4b does not support tools",  # Ollama /v1
    "stablelm2:latest does not support tools",  # older Ollama
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
    "tools param requires --jinja flag",  # llama.cpp without --jinja
    "Model phi-2 does not support tool calling",
    "Tool calling is not supported for this model",
    "Function calling is not supported by this model.",
]

NOT_REFUSALS = [
    "This model's maximum context length is 8192 tokens.",
    "The model `gpt-5` does not exist or you do not have access to it.",
    "Invalid schema for function 'get_weather': 'additionalProperties' is required",
    "tool_choice must be one of none, auto, required",
    "",
]


@pytest.mark.parametrize("message", REFUSALS)
def test_refusals_are_recognised(message):
    assert says_no_tools(message)
    assert rejects_tools(UpstreamError(400, message))
    assert rejects_tools(UpstreamError(500, message, type="server_error"))  # llama.cpp


@pytest.mark.parametrize("message", NOT_REFUSALS)
def test_other_errors_are_not(message):
    assert not says_no_tools(message)
    assert not rejects_tools(UpstreamError(400, message))


def test_only_upstream_answers_with_a_fitting_status_count():
    message = REFUSALS[0]
    assert not rejects_tools(UpstreamError(429, message))
    assert not rejects_tools(UpstreamError(503, message))
    assert not rejects_tools(ValueError(message))
    assert rejects_tools(ProxyError(400, message))


def test_without_tools_drops_every_tool_field_or_keeps_the_clients():
    body = {"model": "m", "messages": [], "tools": [{"a": 1}, {"b": 2}],
            "tool_choice": "none", "parallel_tool_calls": False}
    assert without_tools(body) == {"model": "m", "messages": []}
    kept = without_tools(body, [{"b": 2}])
    assert kept["tools"] == [{"b": 2}] and kept["tool_choice"] == "none"
    assert kept["parallel_tool_calls"] is False
    assert body["tools"] == [{"a": 1}, {"b": 2}]  # not changed in place


def test_configured_tools_exact_then_globs():
    settings = load_settings(environ={}, overrides={"models": {
        "llama3*": {"tools": False}, "llama3.1:8b": {"tools": True},
        "gpt-4o": {"context_window": 1000}}})
    assert configured_tools("llama3.1:8b", settings) is True
    assert configured_tools("llama3:latest", settings) is False
    assert configured_tools("LLAMA3-chat", settings) is False
    assert configured_tools("gpt-4o", settings) is None
    assert configured_tools("other", settings) is None


def test_config_rejects_an_unknown_auto_recall_mode():
    from proxy.config import ConfigError

    with pytest.raises((ConfigError, ValueError)):
        load_settings(environ={}, overrides={"memory": {"auto_recall": "sometimes"}})
    settings = load_settings(environ={}, overrides={})
    assert settings.memory.auto_recall == "no-tools"
    assert settings.memory.auto_recall_tokens == 600
    assert settings.memory.extract_facts is False


def test_parse_facts_reads_lines_and_skips_known_ones():
    profile = "Name: Ada\nLikes tea"
    answer = "- Name: Ada\n* Lives in Paris\n\n• likes tea.\nWorks as an engineer\n" + "x" * 300
    assert parse_facts(answer, profile) == ["Lives in Paris", "Works as an engineer"]
    assert parse_facts(NONE, profile) == []
    assert parse_facts("none.", "") == []
    assert parse_facts("\n".join(f"fact {n}" for n in range(9)), "") == [
        f"fact {n}" for n in range(5)]
    assert parse_facts("Lives in Paris\nlives in  paris", "") == ["Lives in Paris"]


def test_appended_keeps_the_block_within_its_limit():
    assert appended("", ["Name: Ada"], 100) == "Name: Ada"
    assert appended("Likes tea", ["Name: Ada", "x" * 200, "Lives in Paris"], 40) == (
        "Likes tea\nName: Ada\nLives in Paris")
    assert appended("full", ["more"], 4) == "full"


def test_the_extraction_request_shows_the_profile_and_the_message():
    system, user = extraction_request("My name is Ada", "")
    assert system["role"] == "system" and NONE in system["content"]
    assert "(empty)" in user["content"] and user["content"].endswith("My name is Ada")


def test_a_refusal_sent_as_a_500_is_not_retried():
    """llama.cpp refuses tools with HTTP 500: retrying it only delays the turn's fallback."""
    import json

    from proxy.upstream.errors import error_from_response

    body = {"error": {"code": 500, "message": "tools param requires --jinja flag",
                      "type": "server_error"}}
    refusal = error_from_response(500, json.dumps(body).encode(), {})
    assert (refusal.status, refusal.retryable, rejects_tools(refusal)) == (500, False, True)
    crash = error_from_response(500, b'{"error": {"message": "CUDA out of memory"}}', {})
    assert crash.retryable
    assert error_from_response(500, b"tools param requires --jinja flag", {}).retryable is False
