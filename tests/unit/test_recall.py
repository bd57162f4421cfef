"""Automatic recall's pure parts (core/recall.py): the query, the selection within a token
budget, what is left out, and the rendered section."""

from __future__ import annotations

import re

from proxy import tokens
from proxy.core.recall import (
    RECALL_CLOSE,
    RECALL_OPEN,
    SNIPPET_CHARS,
    Snippet,
    candidates,
    recall_query,
    render_line,
    render_recall,
    select_snippets,
    user_text,
)
from proxy.core.types import MessageHit, Passage
from proxy.turn.recall import wanted

T = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC


def count(text: str) -> int:
    return tokens.count_text(text, "gpt-4o-mini")


def snip(text: str, source: str = "user") -> Snippet:
    return Snippet(source, text, T)


def test_the_user_text_is_the_newest_user_message_of_the_input():
    messages = [{"role": "user", "content": "old"}, {"role": "assistant", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": " new one "}]}]
    assert user_text(messages) == "new one"
    assert user_text([{"role": "tool", "tool_call_id": "x", "content": "42"}]) == ""
    assert user_text([]) == ""
    assert len(user_text([{"role": "user", "content": "x" * 5000}])) == 1000


def user(text):
    return [{"role": "user", "content": text}]


def test_the_query_is_the_longest_distinct_words_in_their_order():
    assert recall_query(user("What is my name?")) == "what name"
    assert recall_query(user("Do you remember my sister's birthday party in Lisbon?")) == (
        "remember sister birthday lisbon")
    assert recall_query(user("Is it ok?")) == "is it ok"
    assert recall_query(user("Pixel pixel PIXEL")) == "pixel"
    assert recall_query(user("...")) == ""
    assert recall_query([]) == ""


def test_candidates_alternate_between_messages_and_passages():
    hits = [MessageHit("c", n, "user", f"m{n}", T, 1.0) for n in range(3)]
    passages = [Passage(1, "p0", [], T)]
    assert [c.text for c in candidates(hits, passages)] == ["m0", "p0", "m1", "m2"]
    assert candidates(hits, passages)[1].source == "archival"


def test_selection_keeps_order_and_stays_within_the_budget():
    found = [snip(f"fact number {n} about the user's garden and their dog") for n in range(20)]
    for budget in (0, 40, 80, 150, 400):
        chosen = select_snippets(found, budget_tokens=budget, count=count)
        assert chosen == found[:len(chosen)]
        if chosen:
            assert count(render_recall(chosen)) <= budget
    assert not select_snippets(found, budget_tokens=40, count=count)  # not even the header
    assert len(select_snippets(found, budget_tokens=10_000, count=count)) == 20


def test_a_snippet_too_big_is_skipped_and_a_smaller_one_still_fits():
    big, small = snip("word " * 100), snip("short fact")
    header = count(f"{RECALL_OPEN}\n\n{RECALL_CLOSE}") + 60
    chosen = select_snippets([big, small], budget_tokens=header + 20, count=count)
    assert chosen == [small]


def test_duplicates_empty_texts_and_what_the_prompt_holds_are_left_out():
    found = [snip("My name is Ada"), snip("my  name is ada"), snip("  "),
             snip("I live in Paris"), snip("What is my name?")]
    chosen = select_snippets(found, budget_tokens=1000, count=count,
                             seen=["What is my name?"])
    assert [c.text for c in chosen] == ["My name is Ada", "I live in Paris"]


def test_the_section_is_marked_and_dated():
    text = render_recall([snip("My name is Ada"), snip("Likes tea", "archival"),
                          snip("Noted", "assistant")])
    assert text.startswith(RECALL_OPEN + "\n") and text.endswith("\n" + RECALL_CLOSE)
    assert "- [Sat 2025-12-06 05:46 UTC] user said: My name is Ada" in text
    assert "- [Sat 2025-12-06 05:46 UTC] archival memory: Likes tea" in text
    assert "assistant said: Noted" in text
    assert render_recall([]) == ""


def test_a_long_snippet_is_clipped_and_flattened():
    line = render_line(snip("line one\nline two " + "x" * 2000))
    assert "\n" not in line and line.endswith("…")
    assert len(re.sub(r"^- \[[^]]+\] user said: ", "", line)) == SNIPPET_CHARS + 1


def test_modes():
    assert wanted("always", tools=True) and wanted("always", tools=False)
    assert wanted("no-tools", tools=False) and not wanted("no-tools", tools=True)
    assert not wanted("off", tools=False) and not wanted("off", tools=True)


class Backend:
    """A search backend answering from lists (the store's own search is tested e2e)."""

    def __init__(self, hits=(), passages=(), fail=False):
        self.hits, self.passages, self.fail = list(hits), list(passages), fail
        self.calls: list[str] = []

    async def search_messages(self, agent_pk, query, **kw):
        self.calls.append("messages")
        if self.fail:
            raise RuntimeError("database is locked")
        return self.hits

    async def search_passages(self, agent_pk, query, **kw):
        self.calls.append("passages")
        return self.passages


def run_section(backend, *, text="What is my name?", context=(), passages=0, budget=600):
    import asyncio

    from proxy.core.types import StoredMessage
    from proxy.turn.recall import recall_section

    stored = [StoredMessage(seq=s, data={"role": "user", "content": "x"}, turn_id="t",
                            created_at=T) for s in context]
    return asyncio.run(recall_section(
        backend, agent_pk=1, conversation_id="here", new_input=user(text), context=stored,
        archival_passages=passages, budget_tokens=budget, model="gpt-4o-mini"))


def test_recall_leaves_out_this_conversations_context_and_searches_archival_only_if_any():
    hits = [MessageHit("here", 12, "user", "in the prompt", T, 2.0),
            MessageHit("here", 3, "user", "paged out long ago", T, 1.5),
            MessageHit("elsewhere", 40, "user", "My name is Ada", T, 1.0)]
    backend = Backend(hits, [Passage(1, "Ada likes tea", [], T)])
    text = run_section(backend, context=[10, 11, 12])
    assert "in the prompt" not in text
    assert "paged out long ago" in text and "My name is Ada" in text
    assert "Ada likes tea" not in text and backend.calls == ["messages"]
    text = run_section(backend, context=[10], passages=1)
    assert "archival memory: Ada likes tea" in text
    assert backend.calls[-2:] == ["messages", "passages"]


def test_recall_costs_nothing_without_a_user_message_or_a_budget_and_survives_a_failure():
    backend = Backend([MessageHit("x", 1, "user", "My name is Ada", T, 1.0)])
    assert run_section(backend, text="   ") == ""
    assert run_section(backend, budget=0) == ""
    assert backend.calls == []
    assert run_section(Backend(fail=True)) == ""
