"""A turn's stored messages in Letta's shapes (core/letta_messages.py): every message kind, the
ids and dates a replay must reproduce, stop reasons, usage and the type filter."""

from __future__ import annotations

import pytest

from proxy.core.letta_messages import (
    TurnFacts,
    iso_date,
    letta_response,
    only_types,
    step_count,
    stop_reason,
    to_letta,
    usage_statistics,
)
from proxy.core.loop import STEPS_EXHAUSTED

FACTS = TurnFacts("turn-1", 1_700_000_000)
DATE = "2023-11-14T22:13:20Z"


def call(call_id: str, name: str, arguments: object = '{"label": "human"}') -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}


MEMORY_EDIT = [
    {"role": "assistant", "content": None,
     "tool_calls": [call("call_1", "core_memory_append",
                         '{"label": "human", "content": "Name: Ada"}')]},
    {"role": "tool", "tool_call_id": "call_1", "content": "OK: block 'human' now has 9 of 5000"},
    {"role": "assistant", "content": "Got it, I'll remember that."},
]


def test_a_memory_edit_is_a_call_its_return_and_the_answer():
    out = to_letta(MEMORY_EDIT, FACTS)
    assert out == [
        {"id": "message-turn-1-0", "date": DATE, "message_type": "tool_call_message",
         "otid": "otid-turn-1-0", "run_id": None,
         "tool_call": {"name": "core_memory_append",
                       "arguments": '{"label": "human", "content": "Name: Ada"}',
                       "tool_call_id": "call_1"}},
        {"id": "message-turn-1-1", "date": DATE, "message_type": "tool_return_message",
         "otid": "otid-turn-1-1", "run_id": None, "name": "core_memory_append",
         "tool_return": "OK: block 'human' now has 9 of 5000", "status": "success",
         "tool_call_id": "call_1", "stdout": None, "stderr": None},
        {"id": "message-turn-1-2", "date": DATE, "message_type": "assistant_message",
         "otid": "otid-turn-1-2", "run_id": None, "content": "Got it, I'll remember that."},
    ]


def test_mapping_is_deterministic_for_replays():
    assert to_letta(MEMORY_EDIT, FACTS) == to_letta([dict(m) for m in MEMORY_EDIT], FACTS)
    other = to_letta(MEMORY_EDIT, TurnFacts("turn-2", 1_700_000_000, run_id="run-9"))
    assert [m["id"] for m in other] == ["message-turn-2-0", "message-turn-2-1",
                                        "message-turn-2-2"]
    assert {m["run_id"] for m in other} == {"run-9"}


def test_text_beside_calls_is_reasoning_and_each_call_its_own_message():
    out = to_letta([
        {"role": "assistant", "content": "Let me note that.",
         "tool_calls": [call("a", "core_memory_append"), call("b", "archival_memory_insert")]},
        {"role": "tool", "tool_call_id": "b", "content": "OK: saved to archival memory."},
        {"role": "tool", "tool_call_id": "a", "content": "OK"},
    ], FACTS)
    assert [m["message_type"] for m in out] == [
        "reasoning_message", "tool_call_message", "tool_call_message", "tool_return_message",
        "tool_return_message"]
    assert (out[0]["reasoning"], out[0]["source"]) == ("Let me note that.", "non_reasoner_model")
    assert [m["tool_call"]["tool_call_id"] for m in out[1:3]] == ["a", "b"]
    assert [(m["name"], m["tool_call_id"]) for m in out[3:]] == [
        ("archival_memory_insert", "b"), ("core_memory_append", "a")]


def test_error_results_unknown_calls_and_object_arguments():
    out = to_letta([
        {"role": "assistant", "content": "",
         "tool_calls": [call("x", "nope", {"q": "é"}), {"id": "y"}, "junk"]},
        {"role": "tool", "tool_call_id": "x", "content": "Error: there is no tool named 'nope'."},
        {"role": "tool", "tool_call_id": "z", "content": [{"type": "text", "text": "OK"}]},
    ], FACTS)
    assert [m["message_type"] for m in out] == [
        "tool_call_message", "tool_call_message", "tool_return_message", "tool_return_message"]
    assert out[0]["tool_call"]["arguments"] == '{"q": "é"}'
    assert out[1]["tool_call"] == {"name": "", "arguments": "{}", "tool_call_id": "y"}
    assert (out[2]["status"], out[2]["name"]) == ("error", "nope")
    assert (out[3]["status"], out[3]["name"], out[3]["tool_return"]) == ("success", None, "OK")


def test_answers_from_parts_refusals_and_nothing():
    out = to_letta([
        {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                          {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "refusal": "I can't."},
        {"role": "assistant", "content": None},
    ], FACTS)
    assert [m["content"] for m in out] == ["a\nb", "I can't.", ""]


def test_input_rows_and_other_roles_are_skipped():
    assert to_letta([{"role": "user", "content": "hi"}, {"role": "system", "content": "s"},
                     {"role": "developer", "content": "d"}], FACTS) == []


def test_steps_and_stop_reasons():
    assert step_count(MEMORY_EDIT) == 2
    assert stop_reason(MEMORY_EDIT) == "end_turn"
    assert stop_reason([]) == "end_turn"
    exhausted = [*MEMORY_EDIT[:2], {"role": "assistant", "content": STEPS_EXHAUSTED}]
    assert stop_reason(exhausted) == "max_steps"
    assert to_letta(exhausted, FACTS)[-1]["content"] == STEPS_EXHAUSTED


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, (5, 10, 15)),
    ({"prompt_tokens": 10, "completion_tokens": 5}, (5, 10, 15)),
    ({}, (0, 0, 0)),
])
def test_usage_statistics(usage, expected):
    stats = usage_statistics(usage, 3)
    assert stats == {"message_type": "usage_statistics", "completion_tokens": expected[0],
                     "prompt_tokens": expected[1], "total_tokens": expected[2],
                     "step_count": 3}


def test_type_filter():
    out = to_letta(MEMORY_EDIT, FACTS)
    assert only_types(out, None) is out
    assert [m["message_type"] for m in only_types(out, ["assistant_message"])] == [
        "assistant_message"]
    assert only_types(out, []) == []


def test_the_whole_response():
    response = letta_response(MEMORY_EDIT, FACTS, usage={"prompt_tokens": 7,
                                                         "completion_tokens": 3},
                              include=["tool_call_message"])
    assert [m["message_type"] for m in response["messages"]] == ["tool_call_message"]
    assert response["stop_reason"] == {"message_type": "stop_reason", "stop_reason": "end_turn"}
    assert response["usage"]["step_count"] == 2 and response["usage"]["total_tokens"] == 10


def test_iso_date_is_utc():
    assert iso_date(0) == "1970-01-01T00:00:00Z"
