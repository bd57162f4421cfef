"""Prompt assembly keeps tool calls and results together and valid."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.context import UNANSWERED_TOOL_RESULT, assemble_prompt, well_formed


def call(cid: str) -> dict:
    return {"id": cid, "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_unanswered_client_call_gets_a_placeholder_result():
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1")]},
        {"role": "user", "content": "never mind"},
    ]
    out = well_formed(messages)
    assert out[2] == {"role": "tool", "tool_call_id": "c1", "content": UNANSWERED_TOOL_RESULT}
    assert out[3]["content"] == "never mind"


def test_orphan_results_are_dropped_and_results_follow_their_call():
    messages = [
        {"role": "tool", "tool_call_id": "zz", "content": "orphan"},
        {"role": "assistant", "content": None, "tool_calls": [call("a"), call("b")]},
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "a", "content": "A"},
    ]
    out = well_formed(messages)
    assert [m.get("tool_call_id") for m in out[1:]] == ["a", "b"]
    assert out[0]["role"] == "assistant"


def test_summary_is_placed_after_the_system_message():
    prompt = assemble_prompt("SYS", "they met", [{"role": "user", "content": "hi"}])
    assert [m["role"] for m in prompt] == ["system", "system", "user"]
    assert "they met" in prompt[1]["content"]


message = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, st.text(max_size=5)),
    st.builds(lambda t: {"role": "assistant", "content": t}, st.text(max_size=5)),
    st.builds(
        lambda ids: {"role": "assistant", "content": None, "tool_calls": [call(i) for i in ids]},
        st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True),
    ),
    st.builds(lambda i: {"role": "tool", "tool_call_id": i, "content": "r"}, st.sampled_from("abcd")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(message, max_size=12))
def test_every_call_is_followed_by_exactly_its_results(messages):
    out = well_formed(messages)
    i = 0
    while i < len(out):
        m = out[i]
        if m["role"] == "tool":
            raise AssertionError("a tool result not directly after its call")
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            results = [r["tool_call_id"] for r in out[i + 1 : i + 1 + len(ids)]]
            assert results == ids
            i += 1 + len(ids)
        else:
            i += 1
