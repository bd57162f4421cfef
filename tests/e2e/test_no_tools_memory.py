"""Issue 17 items 4 and 5: memory with models that cannot call tools, and automatic recall.

A real memproxy, the openai SDK, the scripted upstream; the `refusing_tools` mode answers any
request offering `tools` with Ollama's 400 "... does not support tools".
"""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

from proxy import tokens
from proxy.core.facts import EXTRACTION_PROMPT
from proxy.core.recall import RECALL_CLOSE, RECALL_OPEN
from tests.fakes.no_tools import refusing_tools

MODEL = "gpt-4o-mini"
DATED = re.compile(r"- \[(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\] user said: My name is Ada")


def system_text(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


def section(body: dict) -> str:
    text = system_text(body)
    if RECALL_OPEN not in text:
        return ""
    return text[text.index(RECALL_OPEN):text.index(RECALL_CLOSE) + len(RECALL_CLOSE)]


def ask(client, text, conversation, *, stream=False, **kw):
    headers = {"X-Agent-Id": "a1", "X-Conversation-Id": conversation}
    messages = [{"role": "user", "content": text}]
    if not stream:
        reply = client.chat.completions.create(model=MODEL, messages=messages,
                                               extra_headers=headers, **kw)
        return reply.choices[0].message.content
    chunks = client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                            extra_headers=headers, **kw)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_model_without_tools_recalls_a_fact_from_another_conversation(
        make_proxy, fake_upstream, stream):
    fake_upstream.responder = refusing_tools()
    client = make_proxy().client()
    ask(client, "My name is Ada", "c1", stream=stream)  # no 4xx reaches the client
    first, retry = fake_upstream.bodies()
    assert first["tools"] and "tools" not in retry and "tool_choice" not in retry
    assert "conversation_search" not in system_text(retry)  # the no-tools instructions

    answer = ask(client, "What is my name?", "c2", stream=stream)
    assert answer == "Your name is Ada."
    last = fake_upstream.last.json
    assert "tools" not in last  # remembered: no refusal again
    assert len(fake_upstream.requests) == 3
    assert DATED.search(section(last)), section(last)


def test_the_refusal_is_remembered_across_a_restart(make_proxy, fake_upstream):
    fake_upstream.responder = refusing_tools()
    first = make_proxy()
    ask(first.client(), "My name is Ada", "c1")
    first.stop()
    fake_upstream.clear()
    second = make_proxy()
    assert ask(second.client(), "What is my name?", "c2") == "Your name is Ada."
    assert len(fake_upstream.requests) == 1
    assert "tools" not in fake_upstream.last.json


def test_configured_tools_false_never_offers_tools(make_proxy, fake_upstream):
    proxy = make_proxy({"models": {MODEL: {"tools": False}}})
    ask(proxy.client(), "My name is Ada", "c1")
    assert ask(proxy.client(), "What is my name?", "c2") == "I don't know your name."
    assert all("tools" not in body for body in fake_upstream.bodies())
    assert DATED.search(section(fake_upstream.last.json))


def test_client_tools_on_a_model_without_tools_get_the_upstreams_error(
        make_proxy, fake_upstream):
    fake_upstream.responder = refusing_tools()
    client = make_proxy().client()
    weather = {"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        ask(client, "Hello", "c1", tools=[weather])
    # remembered: the next request carries the client's tools only, as without memory
    with pytest.raises(openai.BadRequestError, match="does not support tools"):
        ask(client, "Hello again", "c1", tools=[weather])
    assert [t["function"]["name"] for t in fake_upstream.last.json["tools"]] == ["get_weather"]
    assert ask(client, "Hello once more", "c1").startswith("Echo: Hello once more")
    assert "tools" not in fake_upstream.last.json


def test_auto_recall_always_serves_tool_capable_models_too(make_proxy, fake_upstream):
    client = make_proxy({"memory": {"auto_recall": "always"}}).client()
    ask(client, "My name is Ada", "c1")
    ask(client, "What is my name?", "c2")
    last = fake_upstream.last.json
    assert last["tools"] and DATED.search(section(last))


def test_auto_recall_off_adds_no_section(make_proxy, fake_upstream):
    fake_upstream.responder = refusing_tools()
    client = make_proxy({"memory": {"auto_recall": "off"}}).client()
    ask(client, "My name is Ada", "c1")
    assert ask(client, "What is my name?", "c2") == "I don't know your name."
    assert RECALL_OPEN not in system_text(fake_upstream.last.json)


def test_default_mode_adds_no_section_for_tool_capable_models(make_proxy, fake_upstream):
    client = make_proxy().client()
    ask(client, "Search history: name", "c1")
    ask(client, "My name is Ada and my favourite name is Lovelace", "c1")
    ask(client, "What is my name?", "c2")
    assert RECALL_OPEN not in system_text(fake_upstream.last.json)


def test_the_context_report_previews_what_recall_would_add(make_proxy, fake_upstream):
    """/context?message= runs the search a turn would run and counts its section on its own
    line; the parts still add up, and a model served without tools is counted without them."""
    fake_upstream.responder = refusing_tools()
    proxy = make_proxy()
    ask(proxy.client(), "My name is Ada", "c1")
    ask(proxy.client(), "Hello", "c2")
    url = f"{proxy.url}/v1/agents/a1/context"
    plain = httpx.get(url, params={"conversation": "c2"}, timeout=30).json()
    assert plain["tools"] is False and plain["tokens"]["tools"] == 0
    assert plain["auto_recall"] == {"mode": "no-tools", "applies": True, "budget_tokens": 600,
                                    "section": None}
    assert plain["tokens"]["recall"] == 0
    preview = httpx.get(url, params={"conversation": "c2", "message": "What is my name?"},
                        timeout=30).json()
    assert DATED.search(preview["auto_recall"]["section"]), preview["auto_recall"]
    tokens_ = preview["tokens"]
    assert 0 < tokens_["recall"] <= 600
    # (each part is rounded up on its own after calibration: a token or two either way)
    assert abs(tokens_["total"] - tokens_["recall"] - plain["tokens"]["total"]) <= 2
    assert sum(v for k, v in tokens_.items() if k not in ("total", "free")) == tokens_["total"]
    # a message that finds nothing adds nothing
    nothing = httpx.get(url, params={"conversation": "c2", "message": "zebra quantum"},
                        timeout=30).json()
    assert nothing["auto_recall"]["section"] is None and nothing["tokens"]["recall"] == 0


def test_the_context_report_says_when_recall_does_not_apply(make_proxy, fake_upstream):
    proxy = make_proxy()
    ask(proxy.client(), "My name is Ada", "c1")
    report = httpx.get(f"{proxy.url}/v1/agents/a1/context",
                       params={"conversation": "c1", "message": "What is my name?"},
                       timeout=30).json()
    assert report["tools"] is True and report["tokens"]["tools"] > 0
    assert report["auto_recall"]["applies"] is False
    assert report["auto_recall"]["section"] is None and report["tokens"]["recall"] == 0


def test_the_section_keeps_within_its_budget(make_proxy, fake_upstream):
    budget = 150
    proxy = make_proxy({"memory": {"auto_recall_tokens": budget},
                        "models": {MODEL: {"tools": False}}})
    client = proxy.client()
    for n in range(6):
        ask(client, f"My name is Ada, note {n}: " + "the name was chosen with care " * 3,
            f"c{n}")
    ask(client, "What is my name?", "fresh")
    recalled = section(fake_upstream.last.json)
    assert recalled.count("user said:") >= 1
    assert tokens.count_text(recalled, MODEL) <= budget
    assert recalled.count("user said:") < 6  # the budget cut it


def test_a_temporary_chat_with_a_model_without_tools_recalls_read_only(make_proxy, fake_upstream):
    fake_upstream.responder = refusing_tools()
    client = make_proxy().client()
    ask(client, "My name is Ada", "c1")
    fake_upstream.clear()
    reply = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "What is my name?"}],
        extra_headers={"X-Agent-Id": "a1", "X-Memory": "ephemeral"})
    assert reply.headers["x-memproxy-ephemeral"] == "true"
    assert reply.parse().choices[0].message.content == "Your name is Ada."
    (body,) = fake_upstream.bodies()
    assert "tools" not in body and DATED.search(section(body))
    assert "conversation_search" not in system_text(body)


def wait_for(check, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def extraction_requests(fake) -> list[dict]:
    return [b for b in fake.bodies()
            if b["messages"][0]["content"].startswith(EXTRACTION_PROMPT[:40])]


def test_extraction_appends_the_users_facts_to_the_human_block(make_proxy, fake_upstream):
    fake_upstream.responder = refusing_tools()
    proxy = make_proxy({"memory": {"extract_facts": True}})
    client, http = proxy.client(), proxy.http()
    ask(client, "My name is Ada", "c1")
    block = wait_for(lambda: (b := http.get("/v1/agents/a1/blocks/human").json())
                     and "Name: Ada" in b["value"] and b)
    assert block["value"].endswith("Name: Ada")
    history = http.get("/v1/agents/a1/blocks/human/history").json()["data"]
    assert history[0]["source"] == "auto" and "Name: Ada" in history[0]["new_value"]
    # the model's next turn sees it in its core memory, and nothing is added twice
    assert ask(client, "What is my name?", "c2") == "Your name is Ada."
    chat = [b for b in fake_upstream.bodies() if b not in extraction_requests(fake_upstream)]
    human = system_text(chat[-1]).split("<human>")[1].split("</human>")[0]
    assert "Name: Ada" in human
    ask(client, "My name is Ada", "c3")
    proxy.stop()  # waits for the running extractions
    assert len(extraction_requests(fake_upstream)) == 3
    value = make_proxy().http().get("/v1/agents/a1/blocks/human").json()["value"]
    assert value.count("Name: Ada") == 1


def test_extraction_is_off_by_default(make_proxy, fake_upstream):
    fake_upstream.responder = refusing_tools()
    proxy = make_proxy()
    ask(proxy.client(), "My name is Ada", "c1")
    proxy.stop()
    assert not extraction_requests(fake_upstream)


def test_extraction_skips_models_served_with_tools(make_proxy, fake_upstream):
    proxy = make_proxy({"memory": {"extract_facts": True}})
    ask(proxy.client(), "My name is Ada", "c1")  # the model saves it with its tool
    proxy.stop()
    assert not extraction_requests(fake_upstream)


def test_a_failed_extraction_changes_nothing_and_loses_nothing(make_proxy, fake_upstream):
    fake_upstream.responder = refusing_tools(extraction_fails=True)
    proxy = make_proxy({"memory": {"extract_facts": True}})
    assert ask(proxy.client(), "My name is Ada", "c1")
    proxy.stop()
    assert len(extraction_requests(fake_upstream)) == 1
    again = make_proxy({"memory": {"extract_facts": True}})
    block = again.http().get("/v1/agents/a1/blocks/human").json()
    assert "Ada" not in block["value"]
    history = again.http().get("/v1/agents/a1/blocks/human/history").json()["data"]
    assert all(r["source"] != "auto" for r in history)
    # the message is still in recall memory: the next turn recalls it
    assert ask(again.client(), "What is my name?", "c2") == "Your name is Ada."


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_the_responses_api_serves_a_model_without_tools(make_proxy, fake_upstream, stream):
    fake_upstream.responder = refusing_tools()
    proxy = make_proxy()
    oa = proxy.client(base_url=f"{proxy.url}/agents/a1/v1")
    oa.responses.create(model=MODEL, input="My name is Ada")  # refused, served without tools
    fresh = {"X-Conversation-Id": "c2"}  # not the default conversation of the first
    if stream:
        events = list(oa.responses.create(model=MODEL, input="What is my name?", stream=True,
                                          extra_headers=fresh))
        answer = events[-1].response.output_text
    else:
        answer = oa.responses.create(model=MODEL, input="What is my name?",
                                     extra_headers=fresh).output_text
    assert answer == "Your name is Ada."
    assert "tools" not in fake_upstream.last.json
    assert DATED.search(section(fake_upstream.last.json))
