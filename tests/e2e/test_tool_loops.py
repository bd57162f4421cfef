"""Agent frameworks running a client-side tool loop against memproxy, twice, without a
conversation id (issue #15, symptom 5).

Each framework runs the same program twice against an agent that already has SDK-style
history in its `default` conversation: one client tool, the model calls it, the framework
sends the result back (user, assistant tool call, tool result) and the model answers quoting
it. What broke: the follow-up was filed under a new `chat-<hash>` conversation, and on the
second run it matched that old conversation by its first exchange, so the model saw
"(no result: ...)" instead of the tool's real result and answered wrongly, silently.

The scripted upstream (tests/fakes) calls `lookup_order` for the prompt and answers a tool
result with "Tool result: <the result it was shown>". Each run's tool returns a different
text, so a stale or missing result cannot pass. After every request the upstream's prompt
must show the conversation's path and then the client's messages, once each
(tests/prompt_check.py).

The Vercel AI SDK runs the same check from Node: test_tool_loops_node.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai

from tests import secrets
from tests.fakes import Reply, message_text, scripted_model
from tests.prompt_check import ClientLog, Exchange, assert_no_stand_in, check_exchange, normal

MODEL = "gpt-4o-mini"
PROMPT = 'Use tool lookup_order with {"order_id": "A17"}'
RESULTS = ("Order A17: shipped, tracking TRK-1111", "Order A17: delivered, signed by KIM-2222")
SEED = ("Hello there", "How are you today?")


def seed(proxy, log: ClientLog, agent: str) -> list[tuple]:
    """Two plain SDK-style turns in the agent's default conversation; returns its path."""
    client = proxy.client(http_client=log.sync_client(timeout=30),
                          default_headers={"X-Agent-Id": agent})
    path: list[tuple] = []
    for text in SEED:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}])
        exchange = log.exchanges[-1]
        check_exchange(exchange, path)
        path += exchange.client_messages
        path.append(normal({"role": "assistant", "content": reply.choices[0].message.content}))
    return path


def check_run(run: list[Exchange], path: list[tuple], result: str, final: str,
              problems: list[str], requests: int = 2) -> list[tuple]:
    """One program run: each request's prompt shows the path then the client's messages, the
    upstream saw the run's real tool result and no stand-in, the answer quotes it. Failures go
    to `problems` (so one test reports every run); returns the path after the run."""
    assert len(run) == requests, [e.client_messages for e in run]
    checks = [lambda e=e: check_exchange(e, path) for e in run]
    checks += [lambda e=e: in_default(e) for e in run]
    checks += [lambda e=e: assert_no_stand_in(e.upstream) for e in run]
    follow_up = run[-1]
    call_id = follow_up.body["messages"][-1].get("tool_call_id")

    def saw_the_result() -> None:
        shown = [m for m in follow_up.upstream[-1]["messages"]
                 if m.get("role") == "tool" and m.get("tool_call_id") == call_id]
        assert [message_text(m) for m in shown] == [result], (
            f"the upstream was not shown the run's tool result {result!r}: {shown!r}")

    def answered_with_it() -> None:
        assert final == f"Tool result: {result}", final
        assert "x-memproxy-replayed" not in follow_up.headers

    for check in [saw_the_result, answered_with_it, *checks]:
        try:
            check()
        except AssertionError as exc:
            problems.append(f"run with result {result!r}: {exc}")
    return path + follow_up.client_messages + [normal({"role": "assistant", "content": final})]


def in_default(exchange: Exchange) -> None:
    """A request without a conversation id continuing the default conversation's path (the
    tool-loop follow-up included) belongs to `default`."""
    conversation = exchange.headers.get("x-memproxy-conversation-id")
    assert conversation == "default", (
        f"{exchange.client_messages!r} was filed under conversation {conversation!r}")


def run_twice(program, path: list[tuple], log: ClientLog, requests: int = 2) -> None:
    """Run `program(result)` once per result of RESULTS and check each run (`check_run`)."""
    problems: list[str] = []
    for result in RESULTS:
        before = len(log.exchanges)
        final = program(result)
        run = log.exchanges[before:]
        assert all(e.status == 200 for e in run), [(e.status, e.client_messages) for e in run]
        path = check_run(run, path, result, final, problems, requests)
    assert not problems, "\n".join(problems)


def async_openai(base_url: str, log: ClientLog, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=secrets.CLIENT_KEY, max_retries=0,
                              http_client=log.async_client(timeout=30),
                              default_headers=headers or None)


# --- the OpenAI Agents SDK, Chat Completions model, agent named by header ----------------------

def agents_sdk_program(base_url: str, log: ClientLog, agent_id: str, result: str) -> str:
    """A minimal Agents SDK app: one function tool, `Runner.run`, the final output, through
    the SDK's Chat Completions model (its default Responses model: test_responses_agents_sdk.py)."""
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # no trace export to the internet
    looked_up: list[str] = []

    @function_tool
    def lookup_order(order_id: str) -> str:
        """The status of an order."""
        looked_up.append(order_id)
        return result

    async def main() -> Any:
        client = async_openai(base_url, log, **{"X-Agent-Id": agent_id})
        agent = Agent(name="orders", instructions="You look up orders for the user.",
                      model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
                      tools=[lookup_order])
        return (await Runner.run(agent, PROMPT)).final_output

    final = asyncio.run(main())
    assert looked_up == ["A17"]
    return final


def test_openai_agents_sdk_tool_loop_twice_without_a_conversation_id(make_proxy, fake_upstream):
    proxy = make_proxy()
    log = ClientLog(fake_upstream)
    path = seed(proxy, log, "ag-sdk")
    run_twice(lambda result: agents_sdk_program(proxy.base_url, log, "ag-sdk", result), path, log)


# --- pydantic-ai, OpenAIChatModel, agent named by the /agents/{id}/v1 base URL ----------------

def pydantic_ai_program(base_url: str, log: ClientLog, result: str, prompt: str = PROMPT) -> str:
    """A minimal pydantic-ai app: one plain tool, `agent.run`, the output."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    looked_up: list[str] = []

    async def main() -> str:
        provider = OpenAIProvider(openai_client=async_openai(base_url, log))
        agent = Agent(OpenAIChatModel(MODEL, provider=provider),
                      instructions="You look up orders for the user.")

        @agent.tool_plain
        def lookup_order(order_id: str) -> str:
            """The status of an order."""
            looked_up.append(order_id)
            return result

        return (await agent.run(prompt)).output

    final = asyncio.run(main())
    assert looked_up == ["A17"]
    return final


def test_pydantic_ai_tool_loop_twice_without_a_conversation_id(make_proxy, fake_upstream):
    proxy = make_proxy()
    log = ClientLog(fake_upstream)
    path = seed(proxy, log, "pai")
    run_twice(lambda result: pydantic_ai_program(f"{proxy.url}/agents/pai/v1", log, result),
              path, log)


def rejected(message: dict[str, Any]) -> bool:
    """A tool result in which pydantic-ai rejected the call's arguments: `{"error": [...]}`
    listing the validation errors (older releases: text ending "Fix the errors and try
    again.")."""
    text = message_text(message)
    if message.get("role") != "tool":
        return False
    try:
        return "error" in json.loads(text)
    except (ValueError, TypeError):
        return "Fix the errors" in text


def retrying_model(body: dict[str, Any]) -> Reply:
    """The scripted model, except that it fixes a tool call pydantic-ai rejected by calling
    the tool again with valid arguments."""
    if rejected(body["messages"][-1]):
        return Reply(tool_calls=[("lookup_order", {"order_id": "A17"})])
    return scripted_model(body)


def test_pydantic_ai_validation_retry_in_a_tool_loop_twice(make_proxy, fake_upstream):
    """The model first calls the tool with invalid arguments; pydantic-ai answers that call
    with its validation error as the tool result, the model calls again, the tool runs: three
    requests per run, each a tool-loop follow-up of the last."""
    proxy = make_proxy()
    fake_upstream.responder = retrying_model
    log = ClientLog(fake_upstream)
    path = seed(proxy, log, "pai-retry")

    def program(result: str) -> str:
        final = pydantic_ai_program(f"{proxy.url}/agents/pai-retry/v1", log, result,
                                    prompt='Use tool lookup_order with {"order": "A17"}')
        feedback = log.exchanges[-2].body["messages"][-1]
        assert rejected(feedback) and "order_id" in message_text(feedback), feedback
        return final

    run_twice(program, path, log, requests=3)
