"""`[limits] requests_per_minute` and `concurrent_turns` (#8.4): per API key, 429
`rate_limit_error` with Retry-After before anything is stored; other keys unaffected."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from proxy.api.ratelimit import RateLimiter, TokenBucket
from proxy.errors import ProxyError
from tests import secrets, storage
from tests.openapi_check import validate_error
from tests.servers import UpstreamGate

MODEL = "gpt-4o-mini"
KEYS = {"auth": {"keys": {secrets.TENANT_A_KEY: "tenant-a", secrets.TENANT_B_KEY: "tenant-b"}}}


def ask(client: openai.OpenAI, text: str, agent: str = "a", **headers: str):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}],
        extra_headers={"X-Agent-Id": agent, **headers})


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429
    validate_error(response.json())
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert int(response.headers["retry-after"]) >= 1


# -- the token bucket (a fake clock: no sleeping) -------------------------------------------


def test_the_bucket_allows_a_burst_then_refills_at_the_rate():
    now = [100.0]
    limiter = RateLimiter(requests_per_minute=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check_rate("k")
    with pytest.raises(ProxyError) as refused:
        limiter.check_rate("k")
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "20"
    limiter.check_rate("other")  # another key has its own bucket
    now[0] += 20.0  # one token back (3 per minute)
    limiter.check_rate("k")
    with pytest.raises(ProxyError):
        limiter.check_rate("k")


def test_a_bucket_never_holds_more_than_its_capacity():
    bucket = TokenBucket(capacity=2, per_second=1.0, tokens=2, updated=0.0)
    assert bucket.take(1000.0) == 0.0 and bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) == pytest.approx(1.0)


def test_turn_slots_are_counted_per_key():
    limiter = RateLimiter(concurrent_turns=2)
    assert limiter.acquire_turn("k") and limiter.acquire_turn("k")
    assert not limiter.acquire_turn("k")
    assert limiter.acquire_turn("other")
    limiter.release_turn("k")
    assert limiter.acquire_turn("k")


# -- requests per minute, end to end --------------------------------------------------------


def test_requests_per_minute_per_key(make_proxy, fake_upstream, database_url):
    proxy = make_proxy({**KEYS, "limits": {"requests_per_minute": 2}})
    a = proxy.client(api_key=secrets.TENANT_A_KEY)
    ask(a, "one")
    ask(a, "two")
    with pytest.raises(openai.RateLimitError) as refused:
        ask(a, "three")
    assert_rate_limited(refused.value.response)
    assert "requests per minute" in refused.value.message
    # nothing of the refused request was stored or sent upstream
    stored = storage.roles_and_texts(storage.transcript(database_url, "a", tenant="tenant-a"))
    assert [text for role, text in stored if role == "user"] == ["one", "two"]
    assert len(fake_upstream.requests) == 2
    # another key is unaffected
    b = proxy.client(api_key=secrets.TENANT_B_KEY)
    assert ask(b, "hello").choices[0].message.content.startswith("Echo: hello")


def test_pass_through_and_the_agents_api_spend_the_same_budget(make_proxy, fake_upstream):
    proxy = make_proxy({**KEYS, "limits": {"requests_per_minute": 3}})
    http = proxy.http(headers={"authorization": f"Bearer {secrets.TENANT_A_KEY}"})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert http.post("/v1/chat/completions", json=body).status_code == 200  # pass-through
    assert http.get("/v1/agents/a/context").status_code in (200, 404)
    assert http.get("/v1/agents/a/context").status_code in (200, 404)
    assert_rate_limited(http.get("/v1/agents/a/context"))
    assert_rate_limited(http.post("/v1/chat/completions", json=body))
    assert len(fake_upstream.requests) == 1
    # endpoints outside the limit keep answering
    assert http.get("/v1/models").status_code == 200
    assert http.get("/health/liveliness").status_code == 200


def test_the_responses_and_conversations_apis_spend_the_budget_too(make_proxy, fake_upstream):
    proxy = make_proxy({**KEYS, "limits": {"requests_per_minute": 3}})
    a = proxy.client(api_key=secrets.TENANT_A_KEY)
    first = a.responses.create(model=MODEL, input="hi")
    a.responses.retrieve(first.id)
    agent = proxy.client(api_key=secrets.TENANT_A_KEY, base_url=f"{proxy.url}/agents/a/v1")
    agent.conversations.create()
    with pytest.raises(openai.RateLimitError) as refused:
        agent.responses.create(model=MODEL, input="again")
    assert_rate_limited(refused.value.response)
    assert len(fake_upstream.requests) == 1


def test_unauthenticated_requests_are_refused_as_before_and_not_counted(make_proxy,
                                                                       fake_upstream):
    proxy = make_proxy({**KEYS, "limits": {"requests_per_minute": 1}})
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            ask(proxy.client(api_key=secrets.WRONG_KEY), "hi")
    assert ask(proxy.client(api_key=secrets.TENANT_A_KEY), "hi").choices


def test_an_open_server_limits_per_tenant(make_proxy, fake_upstream):
    proxy = make_proxy({"limits": {"requests_per_minute": 1}})
    ask(proxy.client(api_key=secrets.CLIENT_KEY), "hi")
    with pytest.raises(openai.RateLimitError):
        ask(proxy.client(api_key=secrets.USER_OWN_KEY), "hi")  # same tenant "default"


# -- concurrent turns -----------------------------------------------------------------------


@pytest.fixture
def gate(_upstream_server, fake_upstream):
    """Hold upstream answers to requests that memproxy sends with `x-request-id: hold-*`."""
    _, switch = _upstream_server
    gate = UpstreamGate(fake_upstream.app,
                        hold_if=lambda h: h.get("x-request-id", "").startswith("hold"))
    switch.target = gate
    yield gate
    gate.release()


def test_concurrent_turns_per_key(make_proxy, fake_upstream, gate, database_url):
    proxy = make_proxy({**KEYS, "limits": {"concurrent_turns": 1}})
    a = proxy.client(api_key=secrets.TENANT_A_KEY)
    first: dict[str, object] = {}
    running = threading.Thread(target=lambda: first.setdefault(
        "reply", ask(a, "slow one", "a", **{"X-Request-Id": "hold-1"})))
    running.start()
    assert gate.held.wait(15), "the first turn never reached the upstream"
    try:
        # a second turn of the same key, even in another agent, is refused at once
        with pytest.raises(openai.RateLimitError) as refused:
            ask(a, "second", "other-agent")
        assert_rate_limited(refused.value.response)
        assert "concurrent turns" in refused.value.message
        assert storage.transcript(database_url, "other-agent", tenant="tenant-a") == []
        # pass-through requests are not turns
        plain = a.chat.completions.create(model=MODEL,
                                          messages=[{"role": "user", "content": "p"}])
        assert plain.choices[0].message.content
        # another key runs its turn meanwhile
        b = proxy.client(api_key=secrets.TENANT_B_KEY)
        assert ask(b, "mine", "a").choices[0].message.content.startswith("Echo: mine")
    finally:
        gate.release()
        running.join(30)
    assert first["reply"].choices[0].message.content.startswith("Echo: slow one")
    # the slot is free again the moment the answer is out: a sequential client never waits
    for i in range(3):
        ask(a, f"next {i}")
        for _chunk in a.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"streamed {i}"}],
                stream=True, extra_headers={"X-Agent-Id": "a"}):
            pass


def test_a_refused_stream_gets_a_plain_429(make_proxy, fake_upstream, gate):
    proxy = make_proxy({"limits": {"concurrent_turns": 1}})
    client = proxy.client()
    running = threading.Thread(target=lambda: ask(client, "slow", **{"X-Request-Id": "hold-2"}))
    running.start()
    assert gate.held.wait(15)
    try:
        response = httpx.post(f"{proxy.base_url}/chat/completions", json={
            "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers={"x-agent-id": "b"}, timeout=30)
        assert_rate_limited(response)
        assert response.headers["content-type"].startswith("application/json")
    finally:
        gate.release()
        running.join(30)
