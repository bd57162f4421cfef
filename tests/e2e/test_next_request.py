"""The raw view of the next prompt (`GET /v1/agents/{a}/context?format=raw`, turn/preview.py)
is what the upstream then receives: compared with the scripted fake upstream's copy of the next
turn's first call, on both backends, with memory edits, a branch, page-outs and tools."""

from __future__ import annotations

import httpx

from tests.agents_api_check import AgentsApi
from tests.openapi_check import validate_error

MODEL = "gpt-4o-mini"
SECRET = "sk-upstream-secret-0123456789"


def chat(server, messages: list[dict], conversation: str = "talk", **extra) -> httpx.Response:
    response = httpx.post(
        f"{server.base_url}/chat/completions", timeout=30,
        headers={"x-agent-id": "ada", "x-conversation-id": conversation},
        json={"model": MODEL, "messages": messages, **extra})
    assert response.status_code == 200, response.text
    return response


def say(server, text: str, conversation: str = "talk") -> str:
    reply = chat(server, [{"role": "user", "content": text}], conversation)
    return reply.json()["choices"][0]["message"]["content"]


def raw(api: AgentsApi, conversation: str, message: str | None, **params) -> dict:
    query = {"conversation": conversation, "format": "raw", **params}
    if message is not None:
        query["message"] = message
    return api.get("/v1/agents/ada/context", params=query).json()


def first_call_of_next_turn(server, fake_upstream, text: str, conversation: str) -> dict:
    before = len(fake_upstream.requests)
    say(server, text, conversation)
    return fake_upstream.requests[before].json


def test_the_raw_view_is_the_body_the_upstream_receives(make_proxy, fake_upstream):
    server = make_proxy({"upstream": {"api_key": SECRET}})
    api = AgentsApi.connect(server.url)
    say(server, "My name is Ada")  # a memory-tool edit: the block is in the next prompt
    say(server, "I like tea")
    preview = raw(api, "talk", "What is my name?")
    assert preview["object"] == "context.request" and preview["model"] == MODEL
    assert preview["paged_out"] == 0
    body = preview["request"]
    assert "Name: Ada" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "What is my name?"}
    assert {t["function"]["name"] for t in body["tools"]} >= {"core_memory_append"}
    sent = first_call_of_next_turn(server, fake_upstream, "What is my name?", "talk")
    assert body == sent
    # the key the upstream gets is a header, never part of the body shown
    assert SECRET not in api.get("/v1/agents/ada/context", params={
        "conversation": "talk", "format": "raw"}).text
    # without a message: the conversation as it stands, ending at the last reply
    standing = raw(api, "talk", None)["request"]["messages"]
    assert standing[-1]["role"] == "assistant"
    assert standing[-1]["content"] == "Your name is Ada."


def test_the_raw_view_follows_an_edited_branch(make_proxy, fake_upstream):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    first = [{"role": "user", "content": "Tell me about owls"}]
    owls = chat(server, first).json()["choices"][0]["message"]
    chat(server, [*first, owls, {"role": "user", "content": "And about cats"}])
    # a chat UI edits the second question: the cats turn becomes a superseded branch
    dogs = chat(server, [*first, owls, {"role": "user", "content": "And about dogs"}])
    history = [*first, owls, {"role": "user", "content": "And about dogs"},
               dogs.json()["choices"][0]["message"]]
    preview = raw(api, "talk", "Which did I ask about?")["request"]
    texts = [m.get("content") for m in preview["messages"]]
    assert "And about dogs" in texts and "And about cats" not in texts
    before = len(fake_upstream.requests)
    chat(server, [*history, {"role": "user", "content": "Which did I ask about?"}])
    assert preview == fake_upstream.requests[before].json


def test_the_raw_view_shows_the_page_out_the_turn_makes(make_proxy, fake_upstream):
    fake_upstream.context_window = 3000
    server = make_proxy({"models": {MODEL: {"context_window": 3000}},
                         "memory": {"reserve_output_tokens": 200}})
    api = AgentsApi.connect(server.url)
    paged = 0
    for i in range(40):
        say(server, f"Note {i}: " + "words to fill the window " * 12)
        preview = raw(api, "talk", "next one please")
        if preview["paged_out"]:
            paged = preview["paged_out"]
            break
    assert paged > 0, "the window never filled"
    sent = first_call_of_next_turn(server, fake_upstream, "next one please", "talk")
    assert preview["request"] == sent


def test_the_raw_view_of_a_model_without_tools(make_proxy, fake_upstream):
    """No memory tools offered, the no-tools instructions and automatic recall: the turn's
    tool fallback and system text, as the upstream then receives them."""
    server = make_proxy({"models": {MODEL: {"tools": False}}})
    api = AgentsApi.connect(server.url)
    say(server, "My name is Ada", "first")
    say(server, "I like tea", "talk")
    preview = raw(api, "talk", "What is my name?")["request"]
    assert "tools" not in preview and "tool_choice" not in preview
    assert preview == first_call_of_next_turn(server, fake_upstream, "What is my name?", "talk")


def test_raw_view_errors(make_proxy):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    say(server, "hello")
    bad = httpx.get(f"{server.base_url}/agents/ada/context",
                    params={"format": "xml", "conversation": "talk"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "format"
    validate_error(bad.json())
    missing = httpx.get(f"{server.base_url}/agents/ada/context",
                        params={"format": "raw", "conversation": "nope"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "conversation_not_found"
    assert raw(api, "talk", None)["paged_out"] == 0


def test_the_raw_view_stores_nothing(make_proxy):
    server = make_proxy()
    api = AgentsApi.connect(server.url)
    say(server, "hello")
    before = api.get("/v1/agents/ada/conversations/talk/messages",
                     params={"include_superseded": "true"}).json()["data"]
    for i in range(3):
        raw(api, "talk", f"question {i}")
    after = api.get("/v1/agents/ada/conversations/talk/messages",
                    params={"include_superseded": "true"}).json()["data"]
    assert after == before
