"""Issue 2's acceptance tests: a real memproxy, the official openai SDK, a scripted upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests import secrets, storage
from tests.openapi_check import validate_chat_chunk, validate_chat_completion, validate_error

MODEL = "gpt-4o-mini"


def system_text(body: dict) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")


def ask(client, text, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **kw
    )


def test_a_fact_told_once_shapes_later_answers(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client(base_url=f"{proxy.url}/agents/a1/v1")
    first = ask(client, "My name is Ada")
    validate_chat_completion(first.model_dump(exclude_unset=True))
    assert first.choices[0].message.content == "Got it, I'll remember that."
    assert first.choices[0].message.tool_calls is None
    # two upstream calls: the memory edit, then the answer; usage is their sum
    assert len(fake_upstream.requests) == 2
    usage = [r.json["messages"] for r in fake_upstream.requests]
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.usage.prompt_tokens > 0 and len(usage) == 2

    fresh = proxy.client(base_url=f"{proxy.url}/agents/a1/v1")
    second = ask(fresh, "What is my name?")
    assert second.choices[0].message.content == "Your name is Ada."
    prompt = system_text(fake_upstream.last.json)
    assert "<human>" in prompt and "Name: Ada" in prompt
    assert prompt.index("<human>") < prompt.index("Name: Ada")


def test_memory_survives_a_restart_of_the_process(tmp_path, fake_upstream):
    from tests.servers import run_memproxy_subprocess

    db = f"sqlite:///{tmp_path}/m.db"
    args = ["--database-url", db, "--upstream-url", fake_upstream.url]
    with run_memproxy_subprocess(args, env={}) as proc:
        client = openai.OpenAI(base_url=proc.base_url, api_key=secrets.CLIENT_KEY, max_retries=0)
        ask(client, "My name is Ada", extra_headers={"X-Agent-Id": "a1"})
    with run_memproxy_subprocess(args, env={}) as proc:
        client = openai.OpenAI(base_url=proc.base_url, api_key=secrets.CLIENT_KEY, max_retries=0)
        reply = ask(client, "What is my name?", extra_headers={"X-Agent-Id": "a1"})
    assert reply.choices[0].message.content == "Your name is Ada."
    assert "Name: Ada" in system_text(fake_upstream.last.json)


def test_agents_do_not_see_each_others_memory(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    ask(client, "My name is Ada", extra_headers={"X-Agent-Id": "a1"})
    reply = ask(client, "What is my name?", extra_headers={"X-Agent-Id": "a2"})
    assert reply.choices[0].message.content == "I don't know your name."
    assert "Ada" not in json.dumps(fake_upstream.last.json)


def test_tenants_with_the_same_agent_id_are_separate(make_proxy, fake_upstream):
    proxy = make_proxy({"auth": {"keys": {secrets.TENANT_A_KEY: "tenant-a",
                                          secrets.TENANT_B_KEY: "tenant-b"}}})
    a = proxy.client(api_key=secrets.TENANT_A_KEY)
    b = proxy.client(api_key=secrets.TENANT_B_KEY)
    ask(a, "My name is Ada", extra_headers={"X-Agent-Id": "alice"})
    reply = ask(b, "What is my name?", extra_headers={"X-Agent-Id": "alice"})
    assert reply.choices[0].message.content == "I don't know your name."
    assert "Ada" not in json.dumps(fake_upstream.last.json)
    assert ask(a, "What is my name?", extra_headers={"X-Agent-Id": "alice"}
               ).choices[0].message.content == "Your name is Ada."
    # the upstream never receives memproxy's own keys
    assert all(secrets.TENANT_A_KEY not in r.headers.get("authorization", "")
               for r in fake_upstream.requests)


def test_unknown_and_missing_keys_are_rejected(make_proxy, fake_upstream):
    proxy = make_proxy({"auth": {"keys": {secrets.TENANT_A_KEY: "tenant-a"}}})
    with pytest.raises(openai.AuthenticationError) as err:
        ask(proxy.client(api_key=secrets.WRONG_KEY), "hi", extra_headers={"X-Agent-Id": "a"})
    assert err.value.code == "invalid_api_key"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer"}):
        response = httpx.post(f"{proxy.base_url}/chat/completions", json=body,
                              headers={"x-agent-id": "a", **headers})
        assert response.status_code == 401
        validate_error(response.json())
    # pass-through requests need a key too
    response = httpx.post(f"{proxy.base_url}/chat/completions", json=body)
    assert response.status_code == 401
    assert fake_upstream.requests == []


def test_chat_ui_resending_the_whole_history(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    history: list[dict] = []
    for turn in range(20):
        history.append({"role": "user", "content": f"message number {turn}"})
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": "Be brief."}, *history],
            extra_headers={"X-Agent-Id": "ui", "X-Conversation-Id": "chat-1"},
        )
        history.append({"role": "assistant", "content": reply.choices[0].message.content})
        sent = fake_upstream.last.json["messages"]
        user_texts = [m["content"] for m in sent if m["role"] == "user"]
        assert user_texts == [f"message number {i}" for i in range(turn + 1)]
        assert "Be brief." in sent[0]["content"]
    stored = storage.transcript(proxy.settings.database.url, "ui", "chat-1")
    roles = [m.role for m in stored]
    assert roles.count("user") == 20 and roles.count("assistant") == 20
    assert roles == ["user", "assistant"] * 20


def test_archival_and_conversation_search_return_what_was_stored(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client(base_url=f"{proxy.url}/agents/lib/v1")
    for fact in ("The blue key opens the garden shed", "Our wifi password is hunter2",
                 "The garden needs water on Sundays"):
        ask(client, f"Remember in archive: {fact}")
    reply = ask(client, "Search archive: garden shed key").choices[0].message.content
    assert reply.startswith("Search results: ")
    results = json.loads(reply.removeprefix("Search results: "))
    assert results[0]["content"] == "The blue key opens the garden shed"
    assert all("timestamp" in r for r in results)
    assert "hunter2" not in json.dumps(results[:1])

    ask(client, "I adopted a cat called Miso")
    reply = ask(client, "Search history: cat Miso").choices[0].message.content
    hits = json.loads(reply.removeprefix("Search results: "))
    assert hits[0]["content"] == "I adopted a cat called Miso" and hits[0]["role"] == "user"


def test_streaming_validates_and_hides_memory_tools(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client(base_url=f"{proxy.url}/agents/s1/v1")
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada"}], stream=True,
        stream_options={"include_usage": True},
    ))
    for chunk in chunks:
        validate_chat_chunk(chunk.model_dump(exclude_unset=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Got it, I'll remember that."
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1
    assert storage.blocks(proxy.settings.database.url, "s1")["human"].value == "Name: Ada"


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.mark.parametrize("stream", [False, True])
def test_client_tools_reach_the_client_and_their_results_continue_the_turn(
    make_proxy, fake_upstream, stream
):
    proxy = make_proxy()
    client = proxy.client(base_url=f"{proxy.url}/agents/t1/v1")
    messages = [{"role": "user", "content": 'Use tool get_weather with {"city": "Oslo"}'}]
    if stream:
        with client.chat.completions.stream(model=MODEL, messages=messages,
                                            tools=[WEATHER]) as s:
            for event in s:
                if event.type == "chunk":
                    validate_chat_chunk(event.chunk.model_dump(exclude_unset=True))
            final = s.get_final_completion()
    else:
        final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
        validate_chat_completion(final.model_dump(exclude_unset=True))
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    sent_tools = [t["function"]["name"] for t in fake_upstream.last.json["tools"]]
    assert "get_weather" in sent_tools and "core_memory_append" in sent_tools

    # SDK style: only the tool result goes back
    follow = client.chat.completions.create(
        model=MODEL, tools=[WEATHER],
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}],
    )
    assert follow.choices[0].message.content == "Tool result: Sunny, 21 C"
    sent = fake_upstream.last.json["messages"]
    assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["id"] == call.id
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}


def test_pass_through_is_byte_exact(make_proxy, fake_upstream):
    proxy = make_proxy()
    raw = b'{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hi \\u00e9"}],"x_extra":1}'
    response = httpx.post(f"{proxy.base_url}/chat/completions", content=raw,
                          headers={"content-type": "application/json"})
    assert fake_upstream.last.body == raw
    assert response.status_code == 200
    upstream_body = response.content
    assert json.loads(upstream_body)["choices"][0]["message"]["content"].startswith("Echo: hi")
    assert "x-memproxy-agent-id" not in response.headers
    # and streaming: the client receives exactly the upstream's event stream
    raw_stream = raw.replace(b'"x_extra":1', b'"stream":true')
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions", content=raw_stream,
                      headers={"content-type": "application/json"}) as r:
        received = b"".join(r.iter_raw())
    assert fake_upstream.last.body == raw_stream
    expected = b"".join(
        b"data: " + json.dumps(c).encode() + b"\n\n"
        for c in fake_upstream.chunks(fake_upstream.last.json,
                                      __import__("tests.fakes", fromlist=["scripted_model"])
                                      .scripted_model(fake_upstream.last.json))
    )
    assert received.startswith(expected[:20]) and received.endswith(b"data: [DONE]\n\n")


def test_memory_off_header_passes_through(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client(base_url=f"{proxy.url}/agents/a1/v1")
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada"}],
        extra_headers={"X-Memory": "off"})
    assert "tools" not in fake_upstream.last.json
    assert raw.headers.get("x-memproxy-agent-id") is None


def test_response_headers(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "My name is Ada"}],
        extra_headers={"X-Agent-Id": "h1", "X-Conversation-Id": "c9"})
    h = raw.headers
    assert h["x-memproxy-agent-id"] == "h1" and h["x-memproxy-conversation-id"] == "c9"
    assert h["x-memproxy-steps"] == "2"
    assert int(h["x-memproxy-context-tokens"]) > 100
    assert 0 <= float(h["x-memproxy-overhead-ms"]) < 10_000
