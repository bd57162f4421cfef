"""The context-too-small error (turn/overflow.py): its parts add up, and its advice and `param`
follow the largest part."""

from __future__ import annotations

import pytest

from proxy.turn.overflow import ContextCost, context_length_error


def cost(**parts: int) -> ContextCost:
    base = {"client_tools": 0, "client_tool_count": 0, "memory": 700, "reserve": 1024,
            "messages": 20}
    return ContextCost(model="m-8k", window=2048, **{**base, **parts})


@pytest.mark.parametrize(("parts", "param", "advice"), [
    ({"client_tools": 1800, "client_tool_count": 12}, "tools", "send fewer tools"),
    ({"messages": 3000}, "messages", "Send a shorter message"),
    ({"reserve": 4000}, "max_tokens", "smaller max_tokens"),
    ({"memory": 5000}, "messages", "Shorten the system prompt or the memory blocks"),
])
def test_the_largest_part_gets_the_advice(parts, param, advice):
    c = cost(**parts)
    error = context_length_error(c)
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", param)
    assert advice in error.message
    assert f"needs about {c.total} " in error.message
    assert c.total == c.client_tools + c.memory + c.reserve + c.messages
    assert '[models."m-8k"] context_window' in error.message and "uses 2048 now" in error.message


def test_one_tool_and_no_tools_are_worded_as_such():
    assert "the client's 1 tool definition," in context_length_error(
        cost(client_tools=90, client_tool_count=1, messages=5000)).message
    assert "no client tools" in context_length_error(cost(messages=5000)).message
