"""Per-tenant quotas on a real server, both backends (docs/forgetting.md, "Quotas"): each quota
hit once and cleanly (403 quota_exceeded, nothing written), a concurrent burst at the edge does
not overshoot, and usage is visible in `GET /v1/usage` and `/metrics`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.agents_api_check import AgentsApi
from tests.e2e.test_hybrid_search import metric
from tests.fakes.faults import Fault
from tests.openapi_check import validate_error

MODEL = "gpt-4o-mini"
KEYS = {"auth": {"keys": {"key-a": "tenant-a", "key-b": "tenant-b"}}}


def quota_error(response: httpx.Response, param: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    validate_error(body)
    assert body["error"]["code"] == "quota_exceeded" and body["error"]["param"] == param


def test_agents_per_tenant(make_proxy):
    proxy = make_proxy({**KEYS, "limits": {"agents_per_tenant": 2}})
    a, b = AgentsApi.connect(proxy.url, "key-a"), AgentsApi.connect(proxy.url, "key-b")
    assert a.post("/v1/agents", json={"id": "one"}).status_code == 201
    chat = proxy.client(api_key="key-a")
    chat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                 extra_headers={"X-Agent-Id": "two"})
    quota_error(a.post("/v1/agents", json={"id": "three"}), "agents_per_tenant")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                     extra_headers={"X-Agent-Id": "four"})
    assert caught.value.body["code"] == "quota_exceeded"
    # existing agents go on working; the other tenant has its own quota
    chat.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "again"}],
                                 extra_headers={"X-Agent-Id": "two"})
    assert b.post("/v1/agents", json={"id": "three"}).status_code == 201
    assert [x["id"] for x in a.get("/v1/agents").json()["data"]] == ["one", "two"]
    usage = a.get("/v1/usage").json()
    assert usage["agents"] == 2 and usage["limits"]["agents_per_tenant"] == 2
    assert usage["messages"] == 4
    assert metric(proxy, "memproxy_tenant_usage", tenant="tenant-a", kind="agents") == 2
    assert metric(proxy, "memproxy_tenant_usage", tenant="tenant-b", kind="agents") == 1
    # deleting one makes room
    assert a.delete("/v1/agents/one").status_code == 200
    assert a.post("/v1/agents", json={"id": "three"}).status_code == 201


def test_a_burst_at_the_edge_does_not_overshoot(make_proxy):
    proxy = make_proxy({"limits": {"agents_per_tenant": 5, "passages_per_agent": 4}})
    api = AgentsApi.connect(proxy.url)
    with ThreadPoolExecutor(16) as pool:
        created = list(pool.map(
            lambda i: api.post("/v1/agents", json={"id": f"a{i}"}).status_code, range(24)))
    assert sorted(created).count(201) == 5 and created.count(403) == 19
    assert len(api.get("/v1/agents").json()["data"]) == 5
    agent = api.get("/v1/agents").json()["data"][0]["id"]
    with ThreadPoolExecutor(16) as pool:
        added = list(pool.map(lambda i: api.post(
            f"/v1/agents/{agent}/passages", json={"text": f"fact {i}"}).status_code, range(20)))
    assert added.count(201) == 4 and added.count(403) == 16
    assert len(api.get(f"/v1/agents/{agent}/passages").json()["data"]) == 4
    quota_error(api.post(f"/v1/agents/{agent}/passages", json={"text": "more"}),
                "passages_per_agent")


def test_passages_per_agent_in_a_turn(make_proxy):
    proxy = make_proxy({"limits": {"passages_per_agent": 1}})
    api, chat = AgentsApi.connect(proxy.url), proxy.client()

    def say(text: str) -> str:
        return chat.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}],
            extra_headers={"X-Agent-Id": "keeper"}).choices[0].message.content

    assert say("Remember in archive: the first fact") == "Got it, I'll remember that."
    answer = say("Remember in archive: the second fact")
    assert answer.startswith("I could not update my memory") and "quota" in answer
    texts = [p["text"] for p in api.get("/v1/agents/keeper/passages").json()["data"]]
    assert texts == ["the first fact"]


def test_concurrent_turns_at_the_passage_cap_do_not_overshoot(make_proxy, fake_upstream):
    """Each turn's room is counted when it starts; four turns of one agent in four
    conversations all start with room for one more passage, and their first upstream answers
    are held until all four have started. Only one passage may be stored: the store counts
    again when each turn finishes. Every client still gets its answer."""
    proxy = make_proxy({"limits": {"passages_per_agent": 2}})
    api, chat = AgentsApi.connect(proxy.url), proxy.client()
    assert api.post("/v1/agents", json={"id": "keeper"}).status_code == 201
    assert api.post("/v1/agents/keeper/passages", json={"text": "old"}).status_code == 201
    fake_upstream.push(*(Fault.delay(0.5) for _ in range(4)))

    def turn(n: int) -> str:
        return chat.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Remember in archive: fact {n}"}],
            extra_headers={"X-Agent-Id": "keeper", "X-Conversation-Id": f"c{n}"},
        ).choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(turn, range(4)))
    assert answers == ["Got it, I'll remember that."] * 4  # each was told "stored" in its turn
    texts = [p["text"] for p in api.get("/v1/agents/keeper/passages").json()["data"]]
    assert len(texts) == 2 and "old" in texts
    assert api.get("/v1/usage").json()["passages"] == 2


def test_storage_mb_per_tenant(make_proxy):
    """Measured in the background (every 0.1 s here): once the tenant's bytes pass the quota,
    its next turn and passage are refused, another tenant's are not."""
    import time

    proxy = make_proxy({**KEYS, "limits": {"storage_mb_per_tenant": 1, "storage_check_s": 0.1}})
    a = AgentsApi.connect(proxy.url, "key-a")
    assert a.get("/v1/usage").json()["storage_bytes"] == 0
    big = "x" * 600_000
    assert a.post("/v1/agents/big/passages", json={"text": big}).status_code == 404
    assert a.post("/v1/agents", json={"id": "big"}).status_code == 201
    assert a.post("/v1/agents/big/passages", json={"text": big}).status_code == 201
    assert a.post("/v1/agents/big/passages", json={"text": big}).status_code == 201
    deadline = time.monotonic() + 30
    while a.get("/v1/usage").json()["storage_bytes"] < 1024 * 1024:
        assert time.monotonic() < deadline, "never measured"
        time.sleep(0.05)
    quota_error(a.post("/v1/agents/big/passages", json={"text": "more"}),
                "storage_mb_per_tenant")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        proxy.client(api_key="key-a").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Agent-Id": "big"})
    assert caught.value.body["param"] == "storage_mb_per_tenant"
    assert len(a.get("/v1/agents/big/passages").json()["data"]) == 2
    proxy.client(api_key="key-b").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Agent-Id": "small"})


def test_import_respects_the_quotas(make_proxy):
    proxy = make_proxy({"limits": {"agents_per_tenant": 1, "passages_per_agent": 1}})
    api = AgentsApi.connect(proxy.url)
    assert api.post("/v1/agents/one/passages", json={"text": "a"}).status_code == 404
    assert api.post("/v1/agents", json={"id": "one"}).status_code == 201
    assert api.post("/v1/agents/one/passages", json={"text": "a"}).status_code == 201
    document = api.get("/v1/agents/one/export").json()
    quota_error(api.post("/v1/agents/import", params={"id": "two"}, json=document),
                "agents_per_tenant")
    # replacing the one agent is no new agent; two passages are over the passage quota
    document["passages"].append(dict(document["passages"][0], text="b"))
    quota_error(api.post("/v1/agents/import", params={"replace": "true"}, json=document),
                "passages_per_agent")
    assert [p["text"] for p in api.get("/v1/agents/one/passages").json()["data"]] == ["a"]
    document["passages"].pop()
    assert api.post("/v1/agents/import", params={"replace": "true"},
                    json=document).status_code == 201
