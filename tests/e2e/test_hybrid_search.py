"""Hybrid search end to end: a real memproxy on both backends, the scripted model calling the
memory search tools, the fake upstream serving paraphrase-aware embeddings
(tests/fakes/embeddings.py), and the tool result read where the model reads it: in the next
request memproxy sends upstream.

The fixture's answer shares no word with the query ("physician ... groundnuts" for "doctor
peanut advice"), so full-text search cannot find it and hybrid search must.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.store import open_store
from tests.fakes.embeddings import concept_embed
from tests.servers import refusing_port
from tests.store_backends import run_with_store

MODEL = "gpt-4o-mini"
AGENT = "hybrid"
ANSWER = "My physician told me to avoid groundnuts at all costs."
DISTRACTORS = [
    "Doctor Who is my favourite show on Saturdays.",
    "Peanut butter is on the shopping list.",
    "Advice from the gardener: water the roses on Sundays.",
]
UNRELATED = ["The kitten sleeps on the sofa all afternoon.", "Train tickets to Lisbon cost 40."]
PASSAGES = [*DISTRACTORS, ANSWER, *UNRELATED]
QUERY = "doctor peanut advice"
DIMENSIONS = 48


def enabled(**extra: Any) -> dict[str, dict[str, Any]]:
    return {"embeddings": {"enabled": True, "model": "fake-embed", "dimensions": DIMENSIONS,
                           "api_key": "sk-embed", **extra}}


def say(client: Any, text: str, conversation: str = "default") -> str:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}],
        extra_headers={"X-Agent-Id": AGENT, "X-Conversation-Id": conversation})
    return reply.choices[0].message.content


def tool_result(fake_upstream: Any) -> str:
    """What the last memory tool returned, as the model received it."""
    message = fake_upstream.last.json["messages"][-1]
    assert message["role"] == "tool", message
    return message["content"]


def archive(client: Any) -> None:
    for text in PASSAGES:
        assert say(client, f"Remember in archive: {text}") == "Got it, I'll remember that."


def store_call(url: str, work: Callable[[Any, int], Any]) -> Any:
    """`work(store, agent_pk)` on a separate store opened on the server's database."""
    async def body(store: Any) -> Any:
        agent = await store.get_agent("default", AGENT)
        return await work(store, agent.pk)

    return run_with_store(open_store(url), body)


async def vector_rows(store: Any, agent_pk: int) -> dict[str, int]:
    """The agent's stored vectors per kind, any model (`vector_state`'s row counts)."""
    return {kind: (await store.vector_state(kind, agent_pk)).rows
            for kind in ("passage", "message")}


def wait_for_vectors(url: str, passages: int, messages: int, timeout_s: float = 60.0) -> None:
    """Wait until the background task has embedded what the test expects (no timing asserted:
    the deadline only bounds a broken run)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = store_call(url, vector_rows)
        if counts == {"passage": passages, "message": messages}:
            return
        assert time.monotonic() < deadline, f"still not embedded: {counts}"
        time.sleep(0.05)


def full_text(url: str, query: str, top_k: int = 5) -> list[str]:
    found = store_call(url, lambda store, pk: store.search_passages(pk, query, top_k=top_k))
    return [p.text for p in found]


def contents(result: str) -> list[str]:
    return [item["content"] for item in json.loads(result)]


def metric(proxy: Any, name: str, **labels: str) -> float:
    text = httpx.get(f"{proxy.url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


# Each archive turn stores two visible messages (the user's and the reply); the memory-tool
# steps in between are internal and not embedded.
MESSAGES_AFTER_ARCHIVE = 2 * len(PASSAGES)


def test_hybrid_finds_a_paraphrase_that_full_text_misses(make_proxy, fake_upstream,
                                                         database_url):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(enabled())
    client = proxy.client()
    archive(client)
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)

    say(client, f"Search archive: {QUERY}")
    found = contents(tool_result(fake_upstream))
    assert ANSWER in found
    assert set(DISTRACTORS) <= set(found) and len(found) == 5
    # full-text alone, on the same data, cannot find it
    assert ANSWER not in full_text(database_url, QUERY)

    embed_calls = [r for r in fake_upstream.all_requests if r.path.endswith("/embeddings")]
    assert embed_calls and all(r.json["model"] == "fake-embed" for r in embed_calls)
    assert all(r.json["dimensions"] == DIMENSIONS for r in embed_calls)
    assert all(r.headers["authorization"] == "Bearer sk-embed" for r in embed_calls)
    assert metric(proxy, "memproxy_embeddings_embedded_total", kind="passage") == len(PASSAGES)
    assert metric(proxy, "memproxy_embeddings_failures_total", stage="query") == 0


def test_conversation_search_finds_a_paraphrased_message(make_proxy, fake_upstream,
                                                         database_url):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(enabled())
    client = proxy.client()
    for text in [ANSWER, *DISTRACTORS, *UNRELATED]:
        say(client, text, conversation="earlier")
    wait_for_vectors(database_url, 0, 2 * (1 + len(DISTRACTORS) + len(UNRELATED)))

    # full-text alone finds the distractors, not the paraphrase
    plain = store_call(database_url, lambda store, pk: store.search_messages(
        pk, "doctor peanut", limit=10))
    assert plain and not any("groundnuts" in hit.text for hit in plain)

    say(client, "Search history: doctor peanut", conversation="now")
    found = contents(tool_result(fake_upstream))
    assert any("groundnuts" in text for text in found)
    # the search's own question (this turn) is not a past message
    assert not any("Search history" in text for text in found)

    # roles are honoured on the vector side too: only the user's own messages
    say(client, 'Use tool conversation_search with {"query": "doctor peanut", '
                '"roles": ["user"], "limit": 10}', conversation="now")
    found = json.loads(tool_result(fake_upstream))
    assert found and {item["role"] for item in found} == {"user"}
    assert any(item["content"] == ANSWER for item in found)


def test_with_embeddings_off_results_are_exactly_full_text(make_proxy, fake_upstream,
                                                          database_url):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy()
    client = proxy.client()
    archive(client)
    say(client, f"Search archive: {QUERY}")
    assert contents(tool_result(fake_upstream)) == full_text(database_url, QUERY)
    assert ANSWER not in contents(tool_result(fake_upstream))
    assert not [r for r in fake_upstream.all_requests if r.path.endswith("/embeddings")]
    assert store_call(database_url, vector_rows) == {
        "passage": 0, "message": 0}


def test_embedding_endpoint_down_search_still_works(make_proxy, fake_upstream, database_url):
    with refusing_port() as port:
        proxy = make_proxy(enabled(base_url=f"http://127.0.0.1:{port}/v1"))
        client = proxy.client()
        archive(client)
        say(client, f"Search archive: {QUERY}")
        assert contents(tool_result(fake_upstream)) == full_text(database_url, QUERY)
        deadline = time.monotonic() + 30
        while metric(proxy, "memproxy_embeddings_failures_total", stage="background") == 0:
            assert time.monotonic() < deadline, "no background failure was counted"
            time.sleep(0.05)
    assert store_call(database_url, vector_rows) == {
        "passage": 0, "message": 0}
    # the conversation itself went on normally
    assert say(client, "hello").startswith("Echo: hello (saw ")


def test_a_query_that_cannot_be_embedded_falls_back_to_full_text(make_proxy, fake_upstream,
                                                                  database_url):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(enabled(query_timeout_s=0.3))
    client = proxy.client()
    archive(client)
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)
    expected = full_text(database_url, QUERY)

    fake_upstream.embeddings_status = 500  # the endpoint fails
    say(client, f"Search archive: {QUERY}")
    assert contents(tool_result(fake_upstream)) == expected
    assert metric(proxy, "memproxy_embeddings_failures_total", stage="query") == 1

    fake_upstream.embeddings_status = None
    fake_upstream.embeddings_delay_s = 30  # the endpoint hangs past query_timeout_s
    say(client, f"Search archive: {QUERY}")
    assert contents(tool_result(fake_upstream)) == expected
    assert metric(proxy, "memproxy_embeddings_failures_total", stage="query") == 2


def test_failed_batches_are_retried_until_the_endpoint_recovers(make_proxy, fake_upstream,
                                                                database_url):
    fake_upstream.embedder = concept_embed
    fake_upstream.embeddings_status = 503
    proxy = make_proxy(enabled())
    client = proxy.client()
    archive(client)
    deadline = time.monotonic() + 30
    while metric(proxy, "memproxy_embeddings_failures_total", stage="background") == 0:
        assert time.monotonic() < deadline, "no background failure was counted"
        time.sleep(0.05)
    fake_upstream.embeddings_status = None
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)
    say(client, f"Search archive: {QUERY}")
    assert ANSWER in contents(tool_result(fake_upstream))


def test_background_embedding_catches_up_after_a_restart(make_proxy, fake_upstream,
                                                         database_url):
    fake_upstream.embedder = concept_embed
    first = make_proxy()  # embeddings off: rows are written without vectors
    archive(first.client())
    first.stop()
    assert store_call(database_url, vector_rows) == {
        "passage": 0, "message": 0}

    second = make_proxy(enabled())  # the same database, embeddings on: the catch-up
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)
    say(second.client(), f"Search archive: {QUERY}")
    assert ANSWER in contents(tool_result(fake_upstream))
