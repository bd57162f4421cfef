"""Context windows (proxy.models.windows): settings, then the upstream's /v1/models, then the built-in
table, then the default."""

from __future__ import annotations

import pytest

from proxy.config import Settings, load_settings
from proxy.models.windows import (
    KNOWN_WINDOWS,
    configured_window,
    context_window,
    known_window,
    parse_upstream_windows,
)


def make_settings(models: dict[str, int | None] | None = None, default: int = 4096) -> Settings:
    return Settings.model_validate(
        {
            "models": {k: {"context_window": v} for k, v in (models or {}).items()},
            "memory": {"default_context_window": default},
        }
    )


VLLM = {
    "object": "list",
    "data": [
        {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model", "max_model_len": 32768},
        {"id": "gpt-4o", "object": "model", "max_model_len": 16000},
    ],
}
OPENROUTER = {
    "data": [
        {"id": "anthropic/claude-3.5-sonnet", "context_length": 200000},
        {"id": "mistralai/mistral-7b-instruct", "context_length": 32768},
        {"id": "some/model", "top_provider": {"context_length": 65536}},
    ]
}


# --------------------------------------------------------------------------- precedence


def test_precedence_settings_then_upstream_then_table_then_default():
    upstream = {"data": [{"id": "gpt-4o", "max_model_len": 16000}]}
    configured = make_settings({"gpt-4o": 1000})
    bare = make_settings()
    assert context_window("gpt-4o", configured, upstream) == 1000
    assert context_window("gpt-4o", bare, upstream) == 16000
    assert context_window("gpt-4o", bare, None) == 128000
    assert context_window("my-private-model", bare, upstream) == 4096


def test_default_comes_from_settings():
    assert context_window("nobody-knows", make_settings(default=12345)) == 12345
    assert context_window("nobody-knows", Settings()) == 8192


def test_load_settings_models_section():
    settings = load_settings(
        environ={}, overrides={"models": {"local-*": {"context_window": 2048}}}
    )
    assert context_window("local-llm", settings) == 2048


# --------------------------------------------------------------------------- settings globs


def test_exact_key_beats_globs():
    settings = make_settings({"gpt-4o*": 1, "gpt-4o": 2, "*": 3})
    assert context_window("gpt-4o", settings) == 2
    assert context_window("gpt-4o-mini", settings) == 1
    assert context_window("anything", settings) == 3


def test_longer_glob_beats_shorter():
    settings = make_settings({"gpt-*": 10, "gpt-4o-*": 20, "*": 30})
    assert context_window("gpt-4o-mini", settings) == 20
    assert context_window("gpt-3.5-turbo", settings) == 10
    assert context_window("llama", settings) == 30


def test_glob_ties_prefer_fewer_wildcards():
    settings = make_settings({"qwen?-7b": 1, "qwen2-7*": 2})
    assert configured_window("qwen2-7b", settings) == 2


def test_unset_entries_are_skipped():
    settings = make_settings({"gpt-4o": None, "gpt-*": 5})
    assert context_window("gpt-4o", settings) == 5
    only_unset = make_settings({"gpt-4o": None})
    assert context_window("gpt-4o", only_unset) == 128000


def test_globs_match_case_insensitively_and_prefixed_names():
    settings = make_settings({"*/Llama-3*": 9000, "openai/*": 7000})
    assert context_window("meta-llama/llama-3.1-70b", settings) == 9000
    assert context_window("openai/gpt-4o", settings) == 7000
    assert configured_window("gpt-4o", settings) is None


# --------------------------------------------------------------------------- upstream metadata


def test_parse_upstream_windows_shapes():
    assert parse_upstream_windows(VLLM) == {
        "meta-llama/Llama-3.1-8B-Instruct": 32768,
        "gpt-4o": 16000,
    }
    assert parse_upstream_windows(OPENROUTER) == {
        "anthropic/claude-3.5-sonnet": 200000,
        "mistralai/mistral-7b-instruct": 32768,
        "some/model": 65536,
    }
    others = {
        "data": [
            {"id": "groq-model", "context_window": 131072},
            {"id": "lmstudio-model", "max_context_length": "4096"},
            {"id": "plain-openai", "object": "model", "owned_by": "openai"},
        ]
    }
    assert parse_upstream_windows(others) == {"groq-model": 131072, "lmstudio-model": 4096}
    assert parse_upstream_windows(others["data"]) == parse_upstream_windows(others)


@pytest.mark.parametrize(
    "junk",
    [
        None,
        {},
        [],
        "text",
        {"data": None},
        {"data": "x"},
        {"data": [None, 3, {"id": 5, "max_model_len": 10}]},
        {"data": [{"id": "m", "max_model_len": v} for v in (0, -1, True, "lots", 1.5, None)]},
    ],
)
def test_parse_upstream_windows_ignores_junk(junk):
    assert parse_upstream_windows(junk) == {}


def test_upstream_metadata_is_used():
    settings = make_settings()
    assert context_window("meta-llama/Llama-3.1-8B-Instruct", settings, VLLM) == 32768
    assert context_window("META-LLAMA/llama-3.1-8b-instruct", settings, VLLM) == 32768
    assert context_window("mistralai/mistral-7b-instruct", settings, OPENROUTER) == 32768
    assert context_window("some/model", settings, OPENROUTER) == 65536
    # not listed upstream: the table still applies
    assert context_window("gpt-4.1-mini", settings, OPENROUTER) == 1047576


def test_upstream_may_be_passed_already_parsed():
    parsed = parse_upstream_windows(VLLM)
    assert context_window("gpt-4o", make_settings(), parsed) == 16000


# --------------------------------------------------------------------------- built-in table


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128000),
        ("gpt-4o-2024-08-06", 128000),
        ("openai/gpt-4o", 128000),
        ("gpt-4o-mini-2024-07-18", 128000),
        ("ft:gpt-4o-mini:acme::abc123", 128000),
        ("gpt-4.1", 1047576),
        ("gpt-4.1-nano-2025-04-14", 1047576),
        ("gpt-4-turbo-2024-04-09", 128000),
        ("gpt-4", 8192),
        ("gpt-4-0613", 8192),
        ("gpt-4-32k", 32768),
        ("gpt-3.5-turbo", 16385),
        ("gpt-3.5-turbo-0125", 16385),
        ("o1", 200000),
        ("o1-mini", 128000),
        ("o3-mini-2025-01-31", 200000),
        ("o4-mini", 200000),
        ("gpt-5", 400000),
        ("gpt-5-mini", 400000),
        ("claude-3-5-sonnet-20241022", 200000),
        ("anthropic/claude-3.5-sonnet", 200000),
        ("claude-3-7-sonnet-latest", 200000),
        ("claude-sonnet-4-20250514", 200000),
        ("claude-opus-4-1", 200000),
        ("claude-3-haiku-20240307", 200000),
        ("meta-llama/Llama-3.1-8B-Instruct", 131072),
        ("llama-3.3-70b-versatile", 131072),
        ("llama3.2:3b", 131072),
        ("mistral-large-latest", 131072),
        ("mistralai/mixtral-8x7b-instruct", 32768),
        ("Qwen/Qwen2.5-72B-Instruct", 32768),
        ("qwen2.5:7b", 32768),
        ("gemini-1.5-flash", 1048576),
        ("google/gemini-2.0-flash-001", 1048576),
        ("gemini-2.5-pro", 1048576),
        ("deepseek-chat", 65536),
        ("deepseek-ai/DeepSeek-V3", 128000),
    ],
)
def test_known_windows(model, window):
    assert known_window(model) == window
    assert context_window(model, make_settings()) == window


@pytest.mark.parametrize("model", ["", "gpt-4x", "mygpt-4o", "totally-unknown", "o1x"])
def test_unknown_names_do_not_match_by_accident(model):
    assert known_window(model) is None


def test_table_is_sane():
    for key, window in KNOWN_WINDOWS.items():
        assert key == key.lower()
        assert 2048 <= window <= 2_097_152
