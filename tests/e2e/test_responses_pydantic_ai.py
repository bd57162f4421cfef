"""pydantic-ai's opt-in Responses model (`OpenAIResponsesModel`) against memproxy (issue #16:
before it, `POST /v1/responses` was a 404), on SQLite and Postgres: a tool loop, a second run
continuing the first's message history, and memory across runs on an agent base URL. Every
answer and event is validated against the OpenAI description (tests/responses_check.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import openai

from tests import secrets
from tests.e2e import responses_helpers as rh
from tests.e2e.responses_helpers import MODEL, TOOL_PROMPT, agent_url, system_text
from tests.responses_check import SpecLog

spec = rh.spec


def make_agent(base_url: str, spec: SpecLog, instructions: str) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    client = openai.AsyncOpenAI(base_url=base_url, api_key=secrets.CLIENT_KEY, max_retries=0,
                                timeout=30.0, http_client=spec.async_http_client(timeout=30.0))
    return Agent(OpenAIResponsesModel(MODEL, provider=OpenAIProvider(openai_client=client)),
                 instructions=instructions)


def test_a_tool_loop_and_a_follow_up_run(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    agent = make_agent(proxy.base_url, spec, "You look up orders for the user.")
    looked_up: list[str] = []

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        """The status of an order."""
        looked_up.append(order_id)
        return "Order A17: shipped"

    async def main() -> tuple[Any, Any]:
        first = await agent.run(TOOL_PROMPT)
        second = await agent.run("Thanks, and hello", message_history=first.all_messages())
        return first, second

    first, second = asyncio.run(main())
    assert looked_up == ["A17"]
    assert first.output == "Tool result: Order A17: shipped"
    assert second.output == "Echo: Thanks, and hello (saw 2 user messages)"
    assert system_text(fake_upstream.last.json) == "You look up orders for the user."
    tool_messages = [m for m in fake_upstream.last.json["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["Order A17: shipped"]
    assert len(spec.checked("Response")) == 3


def test_memory_across_runs_on_an_agent_url(make_proxy, fake_upstream, spec):
    proxy = make_proxy()
    agent = make_agent(agent_url(proxy, "pai-responses"), spec, "Be helpful.")

    async def main() -> tuple[Any, Any]:
        return await agent.run("My name is Ada"), await agent.run("What is my name?")

    saved, asked = asyncio.run(main())
    assert saved.output == "Got it, I'll remember that."
    assert asked.output == "Your name is Ada."
    assert "Name: Ada" in system_text(fake_upstream.last.json)
