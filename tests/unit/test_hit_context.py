"""The turns around search hits (core/hit_context.py): how they are arranged, shown in
conversation_search results within the result budget, and in automatic recall."""

from __future__ import annotations

import asyncio
import json

from proxy.core.hit_context import NEIGHBOUR_CHARS, Around, arrange
from proxy.core.recall import (
    RECALL_CLOSE,
    RECALL_HEADER,
    RECALL_OPEN,
    Snippet,
    candidates,
    render_line,
    select_snippets,
)
from proxy.core.tools import MemoryState, ToolContext, execute_memory_tool
from proxy.core.types import MessageHit

DAY = 1_683_554_160.0  # Mon 2023-05-08 13:56 UTC


def said(seq: int, text: str, role: str = "user", cid: str = "c") -> MessageHit:
    return MessageHit(cid, seq, role, text, DAY + seq * 60, 0.0)


def test_each_neighbour_goes_once_with_the_best_hit_it_borders() -> None:
    hits = [said(5, "hit five"), said(3, "hit three"), said(1, "other", cid="d")]
    rows = [(0, said(4, "four")), (0, said(6, "six")), (1, said(2, "two")),
            (1, said(4, "four")),          # shown with hit 0 already
            (0, said(3, "hit three")),     # a hit itself: shown as a hit
            (2, said(2, "d two", cid="d")), (7, said(9, "no such hit")),
            (2, said(8, "wrong conversation"))]
    around = arrange(hits, rows)
    assert [[m.text for m in a.before] for a in around] == [["four"], ["two"], []]
    assert [[m.text for m in a.after] for a in around] == [["six"], [], ["d two"]]
    left = arrange(hits, rows, leave_out=lambda m: m.seq == 6)
    assert left[0] == Around(before=(rows[0][1],))


class Store:
    """Search and neighbours over a fixed list, recording what was asked."""

    def __init__(self, hits: list[MessageHit], rows: list[tuple[int, MessageHit]]):
        self.hits, self.rows, self.asked = hits, rows, []

    async def search_messages(self, agent_pk, query, **kwargs):
        return self.hits

    async def search_passages(self, *args, **kwargs):
        return []

    async def message_neighbours(self, agent_pk, hits, count):
        self.asked.append((agent_pk, list(hits), count))
        return self.rows


def search(store: Store, count: int, max_chars: int = 16_000, limit: int = 5, **ctx) -> str:
    context = ToolContext(store, 7, max_result_chars=max_chars, neighbours=store,
                          neighbour_count=count, **ctx)
    text, ok = asyncio.run(execute_memory_tool(
        "conversation_search", json.dumps({"query": "hike", "limit": limit}),
        MemoryState.of([]), context))
    assert ok, text
    return text


def test_conversation_search_shows_the_turns_around_each_hit_with_dates() -> None:
    store = Store([said(3, "I went hiking"), said(9, "hiking again")],
                  [(0, said(2, "What did you do on Sunday?", "assistant")),
                   (0, said(4, "Where?", "assistant")), (1, said(8, "x" * 1000))])
    results = json.loads(search(store, 1))
    assert store.asked == [(7, [("c", 3), ("c", 9)], 1)]
    assert results[0] == {
        "timestamp": "Mon 2023-05-08 13:59 UTC", "role": "user", "content": "I went hiking",
        "before": [{"timestamp": "Mon 2023-05-08 13:58 UTC", "role": "assistant",
                    "content": "What did you do on Sunday?"}],
        "after": [{"timestamp": "Mon 2023-05-08 14:00 UTC", "role": "assistant",
                   "content": "Where?"}]}
    assert results[1]["before"][0]["content"] == "x" * NEIGHBOUR_CHARS + "…"
    assert "after" not in results[1]
    # off: the hits alone, and nothing is read
    store.asked.clear()
    assert [set(r) for r in json.loads(search(store, 0))] == [
        {"timestamp", "role", "content"}] * 2
    assert store.asked == []


def test_over_budget_the_lowest_hits_lose_their_context_before_hits_go() -> None:
    hits = [said(10 * i, f"hit {i} " + "y" * 200) for i in range(1, 4)]
    rows = [(i, said(10 * (i + 1) + 1, "z" * 250)) for i in range(3)]
    full = len(search(Store(hits, rows), 1))
    budget = full - 100  # too big by one neighbour: the last hit loses its context
    results = json.loads(search(Store(hits, rows), 1, max_chars=budget))
    assert [("after" in r) for r in results] == [True, True, False]
    alone = len(json.dumps([{k: v for k, v in r.items() if k != "after"} for r in results],
                           ensure_ascii=False))
    results = json.loads(search(Store(hits, rows), 1, max_chars=alone - 50))
    assert len(results) == 2 and not any("after" in r for r in results)


def test_the_current_turn_is_neither_a_hit_nor_a_neighbour() -> None:
    store = Store([said(3, "hit")], [(0, said(2, "before")), (0, said(4, "mine now"))])
    results = json.loads(search(store, 1, conversation_id="c", current_turn_from_seq=4))
    assert results[0]["before"][0]["content"] == "before" and "after" not in results[0]


def count(text: str) -> int:
    return len(text) // 4


def test_recall_shows_a_hit_with_its_turns_or_alone_when_they_do_not_fit() -> None:
    hits = [said(3, "I went hiking"), said(9, "We hiked the ridge")]
    around = arrange(hits, [(0, said(2, "What did you do?", "assistant")),
                            (0, said(4, "Nice!", "assistant")),
                            (1, said(8, "I went hiking"))])  # the same text as hit 0
    found = candidates(hits, [], around)
    assert found[0].before[0].text == "What did you do?"
    assert found[1].before[0].text == "I went hiking"
    line = render_line(found[0])
    assert line.split("\n") == [
        "- [Mon 2023-05-08 13:59 UTC] user said: I went hiking",
        "  (before) [Mon 2023-05-08 13:58 UTC] assistant said: What did you do?",
        "  (after) [Mon 2023-05-08 14:00 UTC] assistant said: Nice!"]
    chosen = select_snippets(found, budget_tokens=1000, count=count)
    assert chosen == [found[0], found[1].bare()]  # a text is shown once
    # a turn the prompt holds is left out of the context, not the hit
    chosen = select_snippets(found, budget_tokens=1000, count=count, seen=["Nice!"])
    assert chosen[0].after == () and chosen[0].before == found[0].before
    # a budget for the hit alone: the hit alone
    alone = count(render_line(found[0].bare())) + 1
    tight = alone + count(f"{RECALL_OPEN}\n{RECALL_HEADER}\n{RECALL_CLOSE}")
    assert count(render_line(found[0])) + 1 > alone
    chosen = select_snippets(found[:1], budget_tokens=tight, count=count)
    assert chosen == [found[0].bare()]


def test_a_speakers_name_is_shown_when_the_message_has_one() -> None:
    named = MessageHit("c", 3, "user", "I went hiking", DAY, 1.0, name="Caroline")
    store = Store([named], [(0, said(2, "Plans?", "assistant"))])
    result = json.loads(search(store, 1))[0]
    assert (result["name"], "name" in result["before"][0]) == ("Caroline", False)
    line = render_line(candidates([named], [])[0])
    assert line == "- [Mon 2023-05-08 13:56 UTC] Caroline (user) said: I went hiking"


def test_a_snippet_without_context_renders_as_before() -> None:
    assert render_line(Snippet("archival", "Likes tea", DAY)) == (
        "- [Mon 2023-05-08 13:56 UTC] archival memory: Likes tea")


class Turns:
    """Neighbours from a list, or a failure (a database error)."""

    def __init__(self, rows=(), fail=False):
        self.rows, self.fail = list(rows), fail

    async def message_neighbours(self, agent_pk, hits, count):
        if self.fail:
            raise RuntimeError("database is locked")
        return self.rows


def section(neighbours: Turns, context_from: int | None = None) -> str:
    from proxy.core.types import StoredMessage
    from proxy.turn.recall import recall_section

    store = Store([said(3, "I went hiking"), said(20, "Caroline hiked again", cid="here")], [])
    context = [] if context_from is None else [StoredMessage(
        seq=context_from, data={"role": "user", "content": "x"}, turn_id="t", created_at=DAY)]
    return asyncio.run(recall_section(
        store, agent_pk=1, conversation_id="here",
        new_input=[{"role": "user", "content": "Where did Caroline hike?"}], context=context,
        archival_passages=0, budget_tokens=600, model="gpt-4o-mini", neighbours=neighbours,
        neighbour_count=1))


def test_automatic_recall_leaves_out_turns_in_the_prompt_and_survives_a_failure() -> None:
    rows = [(0, said(2, "Any plans?", "assistant")),
            (1, said(21, "already in the prompt", "assistant", cid="here"))]
    text = section(Turns(rows), context_from=21)
    assert "(before) [Mon 2023-05-08 13:58 UTC] assistant said: Any plans?" in text
    assert "already in the prompt" not in text and "Caroline hiked again" in text
    failed = section(Turns(fail=True))
    assert "user said: I went hiking" in failed and "(before)" not in failed
