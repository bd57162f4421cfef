"""openai-python's Responses API against a real memproxy over the scripted upstream (issue #16),
on SQLite and Postgres: `responses.create` (string and item input, streamed, `.parse`), chains
of `previous_response_id` across a restart, a client function-call round trip, and memory kept
across separate responses for one agent.

Every Response object and streamed event the client receives is validated against the vendored
OpenAI description (the `spec` fixture, tests/responses_check.py). Stored responses, the
Conversations API, tenants, background responses and errors: test_responses_stored.py.
"""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from tests.e2e import responses_helpers as rh
from tests.e2e.responses_helpers import (
    MODEL,
    TOOL,
    TOOL_PROMPT,
    agent_url,
    chat,
    client,
    dialogue,
    echo,
    system_text,
)
from tests.fakes import Reply, scripted_model
from tests.fakes.upstream import prompt_tokens
from tests.prompt_check import normal, visible
from tests.servers import run_concurrently

spec = rh.spec

STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def squeeze(types: list[str]) -> list[str]:
    """Event types with runs of the same type collapsed (deltas come many at a time)."""
    return [t for i, t in enumerate(types) if i == 0 or types[i - 1] != t]


def test_create_with_a_string_and_with_items(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)

    first = oa.responses.create(model=MODEL, input="Hello there", instructions="Be brief.")
    assert first.id.startswith("resp_") and first.object == "response"
    assert first.status == "completed" and first.model == MODEL
    assert first.output_text == echo("Hello there", 1)
    assert [item.type for item in first.output] == ["message"]
    message = first.output[0]
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert [part.type for part in message.content] == ["output_text"]
    assert first.instructions == "Be brief." and first.previous_response_id is None
    sent = fake_upstream.last.json
    assert chat(sent) == [("system", "Be brief."), ("user", "Hello there")]
    assert sent["model"] == MODEL and not sent.get("stream")
    assert first.usage.input_tokens == prompt_tokens(sent)
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens

    second = oa.responses.create(model=MODEL, temperature=0.5, max_output_tokens=200, input=[
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello! How can I help?"}]},
        {"type": "message", "role": "user", "content": "Tell me more"},
    ])
    assert second.output_text == echo("Tell me more", 2)
    sent = fake_upstream.last.json
    assert chat(sent) == [("developer", "Answer in English."), ("user", "Hi"),
                          ("assistant", "Hello! How can I help?"), ("user", "Tell me more")]
    assert sent["temperature"] == 0.5 and sent["max_tokens"] == 200
    assert second.temperature == 0.5 and second.max_output_tokens == 200
    assert len(spec.checked("Response")) == 2


def test_streamed_events_in_order(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    events = list(oa.responses.create(model=MODEL, input="Stream a short answer please",
                                      stream=True))
    types = [e.type for e in events]
    assert squeeze(types) == STREAM_ORDER, types
    assert types.count("response.output_text.delta") > 1  # streamed, not one lump
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0, numbers
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == echo("Stream a short answer please", 1)
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text
    final = events[-1].response
    assert final.status == "completed" and final.output_text == text
    item = next(e for e in events if e.type == "response.output_item.added").item
    assert final.output[0].id == item.id and done.item_id == item.id
    assert events[0].response.status == "in_progress" and events[0].response.id == final.id
    assert fake_upstream.last.json["stream"] is True
    assert final.usage.input_tokens == prompt_tokens(fake_upstream.last.json)
    # the stored response is what the stream ended with
    assert oa.responses.retrieve(final.id).model_dump() == final.model_dump()
    # the SDK's own stream helper accumulates the same answer
    with oa.responses.stream(model=MODEL, input="Once more") as stream:
        helper_types = [event.type for event in stream]
        accumulated = stream.get_final_response()
    assert squeeze(helper_types) == STREAM_ORDER
    assert accumulated.output_text == echo("Once more", 1)
    assert len(spec.streams) == 2 and all(s.events for s in spec.streams)


class Person(BaseModel):
    name: str
    age: int


def test_parse_with_a_pydantic_schema(make_proxy, fake_upstream, spec):
    def structured(body: dict) -> Reply:
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return Reply(content=json.dumps({"name": "Ada Lovelace", "age": 36}))
        return scripted_model(body)

    fake_upstream.responder = structured
    proxy = make_proxy()
    oa = client(proxy, spec)
    parsed = oa.responses.parse(model=MODEL, input="Who wrote the first program?",
                                text_format=Person)
    assert parsed.output_parsed == Person(name="Ada Lovelace", age=36)
    sent = fake_upstream.last.json["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Person" and sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"]["properties"].keys() == {"name", "age"}
    assert parsed.text.format.type == "json_schema" and parsed.text.format.name == "Person"

    fake_upstream.responder = lambda body: Reply(content='{"ok": true}')
    plain = oa.responses.create(model=MODEL, input="json please",
                                text={"format": {"type": "json_object"}})
    assert json.loads(plain.output_text) == {"ok": True}
    assert fake_upstream.last.json["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("agent", [None, "chain-agent"])
def test_a_chain_of_ten_across_a_restart(make_proxy, fake_upstream, spec, agent):
    """Ten responses, each continuing the last by `previous_response_id`, the server restarted
    on the same database after five, every other one streamed: each time the upstream is sent
    the whole history (earlier inputs and outputs, oldest first) and only the current
    request's instructions. Without an agent that is the whole prompt; on an agent's base URL
    it follows memproxy's system prompt (the memory blocks)."""
    proxy = make_proxy()

    def open_client(proxy):
        return client(proxy, spec, base_url=agent_url(proxy, agent) if agent else None)

    oa = open_client(proxy)
    history: list[tuple[str, str]] = []
    ids: list[str] = []
    previous = None
    for i in range(10):
        if i == 5:
            proxy.stop()
            proxy = make_proxy()  # the same database
            oa = open_client(proxy)
        text = f"Message {i}"
        kwargs = dict(model=MODEL, input=text, instructions=f"Instructions {i}",
                      previous_response_id=previous)
        if i % 2:
            with oa.responses.stream(**kwargs) as stream:
                for _ in stream:
                    pass
                response = stream.get_final_response()
        else:
            response = oa.responses.create(**kwargs)
        sent = fake_upstream.last.json
        if agent is None:
            assert chat(sent) == [("system", f"Instructions {i}"), *history, ("user", text)], i
        else:
            assert dialogue(sent) == [*history, ("user", text)], i
            system = system_text(sent)
            assert f"Instructions {i}" in system and f"Instructions {i - 1}" not in system
        assert response.output_text == echo(text, i + 1)
        assert response.previous_response_id == previous
        history += [("user", text), ("assistant", response.output_text)]
        previous = response.id
        ids.append(previous)
    assert len(fake_upstream.requests) == 10
    # the first response of the chain, stored before the restart, is still there
    first = oa.responses.retrieve(ids[0])
    assert first.output_text == echo("Message 0", 1) and first.instructions == "Instructions 0"


def test_concurrent_continuations_of_one_response_on_an_agent(make_proxy, fake_upstream, spec):
    """Four clients continue the same response at once (four branches): each upstream prompt
    holds the shared history and its own input only."""
    proxy = make_proxy()
    oa = client(proxy, spec, base_url=agent_url(proxy, "fork"))
    root = oa.responses.create(model=MODEL, input="Shared start")
    answers: dict[int, str] = {}

    def branch(i: int) -> None:
        answers[i] = client(proxy, spec, base_url=agent_url(proxy, "fork")).responses.create(
            model=MODEL, input=f"Branch {i}", previous_response_id=root.id).output_text

    assert run_concurrently(4, branch) == []
    assert answers == {i: echo(f"Branch {i}", 2) for i in range(4)}
    prompts = sorted(dialogue(body) for body in fake_upstream.bodies()[1:])
    assert prompts == sorted([("user", "Shared start"), ("assistant", root.output_text),
                              ("user", f"Branch {i}")] for i in range(4))


def test_a_function_call_round_trip(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    oa = client(proxy, spec)
    first = oa.responses.create(model=MODEL, input=TOOL_PROMPT, tools=[TOOL])
    assert [item.type for item in first.output] == ["function_call"]
    call = first.output[0]
    assert call.id.startswith("fc_") and call.name == "lookup_order"
    assert json.loads(call.arguments) == {"order_id": "A17"} and call.call_id
    [offered] = fake_upstream.last.json["tools"]
    assert offered["type"] == "function"
    assert {k: offered["function"].get(k) for k in ("name", "description", "parameters")} == {
        "name": "lookup_order", "description": TOOL["description"],
        "parameters": TOOL["parameters"]}

    second = oa.responses.create(model=MODEL, previous_response_id=first.id, tools=[TOOL],
                                 input=[{"type": "function_call_output", "call_id": call.call_id,
                                         "output": "Order A17: shipped"}])
    assert second.output_text == "Tool result: Order A17: shipped"
    messages = fake_upstream.last.json["messages"]
    assert [normal(m) for m in messages] == [
        normal({"role": "user", "content": TOOL_PROMPT}),
        normal({"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function",
             "function": {"name": "lookup_order", "arguments": call.arguments}}]}),
        normal({"role": "tool", "tool_call_id": call.call_id, "content": "Order A17: shipped"}),
    ]
    # the same loop, streamed, with the client resending the items itself (no stored chain)
    events = list(oa.responses.create(model=MODEL, input=TOOL_PROMPT, tools=[TOOL],
                                      stream=True, store=False))
    types = squeeze([e.type for e in events])
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"], types
    streamed = events[-1].response.output[0]
    assert streamed.type == "function_call" and json.loads(streamed.arguments) == {
        "order_id": "A17"}
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == streamed.arguments
    again = oa.responses.create(model=MODEL, tools=[TOOL], store=False, input=[
        {"role": "user", "content": TOOL_PROMPT},
        {"type": "function_call", "call_id": streamed.call_id, "name": streamed.name,
         "arguments": streamed.arguments},
        {"type": "function_call_output", "call_id": streamed.call_id,
         "output": "Order A17: delivered"}])
    assert again.output_text == "Tool result: Order A17: delivered"


def test_memory_kept_across_separate_responses_for_one_agent(make_proxy, fake_upstream, spec):
    """At /agents/ada/v1, the model saves a fact with a memory tool in one response; a later,
    unrelated response (no previous_response_id) has it in its system prompt. The memory tool
    runs inside memproxy and never shows as an output item or event."""
    proxy = make_proxy()
    oa = client(proxy, spec, base_url=agent_url(proxy, "ada"))

    saved = oa.responses.create(model=MODEL, input="My name is Ada")
    assert saved.output_text == "Got it, I'll remember that."
    assert [item.type for item in saved.output] == ["message"]
    first, second = fake_upstream.bodies()
    assert "core_memory_append" in {t["function"]["name"] for t in first["tools"]}
    assert second["messages"][-1]["role"] == "tool"  # memproxy ran the tool itself

    asked = oa.responses.create(model=MODEL, input="What is my name?")
    assert asked.output_text == "Your name is Ada."
    assert "Name: Ada" in system_text(fake_upstream.last.json)

    events = list(oa.responses.create(model=MODEL, stream=True,
                                      input="Replace memory: Name: Ada => Name: Ada Lovelace"))
    assert not any("function_call" in e.type for e in events), [e.type for e in events]
    final = events[-1].response
    assert [item.type for item in final.output] == ["message"]
    assert final.output_text == "Got it, I'll remember that."

    later = client(proxy, spec, base_url=agent_url(proxy, "ada")).responses.create(
        model=MODEL, input="What is my name?")
    assert later.output_text == "Your name is Ada Lovelace."
    # another agent knows nothing of it
    other = client(proxy, spec, base_url=agent_url(proxy, "bob")).responses.create(
        model=MODEL, input="What is my name?")
    assert other.output_text == "I don't know your name."
    assert "Ada" not in json.dumps(fake_upstream.last.json)


def test_a_chain_on_an_agent_keeps_history_and_memory(make_proxy, fake_upstream, spec):
    """previous_response_id on an agent's base URL: the chain's history reaches the upstream
    once, after the agent's memory."""
    proxy = make_proxy()
    oa = client(proxy, spec, base_url=agent_url(proxy, "chainer"))
    one = oa.responses.create(model=MODEL, input="My name is Grace")
    two = oa.responses.create(model=MODEL, input="Hello again", previous_response_id=one.id)
    assert two.output_text == echo("Hello again", 2)
    # the client-visible part of the prompt (memproxy's own memory-tool steps aside)
    assert visible(fake_upstream.last.json["messages"]) == [
        normal({"role": "user", "content": "My name is Grace"}),
        normal({"role": "assistant", "content": one.output_text}),
        normal({"role": "user", "content": "Hello again"})]
    assert "Name: Grace" in system_text(fake_upstream.last.json)


def test_an_older_previous_response_id_branches_on_an_agent(make_proxy, fake_upstream, spec):
    """Continuing from an earlier response of a chain (a regenerate, an edit) shows the upstream
    only that branch's history, and the abandoned branch stays retrievable."""
    proxy = make_proxy()
    oa = client(proxy, spec, base_url=agent_url(proxy, "brancher"))
    root = oa.responses.create(model=MODEL, input="Plan a trip")
    oslo = oa.responses.create(model=MODEL, input="To Oslo", previous_response_id=root.id)
    more = oa.responses.create(model=MODEL, input="In June", previous_response_id=oslo.id)
    bergen = oa.responses.create(model=MODEL, input="To Bergen", previous_response_id=root.id)
    assert visible(fake_upstream.last.json["messages"]) == [
        normal({"role": "user", "content": "Plan a trip"}),
        normal({"role": "assistant", "content": root.output_text}),
        normal({"role": "user", "content": "To Bergen"})]
    assert bergen.output_text == echo("To Bergen", 2)
    back = oa.responses.create(model=MODEL, input="In July", previous_response_id=more.id)
    assert [t for r, t in chat(fake_upstream.last.json) if r == "user"] == [
        "Plan a trip", "To Oslo", "In June", "In July"]
    assert back.output_text == echo("In July", 4)
    assert oa.responses.retrieve(oslo.id).output_text == oslo.output_text


def test_a_conversation_on_an_agent_keeps_items_and_memory(make_proxy, fake_upstream, spec):
    """The Conversations API on an agent's base URL: the conversation's items are the history,
    the agent's memory is in the system prompt, and memory-tool steps are not items."""
    proxy = make_proxy()
    oa = client(proxy, spec, base_url=agent_url(proxy, "conv-agent"))
    conversation = oa.conversations.create()
    saved = oa.responses.create(model=MODEL, input="My name is Lin", conversation=conversation.id)
    assert saved.output_text == "Got it, I'll remember that."
    items = list(oa.conversations.items.list(conversation.id, order="asc"))
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "assistant")]
    asked = oa.responses.create(model=MODEL, input="What is my name?",
                                conversation=conversation.id)
    assert asked.output_text == "Your name is Lin."
    assert visible(fake_upstream.last.json["messages"]) == [
        normal({"role": "user", "content": "My name is Lin"}),
        normal({"role": "assistant", "content": saved.output_text}),
        normal({"role": "user", "content": "What is my name?"})]
    assert len(list(oa.conversations.items.list(conversation.id))) == 4
    # the agent's memory outlives the conversation: a new one knows the name too
    fresh = oa.responses.create(model=MODEL, input="What is my name?",
                                conversation=oa.conversations.create().id)
    assert fresh.output_text == "Your name is Lin."


def test_a_conversation_base_url_serves_responses(make_proxy, fake_upstream, spec):
    """`/agents/{a}/conversations/{c}/v1` names the memproxy conversation as well: responses
    there run in it (its stored history precedes a plain input)."""
    proxy = make_proxy()
    base = f"{proxy.url}/agents/cb/conversations/trip/v1"
    oa = client(proxy, spec, base_url=base)
    one = oa.responses.create(model=MODEL, input="Hello")
    two = oa.responses.create(model=MODEL, input="Hello again", previous_response_id=one.id)
    assert two.output_text == echo("Hello again", 2)
    assert oa.responses.retrieve(one.id).id == one.id
    response = proxy.http().get("/v1/agents/cb/context", params={"conversation": "trip"},
                                headers={"authorization": f"Bearer {rh.secrets.CLIENT_KEY}"})
    assert response.status_code == 200 and response.json()["messages_in_context"] == 4
