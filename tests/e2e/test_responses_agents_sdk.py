"""The OpenAI Agents SDK with its DEFAULT model (`OpenAIResponsesModel`: the Responses API)
against memproxy (issue #16), on SQLite and Postgres, the SDK's client set with
`set_default_openai_client` as its documentation says for another OpenAI-compatible server.

- a multi-turn run with a function tool: the scripted upstream calls the tool, the SDK runs it
  and sends the result back as `function_call_output`, the model answers quoting it; the next
  turn continues by `previous_response_id` (state kept by memproxy) and by the SDK's own
  `to_input_list()` (state kept by the client), streamed and not;
- memory across runs for an agent base URL (`/agents/{a}/v1`): a fact saved by a memory tool in
  one run is in the next run's system prompt, and the memory tool never reaches the SDK.

Every answer and event is validated against the OpenAI description (tests/responses_check.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import openai
import pytest

from tests import secrets
from tests.e2e import responses_helpers as rh
from tests.e2e.responses_helpers import MODEL, TOOL_PROMPT, agent_url, system_text
from tests.prompt_check import normal
from tests.responses_check import SpecLog

spec = rh.spec
INSTRUCTIONS = "You look up orders for the user."


@pytest.fixture
def sdk() -> Iterator[Any]:
    """The `agents` package with tracing off; its default client restored afterwards."""
    import agents
    from agents.models import _openai_shared

    before = _openai_shared.get_default_openai_client()
    agents.set_tracing_disabled(True)  # no trace export to the internet
    try:
        yield agents
    finally:
        _openai_shared.set_default_openai_client(before)


def run(sdk: Any, spec: SpecLog, base_url: str,
        program: Callable[[], Awaitable[Any]]) -> Any:
    """Run `program` with the SDK's default client pointing at `base_url`."""
    async def main() -> Any:
        client = openai.AsyncOpenAI(base_url=base_url, api_key=secrets.CLIENT_KEY,
                                    max_retries=0, timeout=30.0,
                                    http_client=spec.async_http_client(timeout=30.0))
        sdk.set_default_openai_client(client, use_for_tracing=False)
        try:
            return await program()
        finally:
            await client.close()

    return asyncio.run(main())


def orders_agent(sdk: Any, looked_up: list[str], results: list[str]) -> Any:
    @sdk.function_tool
    def lookup_order(order_id: str) -> str:
        """The status of an order."""
        looked_up.append(order_id)
        return results[len(looked_up) - 1]

    return sdk.Agent(name="orders", instructions=INSTRUCTIONS, model=MODEL,
                     tools=[lookup_order])


def test_multi_turn_run_with_a_function_tool(make_proxy, fake_upstream, spec, sdk):
    proxy = make_proxy()
    looked_up: list[str] = []
    results = ["Order A17: shipped", "Order A17: delivered", "Order A17: returned"]
    agent = orders_agent(sdk, looked_up, results)

    async def program() -> tuple[Any, Any, Any]:
        first = await sdk.Runner.run(agent, TOOL_PROMPT)
        second = await sdk.Runner.run(agent, TOOL_PROMPT,
                                      previous_response_id=first.last_response_id)
        streamed = sdk.Runner.run_streamed(
            agent, second.to_input_list() + [{"role": "user", "content": TOOL_PROMPT}])
        async for _event in streamed.stream_events():
            pass
        return first, second, streamed

    first, second, third = run(sdk, spec, proxy.base_url, program)
    assert looked_up == ["A17", "A17", "A17"]
    assert first.final_output == "Tool result: Order A17: shipped"
    assert second.final_output == "Tool result: Order A17: delivered"
    assert third.final_output == "Tool result: Order A17: returned"
    bodies = fake_upstream.bodies()
    assert len(bodies) == 6  # two model calls a turn: the tool call, the answer
    assert all(system_text(b) == INSTRUCTIONS for b in bodies)

    def shape(body: dict) -> list[tuple[str, str]]:
        """(role, text or called tool / result) of each non-system message."""
        out = []
        for m in body["messages"]:
            if m["role"] in ("system", "developer"):
                continue
            calls = [c["function"]["name"] for c in m.get("tool_calls") or []]
            out.append((m["role"], ",".join(calls) if calls else normal(m)[1]))
        return out

    turn = [("user", TOOL_PROMPT), ("assistant", "lookup_order")]
    assert shape(bodies[1]) == [*turn, ("tool", results[0])]
    done_1 = [*turn, ("tool", results[0]), ("assistant", first.final_output)]
    # turn 2 continues the stored chain: the upstream sees turn 1 whole, tool steps included
    assert shape(bodies[2]) == [*done_1, ("user", TOOL_PROMPT)]
    assert shape(bodies[3]) == [*done_1, *turn, ("tool", results[1])]
    # turn 3 resends turn 2 itself (to_input_list), streamed, without a previous response
    done_2 = [*turn, ("tool", results[1]), ("assistant", second.final_output)]
    assert shape(bodies[4]) == [*done_2, ("user", TOOL_PROMPT)]
    assert shape(bodies[5]) == [*done_2, *turn, ("tool", results[2])]
    # each tool result answers the call the model made just before it
    for body in bodies[1::2]:
        call = next(m for m in reversed(body["messages"]) if m.get("tool_calls"))
        assert body["messages"][-1]["tool_call_id"] == call["tool_calls"][0]["id"]
    assert spec.streams and spec.streams[-1].types[-1] == "response.completed"
    assert len(spec.checked("Response")) >= 4


def test_memory_across_runs_for_an_agent(make_proxy, fake_upstream, spec, sdk):
    proxy = make_proxy()
    assistant = sdk.Agent(name="assistant", instructions="You are a helpful assistant.",
                          model=MODEL)

    async def program() -> tuple[Any, Any]:
        saved = await sdk.Runner.run(assistant, "My name is Ada")
        asked = await sdk.Runner.run(assistant, "What is my name?")
        return saved, asked

    saved, asked = run(sdk, spec, agent_url(proxy, "ada-sdk"), program)
    assert saved.final_output == "Got it, I'll remember that."
    assert [item.type for item in saved.new_items] == ["message_output_item"]
    assert asked.final_output == "Your name is Ada."
    assert "Name: Ada" in system_text(fake_upstream.last.json)
    assert "You are a helpful assistant." in system_text(fake_upstream.last.json)

    async def elsewhere() -> Any:
        return await sdk.Runner.run(assistant, "What is my name?")

    other = run(sdk, spec, agent_url(proxy, "someone-else"), elsewhere)
    assert other.final_output == "I don't know your name."


def test_runs_in_a_server_side_conversation(make_proxy, fake_upstream, spec, sdk):
    """Two ways the SDK keeps a conversation on the server: `OpenAIConversationsSession` (the
    SDK reads and writes the Conversations API's items itself) and `conversation_id` (each
    response names the conversation, which memproxy appends to)."""
    proxy = make_proxy()
    looked_up: list[str] = []
    agent = orders_agent(sdk, looked_up, ["Order A17: shipped", "Order A17: delivered"])

    async def program() -> tuple[Any, Any, list[Any], str]:
        session = sdk.OpenAIConversationsSession()
        first = await sdk.Runner.run(agent, TOOL_PROMPT, session=session)
        second = await sdk.Runner.run(agent, "Hello again", session=session)
        stored = await session.get_items()
        client = sdk.models._openai_shared.get_default_openai_client()
        conversation = await client.conversations.create()
        await sdk.Runner.run(agent, TOOL_PROMPT, conversation_id=conversation.id)
        return first, second, stored, conversation.id

    first, second, stored, conversation_id = run(sdk, spec, proxy.base_url, program)
    assert first.final_output == "Tool result: Order A17: shipped"
    assert second.final_output.startswith("Echo: Hello again")
    # the second run's prompt held the first run whole, tool steps included
    roles = [m["role"] for m in fake_upstream.bodies()[2]["messages"] if m["role"] != "system"]
    assert roles == ["user", "assistant", "tool", "assistant", "user"], roles
    assert len(stored) >= 5
    assert looked_up == ["A17", "A17"]
    assert fake_upstream.last.json["messages"][-1]["role"] == "tool"
    assert spec.checked("ConversationItemList") and spec.checked("ConversationResource")
    assert conversation_id.startswith("conv_")
