"""Responses streaming events written from chat deltas (pure): every event validates against
`ResponseStreamEvent`, sequence numbers count from 0, each item is added, filled and done once,
and the terminal event's response lists the items the stream announced."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.responses import (
    EventWriter,
    encode,
    items_to_messages,
    new_id,
    output_items,
    replay,
    response_object,
    usage_from_chat,
)
from tests.openapi_check import validate_response, validate_response_event

REQUEST = {"model": "m", "input": "x",
           "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}


def start(response_id: str) -> dict:
    return response_object(REQUEST, response_id=response_id, created_at=1_700_000_000,
                           status="in_progress", output=[])


def final(response_id: str, output: list[dict], status: str = "completed", **fields) -> dict:
    return response_object(REQUEST, response_id=response_id, created_at=1_700_000_000,
                           status=status, output=output,
                           usage=usage_from_chat({"prompt_tokens": 3, "completion_tokens": 2}),
                           **fields)


def stream(steps: list[tuple], status: str = "completed", **fields) -> tuple[list[dict], list]:
    """Drive a writer through `steps` (("text", d) / ("refusal", d) / ("call", i, id, name, a))
    the way the HTTP layer will: created, in_progress, deltas, finish."""
    writer = EventWriter()
    rid = new_id("resp")
    events = writer.created(start(rid)) + writer.in_progress(start(rid))
    for step in steps:
        if step[0] == "text":
            events += writer.text(step[1])
        elif step[0] == "refusal":
            events += writer.refusal(step[1])
        else:
            events += writer.tool_call(*step[1:])
    events += writer.finish(final(rid, [], status, **fields))
    return events, writer.output()


def check(events: list[dict]) -> None:
    """Each event validates; the numbering and the item life cycles are right."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added: dict[int, dict] = {}
    done: dict[int, dict] = {}
    for event in events:
        validate_response_event(event)
        kind = event["type"]
        if kind == "response.output_item.added":
            # a message opens when everything before it is done; function calls may be open
            # together (a chat stream interleaves their deltas), but never with a message
            assert event["output_index"] == len(added)
            still_open = [added[i]["type"] for i in set(added) - set(done)]
            if event["item"]["type"] == "message":
                assert still_open == []
            else:
                assert "message" not in still_open
            added[event["output_index"]] = event["item"]
        elif kind == "response.output_item.done":
            assert event["output_index"] in added and event["output_index"] not in done
            done[event["output_index"]] = event["item"]
        elif "output_index" in event:
            assert event["output_index"] in added and event["output_index"] not in done
            assert event.get("item_id", added[event["output_index"]]["id"]) == added[
                event["output_index"]]["id"]
    assert events[0]["type"] == "response.created"
    assert events[1]["type"] == "response.in_progress"
    terminal = events[-1]
    assert terminal["type"] in ("response.completed", "response.incomplete", "response.failed")
    assert set(done) == set(added)
    assert terminal["response"]["output"] == [done[i] for i in sorted(done)]
    validate_response(terminal["response"])


def test_text_then_a_tool_call():
    events, output = stream([("text", "Hel"), ("text", "lo"), ("call", 0, "call_1", "f", "{\"a\""),
                             ("call", 0, None, None, ":1}")])
    check(events)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    text_done = events[6]
    assert text_done["text"] == "Hello" and text_done["content_index"] == 0
    assert events[10]["output_index"] == 1
    assert events[12]["arguments"] == "{\"a\":1}" and events[12]["name"] == "f"
    message, call = output
    assert message["content"][0]["text"] == "Hello" and message["status"] == "completed"
    assert call["call_id"] == "call_1" and call["arguments"] == "{\"a\":1}"
    assert events[-1]["response"]["usage"]["total_tokens"] == 5


def test_interleaved_calls_each_get_their_item_and_late_text_its_own_message():
    events, output = stream([("call", 0, "c0", "f", "{"), ("call", 1, "c1", "g", "["),
                             ("call", 0, None, None, "}"), ("text", "after"),
                             ("call", 1, None, None, "]")])
    check(events)
    assert [(i["type"], i.get("arguments")) for i in output] == [
        ("function_call", "{}"), ("function_call", "[]"), ("message", None)]
    assert output[2]["content"][0]["text"] == "after"


def test_a_refusal_streams_as_a_refusal_part():
    events, output = stream([("text", "I "), ("refusal", "can't"), ("refusal", " do that")])
    check(events)
    assert [p["type"] for p in output[0]["content"]] == ["output_text", "refusal"]
    refusal_done = next(e for e in events if e["type"] == "response.refusal.done")
    assert refusal_done["refusal"] == "can't do that" and refusal_done["content_index"] == 1


def test_an_incomplete_answer_marks_its_items_incomplete():
    events, output = stream([("text", "trunc")], status="incomplete",
                            incomplete_details={"reason": "max_output_tokens"})
    check(events)
    assert events[-1]["type"] == "response.incomplete"
    assert output[0]["status"] == "incomplete"


def test_a_failure_closes_what_was_open_and_ends_in_response_failed():
    writer = EventWriter()
    rid = new_id("resp")
    events = writer.created(start(rid)) + writer.in_progress(start(rid)) + writer.text("par")
    events += writer.fail(response_object(
        REQUEST, response_id=rid, created_at=1, status="in_progress", output=[],
        error={"code": "server_error", "message": "the upstream failed"}))
    check(events)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed"


def test_an_error_event_validates():
    [event] = EventWriter().error("bad thing", code="server_error")
    validate_response_event(event)
    assert event["sequence_number"] == 0


def test_nothing_to_say_is_created_then_completed():
    events, output = stream([("text", "")])
    check(events)
    assert output == [] and len(events) == 3


def test_encode_is_one_sse_frame():
    [event] = EventWriter().error("x")
    frame = encode(event)
    head, data, blank = frame.split(b"\n", 2)
    assert head == b"event: error" and blank == b"\n"
    assert json.loads(data.removeprefix(b"data: ")) == event


def test_replay_of_a_stored_response_regenerates_its_stream():
    rid = new_id("resp")
    output = output_items({"content": "Hello", "refusal": "no", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    output.insert(0, {"id": "rs_1", "type": "reasoning", "summary": []})
    response = final(rid, output)
    events = replay(response)
    check(events)
    assert events[-1]["response"] == response
    assert events[0]["response"]["output"] == [] and "usage" not in events[0]["response"]
    deltas = [e["delta"] for e in events if e["type"].endswith(".delta")]
    assert deltas == ["Hello", "no", "{}"]


def test_replay_of_an_unfinished_response_has_no_terminal_event():
    events = replay(start(new_id("resp")))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"]


# -- properties ---------------------------------------------------------------------------------

fragments = st.text(max_size=6)
steps = st.lists(st.one_of(
    st.tuples(st.just("text"), fragments),
    st.tuples(st.just("refusal"), fragments),
    st.tuples(st.just("call"), st.integers(0, 2), fragments),
), max_size=12)


@settings(max_examples=40, deadline=None)
@given(steps, st.sampled_from(["completed", "incomplete"]))
def test_any_interleaving_streams_valid_events_and_keeps_every_delta(script, status):
    chat_steps = []
    named: set[int] = set()
    for step in script:
        if step[0] == "call":
            index, args = step[1], step[2]
            first = index not in named
            named.add(index)
            chat_steps.append(("call", index, f"call_{index}" if first else None,
                               f"f{index}" if first else None, args))
        else:
            chat_steps.append(step)
    events, output = stream(chat_steps, status)
    check(events)
    texts = "".join(s[1] for s in script if s[0] == "text")
    refusals = "".join(s[1] for s in script if s[0] == "refusal")
    parts = [p for i in output if i["type"] == "message" for p in i["content"]]
    assert "".join(p.get("text", "") for p in parts) == texts
    assert "".join(p.get("refusal", "") for p in parts) == refusals
    done_text = "".join(e["text"] for e in events if e["type"] == "response.output_text.done")
    assert done_text == texts
    calls = [i for i in output if i["type"] == "function_call"]
    assert [c["call_id"] for c in calls] == [f"call_{i}" for i in dict.fromkeys(
        s[1] for s in script if s[0] == "call")]
    for call in calls:
        index = int(call["call_id"].removeprefix("call_"))
        assert call["arguments"] == "".join(s[2] for s in script
                                            if s[0] == "call" and s[1] == index)
    check(replay(events[-1]["response"]))
    messages = items_to_messages(output)
    assert sum(len(m.get("tool_calls", [])) for m in messages) == len(calls)
    assert len([m for m in messages if m.get("tool_calls")]) == (1 if calls else 0)


def test_a_call_the_upstream_sent_without_an_id_gets_one():
    events, output = stream([("call", 0, None, "f", "{}")])
    check(events)
    assert output[0]["call_id"].startswith("call_")


def sdk_replay(events: list[dict]):
    """Feed the events to the official Python SDK's stream accumulator (which asserts that
    every delta lands on an item of the right type) and return what it hands the caller."""
    from openai import NOT_GIVEN
    from openai._models import construct_type
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent

    state = ResponseStreamState(input_tools=NOT_GIVEN, text_format=NOT_GIVEN)
    out = []
    for event in events:
        out += state.handle_event(construct_type(type_=ResponseStreamEvent, value=event))
    return out


def test_the_openai_sdk_accumulates_the_stream():
    events, _ = stream([("text", "Hel"), ("text", "lo"), ("call", 0, "c0", "f", "{"),
                        ("call", 1, "c1", "g", "["), ("call", 0, None, None, "}"),
                        ("text", " again"), ("call", 1, None, None, "]")])
    seen = sdk_replay(events)
    snapshots = [e.snapshot for e in seen if e.type == "response.output_text.delta"]
    assert snapshots == ["Hel", "Hello", " again"]
    completed = seen[-1].response
    assert completed.output_text == "Hello again"
    assert [(o.type, getattr(o, "arguments", None)) for o in completed.output] == [
        ("message", None), ("function_call", "{}"), ("function_call", "[]"), ("message", None)]
    replayed = sdk_replay(replay(events[-1]["response"]))
    assert replayed[-1].response.output_text == "Hello again"
