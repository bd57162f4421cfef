"""Every error path of a stateful completion: OpenAI shape, right status, state intact."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests import storage
from tests.fakes import Fault, Reply
from tests.openapi_check import validate_chat_chunk, validate_error

MODEL = "gpt-4o-mini"
AGENT = {"x-agent-id": "err"}
NO_RETRY = {"upstream": {"max_retries": 0}}


def post(proxy, body, headers=None, raw=None):
    return httpx.post(f"{proxy.base_url}/chat/completions",
                      content=raw if raw is not None else json.dumps(body),
                      headers={"content-type": "application/json", **AGENT, **(headers or {})},
                      timeout=30)


def stored(proxy, agent="err"):
    return storage.roles_and_texts(storage.transcript(proxy.settings.database.url, agent))


def user(text):
    return {"role": "user", "content": text}


@pytest.mark.parametrize("raw, status, param, code", [
    (b"{not json", 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, "invalid_json"),
    (b"\xff\xfe", 400, None, "invalid_json"),
    (json.dumps({"messages": [user("hi")]}).encode(), 400, "model", None),
    (json.dumps({"model": MODEL}).encode(), 400, "messages", None),
    (json.dumps({"model": MODEL, "messages": []}).encode(), 400, "messages", None),
    (json.dumps({"model": MODEL, "messages": ["hi"]}).encode(), 400, "messages[0]", None),
    (json.dumps({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}).encode(),
     400, "messages[0].role", None),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 5}]}).encode(),
     400, "messages[0].content", None),
    (json.dumps({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}).encode(),
     400, "messages[0].tool_call_id", None),
    (json.dumps({"model": MODEL, "messages": [{"role": "system", "content": "x"}]}).encode(),
     400, "messages", None),
    (json.dumps({"model": MODEL, "messages": [user("hi")], "n": 2}).encode(), 400, "n", None),
    (json.dumps({"model": MODEL, "messages": [user("hi")], "stream": "yes"}).encode(),
     400, "stream", None),
])
def test_bad_requests_are_rejected_before_anything_is_stored(
    make_proxy, fake_upstream, raw, status, param, code
):
    proxy = make_proxy()
    response = post(proxy, None, raw=raw)
    assert response.status_code == status
    body = response.json()
    validate_error(body)
    assert body["error"]["param"] == param
    if code:
        assert body["error"]["code"] == code
    assert fake_upstream.requests == []
    assert stored(proxy) == []


@pytest.mark.parametrize("headers, param", [
    ({"x-agent-id": "../etc"}, "agent_id"),
    ({"x-agent-id": "a", "x-conversation-id": "a b"}, "conversation_id"),
])
def test_malformed_ids_are_400(make_proxy, fake_upstream, headers, param):
    proxy = make_proxy()
    response = post(proxy, {"model": MODEL, "messages": [user("hi")]}, headers)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert fake_upstream.requests == []


def test_require_agent(make_proxy, fake_upstream):
    proxy = make_proxy({"identity": {"require_agent": True}})
    response = httpx.post(f"{proxy.base_url}/chat/completions",
                          json={"model": MODEL, "messages": [user("hi")]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "agent_required"
    assert fake_upstream.requests == []


def test_require_agent_accepts_the_agent_named_by_the_body_user(make_proxy, fake_upstream):
    """With `agent_from_user`, the body's `user` names the agent: `require_agent` is met (the
    identity is resolved once, from path, headers and body together)."""
    proxy = make_proxy({"identity": {"require_agent": True, "agent_from_user": True}})
    response = httpx.post(f"{proxy.base_url}/chat/completions",
                          json={"model": MODEL, "messages": [user("hi")], "user": "uma"})
    assert response.status_code == 200, response.text
    assert response.headers["x-memproxy-agent-id"] == "uma"
    anonymous = httpx.post(f"{proxy.base_url}/chat/completions",
                           json={"model": MODEL, "messages": [user("hi")]})
    assert anonymous.status_code == 400
    assert anonymous.json()["error"]["code"] == "agent_required"


def test_unknown_model_keeps_the_upstreams_status_and_message(make_proxy, fake_upstream):
    proxy = make_proxy(NO_RETRY)
    client = proxy.client()
    client.chat.completions.create(model=MODEL, messages=[user("first")], extra_headers=AGENT)
    before = stored(proxy)
    fake_upstream.strict_models = True
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nope", messages=[user("second")],
                                       extra_headers=AGENT)
    assert err.value.code == "model_not_found" and "gpt-nope" in err.value.message
    assert stored(proxy) == before  # the rejected input left no trace in the transcript
    fake_upstream.strict_models = False
    client.chat.completions.create(model=MODEL, messages=[user("third")], extra_headers=AGENT)
    sent = [m["content"] for m in fake_upstream.last.json["messages"] if m["role"] == "user"]
    assert sent == ["first", "third"]


@pytest.mark.parametrize("fault, status, exc", [
    (Fault.server_error(500), 500, openai.InternalServerError),
    (Fault.server_error(503), 503, openai.InternalServerError),
    (Fault.non_json(502), 502, openai.InternalServerError),
    (Fault.rate_limited(7), 429, openai.RateLimitError),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_keep_status_and_the_retry_stores_nothing_twice(
    make_proxy, fake_upstream, fault, status, exc, stream
):
    proxy = make_proxy(NO_RETRY)
    client = proxy.client()
    fake_upstream.push(fault)
    with pytest.raises(exc) as err:
        response = client.chat.completions.create(
            model=MODEL, messages=[user("hello there")], extra_headers=AGENT, stream=stream)
        list(response) if stream else None
    assert err.value.status_code == status
    validate_error({"error": err.value.body})
    if status == 429:
        assert err.value.response.headers["retry-after"] == "7"
    # the input is kept, unanswered; the SDK's retry of the same request continues the turn
    assert stored(proxy) == [("user", "hello there")]
    reply = client.chat.completions.create(
        model=MODEL, messages=[user("hello there")], extra_headers={**AGENT,
                                                                    "x-stainless-retry-count": "1"})
    assert reply.choices[0].message.content.startswith("Echo: hello there")
    assert stored(proxy) == [("user", "hello there"), ("assistant", reply.choices[0].message.content)]
    assert storage.last_turn(proxy.settings.database.url, "err").status == "done"


def test_transient_upstream_errors_are_retried_by_memproxy(make_proxy, fake_upstream):
    proxy = make_proxy({"upstream": {"max_retries": 2}})
    fake_upstream.push(Fault.server_error(503))
    reply = proxy.client().chat.completions.create(
        model=MODEL, messages=[user("hi")], extra_headers=AGENT)
    assert reply.choices[0].message.content.startswith("Echo: hi")
    assert len(fake_upstream.requests) == 2


def test_upstream_timeout_is_504(make_proxy, fake_upstream):
    proxy = make_proxy({"upstream": {"max_retries": 0, "read_timeout_s": 0.3}})
    fake_upstream.push(Fault.delay(2.0))
    response = post(proxy, {"model": MODEL, "messages": [user("slow")]})
    assert response.status_code == 504
    validate_error(response.json())
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert stored(proxy) == [("user", "slow")]


def test_unreachable_upstream_is_502(make_proxy, fake_upstream):
    from tests.servers import refusing_port

    with refusing_port() as port:
        proxy = make_proxy({"upstream": {"max_retries": 0,
                                         "base_url": f"http://127.0.0.1:{port}/v1"}})
        response = post(proxy, {"model": MODEL, "messages": [user("anyone?")]})
    assert response.status_code == 502
    validate_error(response.json())
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert "Traceback" not in response.text


@pytest.mark.parametrize("fault", [
    Fault.stream_error(after_chunks=2),
    Fault.truncate_stream(after_chunks=2),
    Fault.truncate_stream(after_chunks=2, abort=True),
])
def test_errors_after_the_stream_started_are_an_error_event_then_done(
    make_proxy, fake_upstream, fault
):
    proxy = make_proxy(NO_RETRY)
    fake_upstream.push(fault)
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions",
                      json={"model": MODEL, "messages": [user("a long story")], "stream": True},
                      headers=AGENT) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))
    validate_error(error)
    for line in lines[:-2]:
        validate_chat_chunk(json.loads(line.removeprefix("data: ")))
    with pytest.raises(openai.APIError):
        fake_upstream.push(fault)
        list(proxy.client().chat.completions.create(
            model=MODEL, messages=[user("again")], stream=True, extra_headers=AGENT))
    # the failed turns' inputs are kept and unanswered, nothing half-written
    assert [r for r, _ in stored(proxy)] == ["user", "user"]


def test_retry_of_a_finished_turn_is_replayed_not_recomputed(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    body = dict(model=MODEL, messages=[user("My name is Ada")])
    first = client.chat.completions.create(**body, extra_headers=AGENT)
    calls = len(fake_upstream.requests)
    again = client.chat.completions.with_raw_response.create(
        **body, extra_headers={**AGENT, "x-stainless-retry-count": "1"})
    assert again.headers["x-memproxy-replayed"] == "true"
    assert again.parse().model_dump() == first.model_dump()
    assert len(fake_upstream.requests) == calls
    streamed = list(client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True},
        extra_headers={**AGENT, "x-stainless-retry-count": "2"}))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
        first.choices[0].message.content
    assert streamed[-1].usage.total_tokens == first.usage.total_tokens
    assert stored(proxy) == [("user", "My name is Ada"),
                             ("assistant", first.choices[0].message.content)]


def test_idempotency_key_replays(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    key = {**AGENT, "Idempotency-Key": "k-123"}
    first = client.chat.completions.create(model=MODEL, messages=[user("once")], extra_headers=key)
    second = client.chat.completions.create(model=MODEL, messages=[user("once")], extra_headers=key)
    assert first.id == second.id
    assert stored(proxy) == [("user", "once"), ("assistant", first.choices[0].message.content)]


def test_malformed_tool_arguments_go_back_to_the_model(make_proxy, fake_upstream):
    proxy = make_proxy()
    fake_upstream.push(Reply(tool_calls=[("core_memory_append", "{broken")]))
    reply = proxy.client().chat.completions.create(
        model=MODEL, messages=[user("hi")], extra_headers=AGENT)
    assert reply.choices[0].message.content.startswith("I could not update my memory")
    tool_result = fake_upstream.last.json["messages"][-1]
    assert tool_result["role"] == "tool" and "not valid JSON" in tool_result["content"]


def test_unknown_routes_and_methods_are_openai_shaped(make_proxy):
    proxy = make_proxy()
    missing = httpx.get(f"{proxy.url}/v1/nothing")
    assert missing.status_code == 404
    validate_error(missing.json())
    wrong = httpx.get(f"{proxy.base_url}/chat/completions")
    assert wrong.status_code == 405
    validate_error(wrong.json())


def test_a_client_that_disconnects_mid_stream_leaves_the_conversation_usable(
    make_proxy, fake_upstream
):
    proxy = make_proxy(NO_RETRY)
    fake_upstream.stream_delay_s = 0.2
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions",
                      json={"model": MODEL, "messages": [user("tell me a long story")],
                            "stream": True}, headers=AGENT) as r:
        for line in r.iter_lines():
            if '"content":"Echo' in line.replace(" ", ""):
                break  # leave after the first words
    fake_upstream.stream_delay_s = 0.0
    reply = proxy.client(timeout=5).chat.completions.create(
        model=MODEL, messages=[user("are you there?")], extra_headers=AGENT)
    assert reply.choices[0].message.content.startswith("Echo: are you there?")
    assert stored(proxy) == [("user", "tell me a long story"), ("user", "are you there?"),
                             ("assistant", reply.choices[0].message.content)]
