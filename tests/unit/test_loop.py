"""The agent loop's decisions, driven by a scripted upstream object (no network)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from proxy.core.loop import (
    STEPS_EXHAUSTED,
    StepStarted,
    TextDelta,
    ToolCallDelta,
    TurnDone,
    TurnLoop,
)
from proxy.core.tools import MemoryState, ToolContext
from proxy.core.types import Block
from proxy.upstream import Route, UpstreamError
from tests.openapi_check import validate_error


class NoSearch:
    async def search_passages(self, *a, **k):
        return []

    async def search_messages(self, *a, **k):
        return []


def call(cid, name, args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


class Script:
    """Returns the scripted assistant messages in order and records every request body."""

    def __init__(self, *messages):
        self.messages = list(messages)
        self.bodies = []

    def _next(self, body):
        self.bodies.append(json.loads(json.dumps(body)))
        message = dict(self.messages.pop(0))
        finish = message.pop("_finish", "tool_calls" if message.get("tool_calls") else "stop")
        self.logprobs = message.pop("_logprobs", None)
        self.usage = message.pop("_usage", None) or {
            "prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        self.envelope = message.pop("_envelope", {})
        return message, finish

    async def chat(self, body, *, api_key, route=None):
        message, finish = self._next(body)
        if message.get("_no_choices"):
            return {"id": "up", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": []}
        return {
            "id": f"up-{len(self.bodies)}", "object": "chat.completion", "created": 1,
            "model": "m-upstream", **self.envelope,
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "logprobs": self.logprobs, "finish_reason": finish}],
            "usage": self.usage,
        }

    async def chat_stream(self, body, *, api_key, route=None):
        message, finish = self._next(body)
        base = {"id": f"up-{len(self.bodies)}", "object": "chat.completion.chunk",
                "created": 1, "model": "m-upstream", **self.envelope}

        def chunk(delta, finish_reason=None, logprobs=None):
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                         "finish_reason": finish_reason}]}

        if message.get("_no_choices"):
            yield {**base, "choices": []}
            return
        yield chunk({"role": "assistant", "content": ""})
        for key, value in message.items():  # reasoning_content, annotations...
            if key not in ("content", "tool_calls"):
                yield chunk({key: value})
        text = message.get("content") or ""
        for i in range(0, len(text), 3):
            lp = None
            if self.logprobs:
                lp = {"content": [{"token": text[i:i + 3], "logprob": -0.5}]}
            yield chunk({"content": text[i : i + 3]}, logprobs=lp)
        for i, c in enumerate(message.get("tool_calls") or []):
            yield chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                         "function": {"name": c["function"]["name"],
                                                      "arguments": ""}}]})
            args = c["function"]["arguments"]
            for j in range(0, len(args), 4):
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": args[j:j+4]}}]})
        yield chunk({}, finish)
        yield {**base, "choices": [], "usage": self.usage}


def run_loop(script, *, stream, tools=None, max_steps=8, route=None, extra=None):
    memory = MemoryState.of([Block("human", "", limit=100)])
    body = {"model": "m", **(extra or {})}
    if tools:
        body["tools"] = tools
    loop = TurnLoop(upstream=script, api_key=None, body=body,
                    prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                    memory=memory, tool_context=ToolContext(NoSearch(), 1), max_steps=max_steps,
                    stream=stream, route=route)

    async def collect():
        return [e async for e in loop.run()]

    events = asyncio.run(collect())
    assert isinstance(events[-1], TurnDone)
    return events, memory


CLIENT_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


@pytest.mark.parametrize("stream", [False, True])
def test_memory_call_then_text(stream):
    script = Script(
        {"content": None, "tool_calls": [call("c1", "core_memory_append",
                                              {"label": "human", "content": "Name: Ada"})]},
        {"content": "Nice to meet you, Ada."},
    )
    events, memory = run_loop(script, stream=stream)
    done = events[-1]
    assert done.reply == {"role": "assistant", "content": "Nice to meet you, Ada."}
    assert done.finish_reason == "stop" and done.steps == 2
    assert done.usage == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
    assert memory.blocks["human"].value == "Name: Ada"
    roles = [(m.data["role"], m.visible) for m in done.messages]
    assert roles == [("assistant", False), ("tool", False), ("assistant", True)]
    second = script.bodies[1]["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "c1"
    names = [t["function"]["name"] for t in script.bodies[0]["tools"]]
    assert "core_memory_append" in names
    if stream:
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Nice to meet you, Ada."
        assert any(isinstance(e, StepStarted) for e in events)
        assert script.bodies[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
def test_each_step_started_carries_the_output_so_far_and_the_turn_created(stream):
    """What Letta's step stream sends as the turn goes (api/agent_messages.py)."""
    script = Script(
        {"content": None, "tool_calls": [call("c1", "core_memory_append",
                                              {"label": "human", "content": "A"})]},
        {"content": None, "tool_calls": [call("c2", "conversation_search", {"query": "q"})]},
        {"content": "Done."},
    )
    events, _ = run_loop(script, stream=stream)
    started = [e for e in events if isinstance(e, StepStarted)]
    done = events[-1]
    assert [e.step for e in started] == [1, 2]
    assert [[m["role"] for m in e.output] for e in started] == [
        ["assistant", "tool"], ["assistant", "tool", "assistant", "tool"]]
    assert started[1].output == [m.data for m in done.messages][:4]
    assert started[0].created == started[1].created == done.created == 1


@pytest.mark.parametrize("stream", [False, True])
def test_text_beside_a_memory_call_is_an_internal_step_not_the_answer(stream):
    script = Script(
        {"content": "Let me note that.", "tool_calls": [
            call("c1", "core_memory_append", {"label": "human", "content": "x"})]},
        {"content": "Done."},
    )
    events, _ = run_loop(script, stream=stream)
    done = events[-1]
    assert done.reply["content"] == "Done."
    side = done.messages[0]
    assert side.data["content"] == "Let me note that." and side.visible is False
    assert done.messages[-1].data["content"] == "Done." and done.messages[-1].visible
    if stream:  # plain chat streams at once: text already sent beside the call stays sent
        assert streamed_text(events) == "Let me note that.\n\nDone."


@pytest.mark.parametrize("stream", [False, True])
def test_with_response_format_only_the_final_step_reaches_the_client(stream):
    answer = '{"name": "Ada"}'
    script = Script(
        {"content": answer, "tool_calls": [
            call("c1", "core_memory_append", {"label": "human", "content": "Name: Ada"})]},
        {"content": answer},
    )
    body = {"response_format": {"type": "json_schema", "json_schema": {"name": "p"}}}
    events, _ = run_loop(script, stream=stream, extra=body)
    done = events[-1]
    assert done.reply["content"] == answer
    assert done.messages[0].data["content"] == answer and not done.messages[0].visible
    if stream:
        assert streamed_text(events) == answer


@pytest.mark.parametrize("stream", [False, True])
def test_client_tool_calls_end_the_turn_and_memory_calls_are_hidden(stream):
    script = Script(
        {"content": None, "tool_calls": [
            call("m1", "core_memory_append", {"label": "human", "content": "likes rain"}),
            call("k1", "get_weather", {"city": "Oslo"})]},
    )
    events, memory = run_loop(script, stream=stream, tools=[CLIENT_TOOL])
    done = events[-1]
    assert done.finish_reason == "tool_calls"
    assert [c["function"]["name"] for c in done.reply["tool_calls"]] == ["get_weather"]
    assert memory.blocks["human"].value == "likes rain"
    stored = done.messages
    assert stored[0].visible and len(stored[0].data["tool_calls"]) == 2
    assert stored[1].data == {"role": "tool", "tool_call_id": "m1", "content": stored[1].data["content"]}
    if stream:
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert {d.index for d in deltas} == {0}
        assert deltas[0].name == "get_weather" and deltas[0].id == "k1"
        assert json.loads("".join(d.arguments for d in deltas)) == {"city": "Oslo"}


@pytest.mark.parametrize("stream", [False, True])
def test_max_steps_forces_a_text_answer(stream):
    looping = {"content": None, "tool_calls": [
        call("c", "archival_memory_search", {"query": "x"})]}
    script = Script(looping, looping, {"content": "giving up", "tool_calls": looping["tool_calls"]})
    events, _ = run_loop(script, stream=stream, max_steps=3)
    done = events[-1]
    assert done.steps == 3
    assert script.bodies[2]["tool_choice"] == "none"
    assert done.reply == {"role": "assistant", "content": "giving up"}
    assert "tool_calls" not in done.messages[-1].data


def test_a_client_tool_named_like_a_memory_tool_stays_the_clients():
    own = {"type": "function", "function": {"name": "conversation_search", "parameters": {}}}
    script = Script({"content": None, "tool_calls": [call("k", "conversation_search", {"query": "q"})]})
    events, _ = run_loop(script, stream=False, tools=[own])
    done = events[-1]
    assert done.finish_reason == "tool_calls"
    names = [t["function"]["name"] for t in script.bodies[0]["tools"]]
    assert names.count("conversation_search") == 1


# -- model output faults (docs/resilience.md) -------------------------------------------------


def streamed_text(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def pairs_are_complete(messages):
    """Every stored tool call has exactly one result, and every result answers a call."""
    calls = [c["id"] for m in messages for c in m.data.get("tool_calls") or []]
    results = [m.data["tool_call_id"] for m in messages if m.data["role"] == "tool"]
    return sorted(calls) == sorted(results)


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_tool_is_answered_with_an_error_not_returned_to_the_client(stream):
    script = Script(
        {"content": None, "tool_calls": [call("u1", "launch_rockets", {"count": 3})]},
        {"content": "Sorry, I cannot do that."},
    )
    events, _ = run_loop(script, stream=stream, tools=[CLIENT_TOOL])
    done = events[-1]
    assert done.reply == {"role": "assistant", "content": "Sorry, I cannot do that."}
    assert done.finish_reason == "stop"
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    result = script.bodies[1]["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == "u1"
    assert "no tool named 'launch_rockets'" in result["content"]
    assert "get_weather" in result["content"] and "core_memory_append" in result["content"]
    assert [m.visible for m in done.messages] == [False, False, True]
    assert done.tool_calls == {"unknown:error": 1}  # the made-up name is not a metrics label


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_tool_beside_a_client_tool_is_hidden_and_answered(stream):
    script = Script({"content": None, "tool_calls": [
        call("u1", "made_up", {}), call("k1", "get_weather", {"city": "Oslo"})]})
    events, _ = run_loop(script, stream=stream, tools=[CLIENT_TOOL])
    done = events[-1]
    assert done.finish_reason == "tool_calls"
    assert [c["id"] for c in done.reply["tool_calls"]] == ["k1"]
    stored_call, stored_result = done.messages
    assert [c["id"] for c in stored_call.data["tool_calls"]] == ["u1", "k1"]
    assert stored_result.data["tool_call_id"] == "u1"  # k1 is answered by the client
    if stream:
        assert {e.id for e in events if isinstance(e, ToolCallDelta)} == {"k1", None}


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_memory_tool_arguments_go_back_to_the_model(stream):
    broken = {"id": "c1", "type": "function",
              "function": {"name": "core_memory_append", "arguments": '{"label": "human", '}}
    script = Script({"content": None, "tool_calls": [broken]}, {"content": "Let me retry."})
    events, memory = run_loop(script, stream=stream)
    assert events[-1].reply["content"] == "Let me retry."
    assert "not valid JSON" in script.bodies[1]["messages"][-1]["content"]
    assert memory.blocks["human"].value == ""
    assert events[-1].tool_calls == {"core_memory_append:error": 1}


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_tools_invalid_arguments_are_returned_as_the_model_made_them(stream):
    broken = {"id": "k1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Os'}}
    script = Script({"content": None, "tool_calls": [broken]})
    events, _ = run_loop(script, stream=stream, tools=[CLIENT_TOOL])
    done = events[-1]
    assert done.reply["tool_calls"][0]["function"]["arguments"] == '{"city": "Os'
    if stream:
        assert "".join(e.arguments for e in events if isinstance(e, ToolCallDelta)) == \
            '{"city": "Os'


@pytest.mark.parametrize("stream", [False, True])
def test_a_model_looping_on_tools_gets_a_final_answer_at_max_steps(stream):
    looping = {"content": None, "tool_calls": [
        call("c", "archival_memory_search", {"query": "x"})]}
    script = Script(looping, looping, looping)  # even tool_choice: none is ignored
    events, _ = run_loop(script, stream=stream, max_steps=3)
    done = events[-1]
    assert script.bodies[2]["tool_choice"] == "none" and len(script.bodies) == 3
    assert done.reply == {"role": "assistant", "content": STEPS_EXHAUSTED}
    assert done.finish_reason == "stop"
    assert pairs_are_complete(done.messages)
    assert [m.visible for m in done.messages][-1] is True
    if stream:
        assert streamed_text(events) == STEPS_EXHAUSTED


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("empty", [{"content": ""}, {"content": None}, {"_no_choices": True}])
def test_an_empty_answer_is_asked_for_once_more(stream, empty):
    script = Script(empty, {"content": "Here I am."})
    events, _ = run_loop(script, stream=stream)
    done = events[-1]
    assert done.reply["content"] == "Here I am." and done.steps == 2
    assert len(script.bodies) == 2 and script.bodies[0] == script.bodies[1]
    assert [m.data["content"] for m in done.messages] == ["Here I am."]


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_empty_twice_is_a_502(stream):
    script = Script({"content": ""}, {"_no_choices": True})
    with pytest.raises(UpstreamError) as info:
        run_loop(script, stream=stream)
    assert info.value.status == 502 and info.value.code == "empty_response"
    validate_error(info.value.body)


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_answer_after_text_ends_with_that_text(stream):
    script = Script(
        {"content": "Noting that.", "tool_calls": [
            call("c1", "core_memory_append", {"label": "human", "content": "x"})]},
        {"content": ""}, {"content": ""},
    )
    events, _ = run_loop(script, stream=stream)
    assert events[-1].reply["content"] == "Noting that."
    if stream:
        assert streamed_text(events) == "Noting that."


@pytest.mark.parametrize("finish", ["length", "content_filter"])
def test_an_empty_answer_cut_by_length_or_filter_is_an_answer(finish):
    script = Script({"content": "", "_finish": finish})
    events, _ = run_loop(script, stream=False)
    done = events[-1]
    assert done.reply["content"] == "" and done.finish_reason == finish
    assert len(script.bodies) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_internal_calls_without_an_id_get_one(stream):
    nameless = {"id": "", "type": "function", "function": {
        "name": "core_memory_append", "arguments": json.dumps({"label": "human", "content": "y"})}}
    script = Script({"content": None, "tool_calls": [nameless]}, {"content": "ok"})
    events, _ = run_loop(script, stream=stream)
    done = events[-1]
    call_id = done.messages[0].data["tool_calls"][0]["id"]
    assert call_id and done.messages[1].data["tool_call_id"] == call_id
    assert pairs_are_complete(done.messages)


def test_a_spent_deadline_stops_before_the_next_step():
    script = Script({"content": "never"})
    with pytest.raises(UpstreamError) as info:
        run_loop(script, stream=False, route=Route(deadline=time.monotonic() - 1))
    assert info.value.code == "deadline_exceeded" and script.bodies == []


def test_the_route_reaches_every_upstream_call():
    seen = []

    class Recording(Script):
        async def chat(self, body, *, api_key, route=None):
            seen.append(route)
            return await super().chat(body, api_key=api_key)

    route = Route.within(60)
    script = Recording({"content": None, "tool_calls": [
        call("c1", "core_memory_append", {"label": "human", "content": "z"})]}, {"content": "ok"})
    run_loop(script, stream=False, route=route)
    assert seen == [route, route]


# -- issue #17: the memory path passes everything through ------------------------------------

DETAILED = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 1}}


@pytest.mark.parametrize("stream", [False, True])
def test_every_field_of_the_final_step_reaches_the_client(stream):
    citations = [{"type": "url_citation", "url_citation": {"url": "https://x.example"}}]
    script = Script(
        {"content": None, "reasoning_content": "save it", "_usage": DETAILED,
         "tool_calls": [call("c1", "core_memory_append", {"label": "human", "content": "A"})]},
        {"content": "Hi Ada.", "reasoning_content": "greet", "annotations": citations,
         "_logprobs": {"content": [{"token": "Hi Ada.", "logprob": -0.5}]},
         "_usage": DETAILED, "_envelope": {"service_tier": "flex", "system_fingerprint": "fp1"}},
    )
    events, _ = run_loop(script, stream=stream)
    done = events[-1]
    assert done.reply["content"] == "Hi Ada."
    assert done.reply["reasoning_content"] == "greet"
    assert done.reply["annotations"] == citations
    assert done.logprobs["content"][0]["logprob"] == -0.5
    assert done.envelope == {"service_tier": "flex"} and done.system_fingerprint == "fp1"
    assert done.usage == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24,
                          "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 2}}
    stored = [m.data for m in done.messages]
    assert all("reasoning_content" not in m and "annotations" not in m for m in stored)
    # within the turn the reasoning of the memory step goes back with its call
    assert script.bodies[1]["messages"][-2]["reasoning_content"] == "save it"
    if stream:
        fields = [e.fields for e in events if isinstance(e, TextDelta) and e.fields]
        assert {"reasoning_content": "greet"} in fields
        assert [e.logprobs for e in events if isinstance(e, TextDelta) and e.logprobs]


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
OTHER = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
FORCED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["required", FORCED])
def test_a_required_client_call_lets_memory_steps_run_first(stream, choice):
    script = Script(
        {"content": None, "tool_calls": [
            call("c1", "core_memory_append", {"label": "human", "content": "A"})]},
        {"content": None, "tool_calls": [call("k1", "get_weather", {"city": "Oslo"})]},
    )
    events, memory = run_loop(script, stream=stream, tools=[WEATHER, OTHER],
                              extra={"tool_choice": choice})
    done = events[-1]
    assert memory.blocks["human"].value == "A"
    assert done.finish_reason == "tool_calls"
    assert [c["id"] for c in done.reply["tool_calls"]] == ["k1"]
    first = script.bodies[0]
    assert first["tool_choice"] == "required"
    names = {t["function"]["name"] for t in first["tools"]}
    assert "core_memory_append" in names and "get_weather" in names
    assert ("get_time" in names) == (choice == "required")


@pytest.mark.parametrize("choice", ["required", FORCED])
def test_the_last_step_offers_only_what_the_client_required(choice):
    script = Script(
        {"content": None, "tool_calls": [
            call("c1", "core_memory_append", {"label": "human", "content": "A"})]},
        {"content": None, "tool_calls": [call("k1", "get_weather", {})]},
    )
    events, _ = run_loop(script, stream=False, tools=[WEATHER], max_steps=2,
                         extra={"tool_choice": choice})
    last = script.bodies[1]
    assert last["tool_choice"] == choice
    assert [t["function"]["name"] for t in last["tools"]] == ["get_weather"]
    assert events[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_text_where_a_call_was_required_is_asked_again_then_an_error(stream):
    script = Script({"content": "I'd rather talk."}, {"content": "Still talking."})
    with pytest.raises(UpstreamError) as info:
        run_loop(script, stream=stream, tools=[WEATHER], max_steps=2,
                 extra={"tool_choice": "required"})
    assert info.value.status == 502 and info.value.code == "tool_choice_not_satisfied"
    validate_error(info.value.body)
    assert script.bodies[1]["messages"][-1] == {"role": "assistant",
                                                "content": "I'd rather talk."}


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_functions_are_client_tools(stream):
    script = Script(
        {"content": None, "tool_calls": [
            call("c1", "core_memory_append", {"label": "human", "content": "A"})]},
        {"content": None, "tool_calls": [call("k1", "get_weather", {"city": "Oslo"})]},
    )
    legacy = {"functions": [{"name": "get_weather", "parameters": {}}],
              "function_call": {"name": "get_weather"}}
    events, _ = run_loop(script, stream=stream, extra=legacy)
    done = events[-1]
    assert done.finish_reason == "function_call" and done.legacy_functions
    assert done.reply["function_call"] == {"name": "get_weather",
                                           "arguments": json.dumps({"city": "Oslo"})}
    assert "tool_calls" not in done.reply
    first = script.bodies[0]
    assert "functions" not in first and "function_call" not in first
    assert first["tool_choice"] == "required"
    assert done.messages[-1].data["function_call"]["name"] == "get_weather"


def test_nothing_where_a_call_was_required_is_not_stored_and_asked_again():
    script = Script({"content": "Thinking."}, {"content": ""}, {"content": ""},
                    {"content": None, "tool_calls": [call("k1", "get_weather", {})]})
    events, _ = run_loop(script, stream=False, tools=[WEATHER], max_steps=4,
                         extra={"tool_choice": "required"})
    done = events[-1]
    assert done.finish_reason == "tool_calls"
    assert [m.data.get("content") for m in done.messages] == ["Thinking.", None]
    assert all(m["content"] for m in script.bodies[-1]["messages"] if m["role"] == "assistant")
