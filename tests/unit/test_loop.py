"""The agent loop's decisions, driven by a scripted upstream object (no network)."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy.core.loop import StepStarted, TextDelta, ToolCallDelta, TurnDone, TurnLoop
from proxy.core.tools import MemoryState, ToolContext
from proxy.core.types import Block


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
        message = self.messages.pop(0)
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return message, finish

    async def chat(self, body, *, api_key):
        message, finish = self._next(body)
        return {
            "id": f"up-{len(self.bodies)}", "object": "chat.completion", "created": 1,
            "model": "m-upstream",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }

    async def chat_stream(self, body, *, api_key):
        message, finish = self._next(body)
        base = {"id": f"up-{len(self.bodies)}", "object": "chat.completion.chunk",
                "created": 1, "model": "m-upstream"}

        def chunk(delta, finish_reason=None):
            return {**base, "choices": [{"index": 0, "delta": delta,
                                         "finish_reason": finish_reason}]}

        yield chunk({"role": "assistant", "content": ""})
        text = message.get("content") or ""
        for i in range(0, len(text), 3):
            yield chunk({"content": text[i : i + 3]})
        for i, c in enumerate(message.get("tool_calls") or []):
            yield chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                         "function": {"name": c["function"]["name"],
                                                      "arguments": ""}}]})
            args = c["function"]["arguments"]
            for j in range(0, len(args), 4):
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": args[j:j+4]}}]})
        yield chunk({}, finish)
        yield {**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2,
                                                "total_tokens": 12}}


def run_loop(script, *, stream, tools=None, max_steps=8):
    memory = MemoryState.of([Block("human", "", limit=100)])
    body = {"model": "m"}
    if tools:
        body["tools"] = tools
    loop = TurnLoop(upstream=script, api_key=None, body=body,
                    prompt=[{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}],
                    memory=memory, tool_context=ToolContext(NoSearch(), 1), max_steps=max_steps,
                    stream=stream)

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
def test_text_beside_a_memory_call_moves_into_the_final_reply(stream):
    script = Script(
        {"content": "Let me note that.", "tool_calls": [
            call("c1", "core_memory_append", {"label": "human", "content": "x"})]},
        {"content": "Done."},
    )
    events, _ = run_loop(script, stream=stream)
    done = events[-1]
    assert done.reply["content"] == "Let me note that.\n\nDone."
    assert done.messages[0].data["content"] is None
    if stream:
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.reply["content"]


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
