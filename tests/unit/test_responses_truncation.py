"""`truncation: "auto"` without an agent (proxy/responses/truncation.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import ProxyError
from proxy.responses.truncation import drop_oldest


def size(message):
    return len(message.get("content") or "") + 1


def u(text):
    return {"role": "user", "content": text}


def a(text, calls=None):
    message = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [{"id": c, "type": "function",
                                  "function": {"name": "f", "arguments": "{}"}} for c in calls]
    return message


def tool(call_id, text):
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def test_under_budget_is_unchanged():
    messages = [{"role": "system", "content": "s"}, u("hi"), a("hello"), u("again")]
    assert drop_oldest(messages, budget=100, keep_last=1, count=size) is messages


def test_oldest_go_first_system_and_input_stay():
    messages = [{"role": "system", "content": "sys"}, u("a" * 10), a("b" * 10), u("c" * 10),
                a("d" * 10), u("new")]
    kept = drop_oldest(messages, budget=30, keep_last=1, count=size)
    assert kept == [messages[0], messages[3], messages[4], messages[5]]


def test_tool_results_of_a_dropped_call_go_with_it():
    messages = [u("x" * 20), a("", ["c1", "c2"]), tool("c1", "r" * 5), tool("c2", "r" * 5),
                a("done"), u("new")]
    kept = drop_oldest(messages, budget=20, keep_last=1, count=size)
    assert kept[0] == a("done")
    assert all(m["role"] != "tool" for m in kept)


def test_input_alone_over_budget_is_a_400():
    with pytest.raises(ProxyError) as info:
        drop_oldest([u("a" * 10), u("b" * 50)], budget=20, keep_last=1, count=size)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert info.value.param == "input"


messages_strategy = st.lists(
    st.one_of(
        st.builds(u, st.text(max_size=20)),
        st.builds(a, st.text(max_size=20)),
        st.just({"role": "system", "content": "sys"}),
    ),
    min_size=1, max_size=30)


@given(messages_strategy, st.integers(0, 400), st.integers(0, 5))
def test_result_is_a_suffix_plus_systems_within_budget(messages, budget, keep_last):
    keep_last = min(keep_last, len(messages))
    try:
        kept = drop_oldest(messages, budget=budget, keep_last=keep_last, count=size)
    except ProxyError:
        protected = messages[len(messages) - keep_last:]
        systems = [m for m in messages[:len(messages) - keep_last] if m["role"] == "system"]
        assert sum(map(size, protected + systems)) > budget
        return
    assert sum(map(size, kept)) <= budget or kept is messages
    # order kept; every system message and the protected tail kept
    it = iter(messages)
    assert all(any(m is n for n in it) for m in kept)
    assert all(m in kept for m in messages if m["role"] == "system")
    if keep_last:
        assert kept[-keep_last:] == messages[-keep_last:]
    dropped = [m for m in messages if not any(m is k for k in kept)]
    if dropped:  # what was dropped is a prefix of the non-system messages
        non_system = [m for m in messages if m["role"] != "system"]
        assert non_system[:len(dropped)] == dropped
