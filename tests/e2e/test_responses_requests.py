"""How a Responses request's settings and inputs reach the Chat Completions upstream, and how
its answer comes back (issue #16), through openai-python on SQLite and Postgres: tool choice
and sampling settings, images, parallel function calls (plain and streamed), an answer cut by
max_output_tokens (`incomplete`). Every answer and event is validated against the OpenAI
description (tests/responses_check.py)."""

from __future__ import annotations

import json

from tests.e2e import responses_helpers as rh
from tests.e2e.responses_helpers import MODEL, TOOL, client, dialogue
from tests.fakes import Reply
from tests.prompt_check import normal

spec = rh.spec
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
WEATHER = {**TOOL, "name": "weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


def test_settings_reach_the_upstream(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    response = oa.responses.create(
        model=MODEL, input="Hi", tools=[TOOL], parallel_tool_calls=False, top_p=0.9,
        tool_choice={"type": "function", "name": "lookup_order"}, user="user-42",
        reasoning={"effort": "low"}, metadata={"k": "v"})
    sent = fake_upstream.last.json
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup_order"}}
    assert sent["parallel_tool_calls"] is False and sent["top_p"] == 0.9
    assert sent["user"] == "user-42" and sent["reasoning_effort"] == "low"
    assert "metadata" not in sent and "store" not in sent  # memproxy's, not the model's
    assert response.parallel_tool_calls is False and response.top_p == 0.9
    assert response.tool_choice.name == "lookup_order" and response.metadata == {"k": "v"}
    assert [t.name for t in response.tools] == ["lookup_order"]
    for choice in ("none", "required", "auto"):
        oa.responses.create(model=MODEL, input="Hi", tools=[TOOL], tool_choice=choice)
        assert fake_upstream.last.json["tool_choice"] == choice


def test_an_image_input(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    oa.responses.create(model=MODEL, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": PIXEL, "detail": "low"}]}])
    [message] = fake_upstream.last.json["messages"]
    parts = message["content"]
    assert parts[0] == {"type": "text", "text": "What is in this picture?"}
    assert parts[1]["type"] == "image_url" and parts[1]["image_url"]["url"] == PIXEL
    assert parts[1]["image_url"].get("detail") == "low"


def test_parallel_function_calls_round_trip(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    two_calls = Reply(tool_calls=[("lookup_order", {"order_id": "A17"}),
                                  ("weather", {"city": "Oslo"})])
    fake_upstream.push(two_calls)
    first = oa.responses.create(model=MODEL, input="Order and weather", tools=[TOOL, WEATHER])
    calls = first.output
    assert [(c.type, c.name) for c in calls] == [("function_call", "lookup_order"),
                                                 ("function_call", "weather")]
    assert len({c.id for c in calls}) == 2 and len({c.call_id for c in calls}) == 2
    answered = oa.responses.create(model=MODEL, previous_response_id=first.id,
                                   tools=[TOOL, WEATHER], input=[
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "shipped"},
        {"type": "function_call_output", "call_id": calls[1].call_id, "output": "sunny"}])
    messages = fake_upstream.last.json["messages"]
    assert [normal(m) for m in messages[1:]] == [
        normal({"role": "assistant", "content": None, "tool_calls": [
            {"id": c.call_id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}),
        normal({"role": "tool", "tool_call_id": calls[0].call_id, "content": "shipped"}),
        normal({"role": "tool", "tool_call_id": calls[1].call_id, "content": "sunny"})]
    assert answered.output_text == "Tool result: sunny"

    fake_upstream.push(two_calls)
    events = list(oa.responses.create(model=MODEL, input="Order and weather",
                                      tools=[TOOL, WEATHER], stream=True))
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [(e.output_index, e.item.name) for e in added] == [(0, "lookup_order"),
                                                              (1, "weather")]
    done = {e.output_index: e for e in events
            if e.type == "response.function_call_arguments.done"}
    assert json.loads(done[0].arguments) == {"order_id": "A17"}
    assert json.loads(done[1].arguments) == {"city": "Oslo"}
    for index in (0, 1):
        deltas = "".join(e.delta for e in events if e.type ==
                         "response.function_call_arguments.delta" and e.output_index == index)
        assert deltas == done[index].arguments
    final = events[-1].response
    assert [item.arguments for item in final.output] == [done[0].arguments, done[1].arguments]


def test_an_answer_cut_by_max_output_tokens_is_incomplete(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    cut = Reply(content="The beginning of a long", finish_reason="length")
    fake_upstream.push(cut, cut)
    response = oa.responses.create(model=MODEL, input="Tell a long story",
                                   max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "The beginning of a long"
    assert fake_upstream.last.json["max_tokens"] == 16
    events = list(oa.responses.create(model=MODEL, input="Tell a long story", stream=True,
                                      max_output_tokens=16))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert dialogue(fake_upstream.last.json) == [("user", "Tell a long story")]
