"""`GET /metrics`: Prometheus text that counts a known sequence of requests exactly."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests import secrets

MODEL = "gpt-4o-mini"


def samples(proxy):
    text = httpx.get(f"{proxy.url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_known_sequence_is_counted_exactly(make_proxy, fake_upstream):
    proxy = make_proxy()
    client = proxy.client()
    agent = {"X-Agent-Id": "m"}
    user = [{"role": "user", "content": "My name is Ada"}]
    client.chat.completions.create(model=MODEL, messages=user, extra_headers=agent)  # 2 steps
    client.chat.completions.create(model=MODEL, messages=user, extra_headers={
        **agent, "x-stainless-retry-count": "1"})  # that request retried: a replay
    list(client.chat.completions.create(model=MODEL, stream=True, extra_headers=agent,
                                        messages=[{"role": "user", "content": "hi"}]))
    client.chat.completions.create(model=MODEL, messages=user)  # pass-through
    bad = httpx.post(f"{proxy.base_url}/chat/completions", headers=agent, content=b"{")
    assert bad.status_code == 400

    found = samples(proxy)
    total = "memproxy_requests_total"
    assert value(found, total, mode="stateful", stream="false", status="200") == 1
    assert value(found, total, mode="stateful", stream="true", status="200") == 1
    assert value(found, total, mode="replay", stream="false", status="200") == 1
    assert value(found, total, mode="passthrough", stream="false", status="200") == 1
    assert value(found, total, mode="stateful", stream="false", status="400") == 1
    assert value(found, "memproxy_tool_calls_total", tool="core_memory_append",
                 outcome="ok") == 1
    assert value(found, "memproxy_turn_steps_count") == 2
    assert value(found, "memproxy_turn_steps_sum") == 2 + 1
    assert value(found, "memproxy_overhead_seconds_count", mode="stateful") == 1
    assert value(found, "memproxy_overhead_seconds_count", mode="stateful_stream") == 1
    assert value(found, "memproxy_tokens_total", kind="prompt") > 0
    assert value(found, "memproxy_reconcile_decisions_total", action="append") == 2
    # no agent ids, keys or message text in the metrics
    text = httpx.get(f"{proxy.url}/metrics").text
    assert "Ada" not in text and '"m"' not in text and secrets.CLIENT_KEY not in text
