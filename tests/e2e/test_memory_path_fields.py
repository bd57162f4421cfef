"""Issue #17, items 1-3, on both backends with openai-python: the memory path is invisible.

A turn with a memory step still gives the client every field the upstream put on the final step
(logprobs, annotations, reasoning_content, service_tier...) and usage summed over the steps,
details included, streamed and not; text beside a memory call never corrupts a structured
answer (`.parse()` succeeds) and shows in the transcript as an internal step; `tool_choice`
and legacy `functions` speak of the client's tools while memory steps run first.
"""

from __future__ import annotations

import json

import httpx
import pydantic
import pytest

from tests.fakes import Reply
from tests.openapi_check import validate_chat_completion

MODEL = "gpt-4o-mini"
DETAILS = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35,
           "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
           "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0}}
CITATIONS = [{"type": "url_citation", "url_citation": {
    "url": "https://example.com/ada", "title": "Ada", "start_index": 0, "end_index": 3}}]
REMEMBER = ("core_memory_append", {"label": "human", "content": "Name: Ada"})
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {}}}}


class Person(pydantic.BaseModel):
    name: str


def client(proxy, agent="a1"):
    return proxy.client(base_url=f"{proxy.url}/agents/{agent}/v1")


def ask(c, text, **kw):
    return c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                     **kw)


def push_rich_turn(fake_upstream):
    fake_upstream.push(
        Reply(tool_calls=[REMEMBER], usage=DETAILS, fields={"reasoning_content": "store it"}),
        Reply(content="Ada is noted.", usage=DETAILS, logprobs=True,
              fields={"reasoning_content": "answer briefly", "annotations": CITATIONS}),
    )


SUMMED = {"prompt_tokens": 60, "completion_tokens": 10, "total_tokens": 70,
          "prompt_tokens_details": {"cached_tokens": 32, "audio_tokens": 0},
          "completion_tokens_details": {"reasoning_tokens": 6, "audio_tokens": 0}}


def test_every_field_survives_a_turn_with_a_memory_step(make_proxy, fake_upstream):
    proxy = make_proxy()
    push_rich_turn(fake_upstream)
    reply = ask(client(proxy), "My name is Ada", logprobs=True)
    validate_chat_completion(reply.model_dump(exclude_unset=True))
    message = reply.choices[0].message
    assert message.content == "Ada is noted."
    assert message.model_extra["reasoning_content"] == "answer briefly"
    assert [a.url_citation.url for a in message.annotations] == ["https://example.com/ada"]
    assert [t.token for t in reply.choices[0].logprobs.content] == ["Ada", "is", "noted."]
    assert reply.service_tier == "default" and reply.system_fingerprint == "fp_fake"
    assert reply.usage.model_dump(exclude_none=True) == SUMMED
    assert len(fake_upstream.requests) == 2
    # the memory step's reasoning went back with its call, within the turn only
    step = [m for m in fake_upstream.bodies()[1]["messages"] if m.get("tool_calls")]
    assert step[-1]["reasoning_content"] == "store it"


def test_every_field_survives_a_streamed_turn_with_a_memory_step(make_proxy, fake_upstream):
    proxy = make_proxy()
    push_rich_turn(fake_upstream)
    chunks = list(ask(client(proxy), "My name is Ada", logprobs=True, stream=True,
                      stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Ada is noted."
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning == "store itanswer briefly"  # plain chat streams every step live
    annotations = [a for d in deltas for a in (d.model_extra or {}).get("annotations") or []]
    assert annotations == CITATIONS
    tokens = [t.token for c in chunks if c.choices and c.choices[0].logprobs
              for t in c.choices[0].logprobs.content or []]
    assert tokens == ["Ada", "is", "noted."]
    assert chunks[-1].usage.model_dump(exclude_none=True) == SUMMED
    assert chunks[-1].service_tier == "default"


@pytest.mark.parametrize("stream", [False, True])
def test_json_beside_a_memory_call_parses_and_is_a_step_in_the_transcript(
        make_proxy, fake_upstream, stream):
    proxy = make_proxy()
    answer = '{"name": "Ada"}'
    fake_upstream.push(Reply(content=answer, tool_calls=[REMEMBER]), Reply(content=answer))
    c = client(proxy)
    messages = [{"role": "user", "content": "My name is Ada"}]
    if stream:
        with c.chat.completions.stream(model=MODEL, messages=messages,
                                       response_format=Person) as events:
            text = "".join(e.delta for e in events if e.type == "content.delta")
            parsed = events.get_final_completion()
        assert text == answer
    else:
        parsed = c.chat.completions.parse(model=MODEL, messages=messages,
                                          response_format=Person)
    assert parsed.choices[0].message.parsed == Person(name="Ada")
    assert parsed.choices[0].message.content == answer
    with proxy.http() as http:
        rows = http.get("/v1/agents/a1/conversations/default/messages").json()["data"]
    steps = [(r["role"], r["content"], r["visible"]) for r in rows]
    assert steps[1:] == [("assistant", answer, False), ("tool", steps[2][1], False),
                         ("assistant", answer, True)]
    assert rows[1]["tool_calls"][0]["function"]["name"] == "core_memory_append"


FORCED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["required", FORCED], ids=["required", "forced"])
def test_tool_choice_lets_a_memory_step_run_first(make_proxy, fake_upstream, stream, choice):
    proxy = make_proxy()
    fake_upstream.push(Reply(tool_calls=[REMEMBER]),
                       Reply(tool_calls=[("get_weather", {"city": "Oslo"})]))
    kw = {"tools": [WEATHER, CLOCK], "tool_choice": choice}
    if stream:
        chunks = list(ask(client(proxy), "My name is Ada; weather?", stream=True, **kw))
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        name = calls[0].function.name
        arguments = "".join(t.function.arguments or "" for t in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        reply = ask(client(proxy), "My name is Ada; weather?", **kw)
        call = reply.choices[0].message.tool_calls[0]
        name, arguments, finish = call.function.name, call.function.arguments, \
            reply.choices[0].finish_reason
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Oslo"},
                                                     "tool_calls")
    first = fake_upstream.bodies()[0]
    assert first["tool_choice"] == "required"
    offered = {t["function"]["name"] for t in first["tools"]}
    assert "core_memory_append" in offered and "get_weather" in offered
    with proxy.http() as http:
        human = http.get("/v1/agents/a1/blocks/human").json()["value"]
    assert "Name: Ada" in human


def test_a_required_call_never_made_is_a_clear_error(make_proxy, fake_upstream):
    proxy = make_proxy({"agent": {"max_steps": 2}})
    fake_upstream.push(Reply(tool_calls=[REMEMBER]), Reply(content="Just text."))
    with httpx.Client(base_url=f"{proxy.url}/agents/a1/v1", timeout=30) as http:
        response = http.post("/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "weather?"}],
            "tools": [WEATHER], "tool_choice": "required"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "tool_choice_not_satisfied"
    last = fake_upstream.bodies()[-1]
    assert last["tool_choice"] == "required"
    assert [t["function"]["name"] for t in last["tools"]] == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_functions_are_the_clients_tools(make_proxy, fake_upstream, stream):
    proxy = make_proxy()
    fake_upstream.push(Reply(tool_calls=[REMEMBER]),
                       Reply(tool_calls=[("get_weather", {"city": "Oslo"})]))
    reply = client(proxy).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada; weather?"}],
        functions=[WEATHER["function"]], function_call={"name": "get_weather"},
        stream=stream)
    if stream:
        chunks = list(reply)
        calls = [c.choices[0].delta.function_call for c in chunks
                 if c.choices and c.choices[0].delta.function_call]
        name = calls[0].name
        arguments = "".join(f.arguments or "" for f in calls)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        message = reply.choices[0].message
        assert message.tool_calls is None
        name, arguments = message.function_call.name, message.function_call.arguments
        finish = reply.choices[0].finish_reason
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Oslo"},
                                                     "function_call")
    first = fake_upstream.bodies()[0]
    assert "functions" not in first and "function_call" not in first
    assert first["tool_choice"] == "required"


def test_a_legacy_function_result_continues_the_same_conversation(make_proxy, fake_upstream):
    proxy = make_proxy()
    fake_upstream.push(Reply(tool_calls=[REMEMBER]),
                       Reply(tool_calls=[("get_weather", {"city": "Oslo"})]),
                       Reply(content="It is sunny in Oslo."))
    c = client(proxy)
    messages = [{"role": "user", "content": "My name is Ada; weather?"}]
    functions = [WEATHER["function"]]
    first = c.chat.completions.create(model=MODEL, messages=messages, functions=functions)
    call = first.choices[0].message.function_call
    messages += [{"role": "assistant", "content": None,
                  "function_call": {"name": call.name, "arguments": call.arguments}},
                 {"role": "function", "name": "get_weather", "content": "sunny"}]
    second = c.chat.completions.create(model=MODEL, messages=messages, functions=functions)
    assert second.choices[0].message.content == "It is sunny in Oslo."
    prompt = fake_upstream.bodies()[-1]["messages"]
    legacy = [m for m in prompt if m.get("function_call")]
    assert len(legacy) == 1 and legacy[0]["function_call"]["name"] == "get_weather"
    position = prompt.index(legacy[0])
    assert prompt[position + 1]["role"] == "function"
    assert [m["role"] for m in prompt].count("function") == 1
    with proxy.http() as http:
        conversations = http.get("/v1/agents/a1/conversations").json()["data"]
    assert len(conversations) == 1


@pytest.mark.parametrize("body", [
    {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    {"functions": [WEATHER["function"]], "function_call": {"name": "nope"}},
    {"tool_choice": "required"},
], ids=["tool_choice", "function_call", "required-without-tools"])
def test_forcing_a_function_the_request_does_not_offer_is_a_400(make_proxy, fake_upstream,
                                                                 body):
    proxy = make_proxy()
    with httpx.Client(base_url=f"{proxy.url}/agents/a1/v1", timeout=30) as http:
        response = http.post("/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] in ("tool_choice", "function_call")
    assert "nope" in error["message"] or "needs 'tools'" in error["message"]
    assert fake_upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api_sums_usage_details_over_memory_steps(make_proxy, fake_upstream,
                                                                stream):
    proxy = make_proxy()
    push_rich_turn(fake_upstream)
    c = client(proxy)
    if stream:
        events = list(c.responses.create(model=MODEL, input="My name is Ada", stream=True))
        response = events[-1].response
    else:
        response = c.responses.create(model=MODEL, input="My name is Ada")
    assert response.output_text == "Ada is noted."
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (60, 10, 70)
    assert usage.input_tokens_details.cached_tokens == 32
    assert usage.output_tokens_details.reasoning_tokens == 6


def test_a_retried_request_is_answered_with_every_field(make_proxy, fake_upstream):
    proxy = make_proxy()
    push_rich_turn(fake_upstream)
    c = client(proxy)
    key = {"Idempotency-Key": "rich-1"}
    first = ask(c, "My name is Ada", logprobs=True, extra_headers=key)
    again = ask(c, "My name is Ada", logprobs=True, extra_headers=key)
    streamed = list(ask(c, "My name is Ada", logprobs=True, extra_headers=key, stream=True))
    assert len(fake_upstream.requests) == 2
    assert again.model_dump() == first.model_dump()
    deltas = [ch.choices[0].delta for ch in streamed if ch.choices]
    assert "".join(d.content or "" for d in deltas) == "Ada is noted."
    extra = {k: v for d in deltas for k, v in (d.model_extra or {}).items()}
    assert extra["reasoning_content"] == "answer briefly" and extra["annotations"] == CITATIONS
    assert streamed[0].service_tier == "default"
