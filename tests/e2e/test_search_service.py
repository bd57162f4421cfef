"""One ranking everywhere (proxy/embeddings/search.py), and queries vs documents marked for
asymmetric embedding models (`[embeddings] query_prefix` / `document_prefix` / `*_input_type`).

A real memproxy on both backends; the fake upstream serves paraphrase-aware embeddings
(tests/fakes/embeddings.py). The REST searches must answer what the model's tools answer:
with embeddings on, the paraphrase full-text cannot find.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.e2e.test_hybrid_search import (
    ANSWER,
    DISTRACTORS,
    MESSAGES_AFTER_ARCHIVE,
    PASSAGES,
    QUERY,
    UNRELATED,
    archive,
    contents,
    enabled,
    say,
    store_call,
    tool_result,
    wait_for_vectors,
)
from tests.fakes.embeddings import concept_embed

AGENT_PATH = "/v1/agents/hybrid"


def rest(proxy: Any, path: str, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{proxy.url}{AGENT_PATH}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def embed_requests(fake_upstream: Any) -> list[dict[str, Any]]:
    return [r.json for r in fake_upstream.all_requests if r.path.endswith("/embeddings")]


def test_rest_search_ranks_like_the_tools_hybrid_when_embeddings_are_on(
        make_proxy, fake_upstream, database_url):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(enabled())
    client = proxy.client()
    archive(client)
    for text in [ANSWER, *DISTRACTORS, *UNRELATED]:
        say(client, text, conversation="earlier")
    wait_for_vectors(database_url, len(PASSAGES),
                     MESSAGES_AFTER_ARCHIVE + 2 * len(PASSAGES))

    passages = [p["text"] for p in rest(proxy, "/passages", query=QUERY, limit=5)]
    assert ANSWER in passages  # no shared word: only the vector side finds it
    say(client, f"Search archive: {QUERY}")
    assert contents(tool_result(fake_upstream)) == passages  # the tool's ranking, exactly

    messages = rest(proxy, "/messages", query="doctor peanut", roles="user", limit=10)
    assert any(m["content"] == ANSWER for m in messages)
    assert all(m["conversation_id"] in ("default", "earlier") for m in messages)
    scores = [m["score"] for m in messages]
    assert scores == sorted(scores, reverse=True)
    # paging by offset reads the same ranking further down
    assert [p["text"] for p in rest(proxy, "/passages", query=QUERY, limit=2, offset=1)] \
        == passages[1:3]


def test_rest_search_is_full_text_when_embeddings_are_off(make_proxy, fake_upstream,
                                                          database_url):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy()
    archive(proxy.client())
    passages = [p["text"] for p in rest(proxy, "/passages", query=QUERY, limit=5)]
    assert passages and ANSWER not in passages
    full = store_call(database_url, lambda store, pk: store.search_passages(pk, QUERY, top_k=5))
    assert passages == [p.text for p in full]
    assert not embed_requests(fake_upstream)
    newest = rest(proxy, "/messages", limit=3)  # a blank query: the newest messages
    assert [m["created_at"] for m in newest] == sorted(
        (m["created_at"] for m in newest), reverse=True)


def test_equal_scores_are_ordered_newest_first(make_proxy, fake_upstream, database_url):
    proxy = make_proxy()
    client = proxy.client()
    for _ in range(3):
        say(client, "Remember in archive: the same sentence about llamas")
    found = rest(proxy, "/passages", query="llamas", limit=10)
    assert len(found) == 3 and len({p["score"] for p in found}) == 1
    assert [p["id"] for p in found] == sorted((p["id"] for p in found), reverse=True)


@pytest.mark.parametrize("marks", [
    {"query_prefix": "query: ", "document_prefix": "passage: "},
    {"query_input_type": "query", "document_input_type": "document"},
])
def test_queries_and_documents_are_marked_as_configured(make_proxy, fake_upstream,
                                                        database_url, marks):
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(enabled(**marks))
    client = proxy.client()
    archive(client)
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)
    say(client, f"Search archive: {QUERY}")
    assert ANSWER in contents(tool_result(fake_upstream))
    requests = embed_requests(fake_upstream)
    queries = [r for r in requests if r["input"] == [marks.get("query_prefix", "") + QUERY]]
    documents = [r for r in requests if r not in queries]
    assert len(queries) == 1 and documents
    assert queries[0].get("input_type") == marks.get("query_input_type")
    prefix = marks.get("document_prefix", "")
    assert all(text.startswith(prefix) for r in documents for text in r["input"])
    assert any(text == prefix + ANSWER for r in documents for text in r["input"])
    assert all(r.get("input_type") == marks.get("document_input_type") for r in documents)


def test_changing_the_document_prefix_re_embeds_everything(make_proxy, fake_upstream,
                                                           database_url):
    fake_upstream.embedder = concept_embed
    first = make_proxy(enabled())
    archive(first.client())
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)
    first.stop()

    second = make_proxy(enabled(document_prefix="passage: "))
    # every row is embedded again, with the prefix (old vectors are another model's now)
    wanted = {"passage: " + text for text in PASSAGES}
    deadline = time.monotonic() + 60
    while not wanted <= {t for r in embed_requests(fake_upstream) for t in r["input"]}:
        assert time.monotonic() < deadline, "the passages were not embedded again"
        time.sleep(0.05)
    say(second.client(), f"Search archive: {QUERY}")
    assert ANSWER in contents(tool_result(fake_upstream))


def embedded_texts(fake_upstream: Any) -> set[str]:
    return {t for r in embed_requests(fake_upstream) for t in r["input"]}


def test_messages_are_embedded_with_the_turn_before_them(make_proxy, fake_upstream,
                                                         database_url):
    """`document_context_turns = 1`: each message's document is the turn before it, then its
    own text (the memory tool's internal steps are not turns); passages stay alone."""
    fake_upstream.embedder = concept_embed
    proxy = make_proxy(enabled(document_context_turns=1))
    client = proxy.client()
    question = "Where did you go hiking last weekend?"
    answer = say(client, question)
    stored = f"Remember in archive: {PASSAGES[0]}"
    assert say(client, stored) == "Got it, I'll remember that."
    follow_up = "With whom?"
    say(client, follow_up)
    wait_for_vectors(database_url, 1, 6)

    texts = embedded_texts(fake_upstream)
    assert {question, f"{question}\n{answer}", f"{answer}\n{stored}",
            f"{stored}\nGot it, I'll remember that.",
            f"Got it, I'll remember that.\n{follow_up}", PASSAGES[0]} <= texts
    assert follow_up not in texts and answer not in texts


def test_switching_context_on_re_embeds_the_messages_with_it(make_proxy, fake_upstream,
                                                             database_url):
    """The context is part of the vectors' model key: switched on, every message is embedded
    again with its turn before (the catch-up), and searches use those vectors alone."""
    fake_upstream.embedder = concept_embed
    first = make_proxy(enabled())
    archive(first.client())
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)
    first.stop()
    plain = embedded_texts(fake_upstream)
    assert f"Remember in archive: {PASSAGES[0]}" in plain

    second = make_proxy(enabled(document_context_turns=1))
    wanted = {f"Got it, I'll remember that.\nRemember in archive: {PASSAGES[1]}",
              f"Remember in archive: {PASSAGES[1]}\nGot it, I'll remember that."}
    deadline = time.monotonic() + 60
    while not wanted <= embedded_texts(fake_upstream):
        assert time.monotonic() < deadline, "the messages were not embedded again"
        time.sleep(0.05)
    wait_for_vectors(database_url, len(PASSAGES), MESSAGES_AFTER_ARCHIVE)
    say(second.client(), f"Search archive: {QUERY}")
    assert ANSWER in contents(tool_result(fake_upstream))
