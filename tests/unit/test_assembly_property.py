"""The pure pipeline end to end: count → plan → assemble. Whatever the conversation, the
prompt fits the window and a tool call is never separated from its results."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import tokens
from proxy.core.context import assemble_prompt
from proxy.core.paging import Budget, Item, plan
from proxy.core.tools import MEMORY_TOOLS

text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=300
)


@st.composite
def conversation(draw):
    messages = []
    for turn in range(draw(st.integers(0, 25))):
        messages.append({"role": "user", "content": draw(text)})
        for step in range(draw(st.integers(0, 2))):
            ids = [f"c{turn}_{step}_{i}" for i in range(draw(st.integers(1, 3)))]
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": i, "type": "function",
                 "function": {"name": "archival_memory_search", "arguments": draw(text)}}
                for i in ids]})
            messages += [{"role": "tool", "tool_call_id": i, "content": draw(text)} for i in ids]
        messages.append({"role": "assistant", "content": draw(text)})
    messages.append({"role": "user", "content": draw(text)})  # the new input
    return messages


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversation(), st.integers(1500, 8000), st.integers(0, 1000))
def test_assembled_prompt_fits_and_keeps_tool_calls_whole(messages, window, reserve):
    system = "You are helpful.\n<memory_blocks>...</memory_blocks>"
    fixed = (tokens.count_text(system) + tokens.TOKENS_PER_MESSAGE + 1
             + tokens.count_tools(MEMORY_TOOLS) + tokens.REPLY_PRIMING_TOKENS)
    budget = Budget(window=window, reserve_output=reserve, fixed=fixed)
    items = [Item(seq=i, role=m["role"], tokens=tokens.count_message(m),
                  has_tool_calls=bool(m.get("tool_calls"))) for i, m in enumerate(messages)]
    result = plan(budget, items, protect_from_seq=len(messages) - 1)
    kept = messages[result.evicted:]
    prompt = assemble_prompt(system, "", kept)
    if result.fits:
        size = tokens.count_prompt(prompt, MEMORY_TOOLS) + reserve
        assert size <= window + tokens.TOOL_SCHEMA_MARGIN
    assert prompt[-1] == messages[-1]  # the new input is always sent
    assert kept == prompt[1:]  # nothing had to be repaired: the cut kept every call whole
    for i, m in enumerate(kept):
        if m["role"] == "tool":
            j = i
            while kept[j]["role"] == "tool":
                j -= 1
            ids = {c["id"] for c in kept[j].get("tool_calls") or []}
            assert m["tool_call_id"] in ids
