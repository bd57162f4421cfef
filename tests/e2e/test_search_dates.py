"""Dates a search query names rank the messages of that day or month higher (core/dates.py
`named_periods`, core/ranking.py `in_periods`): through the REST search and the model's
`conversation_search`, on both backends, with full-text alone and with hybrid search."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.test_hybrid_search import MODEL, enabled, tool_result
from tests.fakes.embeddings import concept_embed


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


# The same words three times; the newest (July) wins a tie when no date is named.
TURNS = [
    (ts(2023, 4, 20, 10), "user", "We baked sourdough bread with the kids"),
    (ts(2023, 4, 20, 10, 1), "assistant", "How lovely, what else?"),
    (ts(2023, 5, 14, 10), "user", "We baked sourdough bread with the kids"),
    (ts(2023, 5, 14, 10, 1), "assistant", "How lovely, what else?"),
    (ts(2023, 7, 2, 10), "user", "We baked sourdough bread with the kids"),
    (ts(2023, 7, 2, 10, 1), "assistant", "How lovely, what else?"),
]


def document() -> dict[str, Any]:
    messages = [{"seq": i, "turn_id": f"t{i}", "created_at": created, "in_context": False,
                 "message": {"role": role, "content": text}}
                for i, (created, role, text) in enumerate(TURNS, start=1)]
    return {"format": "memproxy.agent", "version": 1, "exported_at": time.time(),
            "agent": {"id": "baker", "created_at": TURNS[0][0]}, "blocks": [],
            "conversations": [{"id": "default", "created_at": TURNS[0][0], "summary": "",
                               "messages": messages}]}


def found(proxy: Any, query: str) -> list[int]:
    response = httpx.get(f"{proxy.url}/v1/agents/baker/messages",
                         params={"query": query, "limit": 3}, timeout=30)
    assert response.status_code == 200, response.text
    return [m["seq"] for m in response.json()["data"]]


def wait_embedded(proxy: Any, count: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        metrics = httpx.get(f"{proxy.url}/metrics", timeout=10).text
        line = next((x for x in metrics.splitlines()
                     if x.startswith('memproxy_embeddings_embedded_total{kind="message"}')), "")
        if line and float(line.split()[-1]) >= count:
            return
        assert time.monotonic() < deadline, "the messages were not embedded"
        time.sleep(0.05)


@pytest.mark.parametrize("hybrid", [False, True], ids=["full-text", "hybrid"])
def test_a_month_or_day_the_query_names_ranks_its_messages_first(make_proxy, fake_upstream,
                                                                 hybrid):
    fake_upstream.embedder = concept_embed
    # each message embedded alone: the three identical turns get identical vectors, so only
    # the date (or, with none, the tie-break) can order them
    proxy = make_proxy(enabled(document_context_turns=0) if hybrid else {})
    imported = httpx.post(f"{proxy.url}/v1/agents/import", json=document(), timeout=30)
    assert imported.status_code == 201, imported.text
    if hybrid:
        wait_embedded(proxy, len(TURNS))

    assert found(proxy, "When did we bake sourdough bread?")[0] == 5  # no date: the newest
    assert found(proxy, "What did we bake in May 2023?")[0] == 3
    assert found(proxy, "sourdough bread on 20 April, 2023")[0] == 1
    assert found(proxy, "sourdough bread on 2023-04-20")[0] == 1
    # a period no message is in changes nothing; nor does a month without its year
    assert found(proxy, "sourdough bread in March 2023")[0] == 5
    assert found(proxy, "sourdough bread in May")[0] == 5

    # the model's conversation_search ranks the same way
    proxy.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Search history: sourdough bread"
                                " in May 2023"}],
        extra_headers={"X-Agent-Id": "baker", "X-Conversation-Id": "other"})
    hits = json.loads(tool_result(fake_upstream))
    assert hits[0]["content"] == TURNS[2][2] and "2023-05-14" in hits[0]["timestamp"]
