"""Core memory edits: the tools' rules and the messages the model gets back."""

from __future__ import annotations

import asyncio

from proxy.core.tools import (
    MEMORY_TOOL_NAMES,
    MEMORY_TOOLS,
    MemoryState,
    ToolContext,
    execute_memory_tool,
)
from proxy.core.types import Block


class NoSearch:
    """Edits never search; a search reaching this raises so the test notices."""

    async def search_passages(self, *args, **kwargs):
        raise AssertionError("unexpected search")

    async def search_messages(self, *args, **kwargs):
        raise AssertionError("unexpected search")


def run(name, args, state):
    import json

    raw = args if isinstance(args, str) else json.dumps(args)
    return asyncio.run(execute_memory_tool(name, raw, state, ToolContext(NoSearch(), 1)))


def state(**values):
    return MemoryState.of([Block(label=k, value=v, limit=40) for k, v in values.items()])


def test_schemas_have_the_letta_names_and_parameters():
    assert MEMORY_TOOL_NAMES == {
        "core_memory_append", "core_memory_replace", "archival_memory_insert",
        "archival_memory_search", "conversation_search",
    }
    params = {t["function"]["name"]: set(t["function"]["parameters"]["properties"]) for t in MEMORY_TOOLS}
    assert params["core_memory_replace"] == {"label", "old_content", "new_content"}
    assert params["conversation_search"] == {"query", "roles", "limit", "start_date", "end_date"}


def test_append_adds_a_line_and_records_the_change():
    s = state(human="Likes tea")
    text, ok = run("core_memory_append", {"label": "human", "content": "Name: Ada"}, s)
    assert ok and "OK" in text
    assert s.blocks["human"].value == "Likes tea\nName: Ada"
    assert s.changed == {"human"}


def test_replace_and_delete():
    s = state(human="Name: Ada\nLikes tea")
    assert run("core_memory_replace", {"label": "human", "old_content": "tea",
                                       "new_content": "coffee"}, s)[1]
    assert s.blocks["human"].value == "Name: Ada\nLikes coffee"
    assert run("core_memory_replace", {"label": "human", "old_content": "Likes coffee",
                                       "new_content": ""}, s)[1]
    assert s.blocks["human"].value == "Name: Ada"


def test_errors_go_back_to_the_model_and_change_nothing():
    s = state(human="Name: Ada")
    cases = [
        ("core_memory_append", {"label": "nope", "content": "x"}, "no memory block labelled 'nope'"),
        ("core_memory_append", {"label": "human", "content": "x" * 50}, "over its limit of 40"),
        ("core_memory_replace", {"label": "human", "old_content": "Bob", "new_content": "x"},
         "does not occur"),
        ("core_memory_append", "{not json", "not valid JSON"),
        ("core_memory_append", {"label": "human"}, "'content' is required"),
        ("no_such_tool", {}, "unknown memory tool"),
    ]
    for name, args, expected in cases:
        text, ok = run(name, args, s)
        assert not ok and text.startswith("Error:") and expected in text, text
    assert s.blocks["human"].value == "Name: Ada" and not s.changed


def test_read_only_blocks_cannot_be_edited():
    s = MemoryState.of([Block(label="rules", value="Be kind", read_only=True)])
    text, ok = run("core_memory_append", {"label": "rules", "content": "x"}, s)
    assert not ok and "read-only" in text


def test_archival_insert_is_pending_until_the_turn_is_stored():
    s = state(human="")
    text, ok = run("archival_memory_insert", {"content": "The wifi password is 1234",
                                              "tags": "home"}, s)
    assert ok and s.new_passages == [("The wifi password is 1234", ["home"])]


def test_the_turns_copy_does_not_alias_the_loaded_blocks():
    original = Block(label="human", value="a", limit=40)
    s = MemoryState.of([original])
    run("core_memory_append", {"label": "human", "content": "b"}, s)
    assert original.value == "a"


def test_arguments_that_are_no_text_or_too_deep_are_a_tool_error_not_a_crash():
    """Issue #21.6: a model's arguments with an escaped lone surrogate would reach the database
    (UnicodeEncodeError, a 500); nested past the parser's depth, a RecursionError. Both are
    errors the model is told about, and nothing is written."""
    import pytest

    from proxy.core.tools import ToolError, parse_arguments

    for raw, says in (('{"label": "human", "content": "x\\ud800y"}', "surrogate"),
                      ('{"content": "\\udfff"}', "surrogate"),
                      ({"content": "\udc80"}, "surrogate"),
                      ('{"a":' * 5000 + "1" + "}" * 5000, "nested too deeply"),
                      ("[" * 5000 + "]" * 5000, "nested too deeply")):
        with pytest.raises(ToolError, match=says):
            parse_arguments(raw)
    assert parse_arguments('{"content": "caf\\u00e9 \\ud83e\\udde0"}') == {"content": "café 🧠"}
    memory = state(human="")
    text, ok = run("core_memory_append", '{"label": "human", "content": "x\\ud800y"}', memory)
    assert not ok and "surrogate" in text
    assert memory.blocks["human"].value == "" and not memory.changed
