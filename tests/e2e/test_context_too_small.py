"""Issue 20 item 5: a prompt that cannot fit the window says what fills it.

A real memproxy and the openai SDK, a request shaped like Open WebUI's (its 36 built-in tools,
about 6.4k-7k tokens, with every chat request) against a model configured with an 8k window: the
400 must blame the client's tools, not the user's message, give every part's size (they add up
to the total it names) and say what to change. Nothing reaches the upstream for it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import openai
import pytest

from proxy import tokens
from proxy.tokens.schemas import TOOLS_OVERHEAD

MODEL = "small-8k"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openwebui" / "tools.json"
PARTS = re.compile(
    r"maximum context length is (\d+) tokens, but this turn needs about (\d+) even with every"
    r" older message paged out: (\d+) for the client's (\d+) tool definitions, (\d+) for"
    r" memory .*?, (\d+) reserved for the answer and (\d+) for this turn's messages\.")


def openwebui_tools(target_tokens: int = 7000) -> list[dict]:
    """Open WebUI's 36 built-in tools by name, each as large as the recorded ones on average
    (the fixture keeps a few full definitions; the others are shaped like them)."""
    data = json.loads(FIXTURE.read_text())
    names = data["sets"]["owui-36"]
    samples = list(data["tools"].values())
    per_tool = target_tokens // len(names) + TOOLS_OVERHEAD  # each counted alone here
    tools = []
    for i, name in enumerate(names):
        tool = json.loads(json.dumps(data["tools"].get(name) or samples[i % len(samples)]))
        tool["function"]["name"] = name
        description = tool["function"].get("description") or name
        while tokens.count_tools([tool], "gpt-4o-mini") < per_tool:
            description += f" {name.replace('_', ' ')} as the user asked, in detail."
            tool["function"]["description"] = description
        tools.append(tool)
    return tools


def ask(client: openai.OpenAI, tools: list[dict], conversation: str) -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}], tools=tools,
        extra_headers={"X-Agent-Id": "uma", "X-Conversation-Id": conversation})
    return reply.choices[0].message.content or ""


def test_open_webuis_tools_on_an_8k_model_are_named_as_the_cost(make_proxy, fake_upstream):
    proxy = make_proxy({"models": {MODEL: {"context_window": 8192}}})
    client = proxy.client()
    tools = openwebui_tools()
    assert len(tools) == 36
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, tools, "c1")
    error = info.value.body
    assert info.value.status_code == 400
    assert (error["code"], error["type"], error["param"]) == (
        "context_length_exceeded", "invalid_request_error", "tools")
    message = error["message"]
    found = PARTS.search(message)
    assert found, message
    window, total, client_tools, count, memory, reserve, messages = map(int, found.groups())
    assert (window, count, reserve) == (8192, 36, 1024)
    assert total == client_tools + memory + reserve + messages > window
    assert client_tools > max(memory, reserve, messages)
    assert 6500 < client_tools < 8000 and 0 < messages < 100 and memory > 300
    assert f"{round(100 * client_tools / window)}% of the window" in message
    assert "send fewer tools" in message and "Open WebUI" in message
    assert f'[models."{MODEL}"] context_window' in message
    assert "shorter message" not in message  # the user's message is not the problem
    assert not fake_upstream.requests  # refused before any upstream call

    # the advice is right: with a few of the tools the same turn fits and is answered
    assert ask(client, tools[:3], "c1").startswith("Echo: Hello there")


def test_a_long_message_is_still_blamed_on_the_message(make_proxy, fake_upstream):
    proxy = make_proxy({"models": {MODEL: {"context_window": 4096}}})
    with pytest.raises(openai.BadRequestError) as info:
        proxy.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "words " * 5000}],
            extra_headers={"X-Agent-Id": "uma"})
    error = info.value.body
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "no client tools" in error["message"]
    assert "Send a shorter message" in error["message"]
    assert not fake_upstream.requests
