"""The pure parts of forgetting and quotas (core/forgetting.py, core/quotas.py, the archival
insert's quota in core/tools.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from proxy.core.forgetting import (
    FORGOTTEN,
    cutoff,
    matches_all,
    query_words,
    redact,
    retention_days,
    scrub_lines,
)
from proxy.core.quotas import passage_quota
from proxy.core.tools import MemoryState, execute_memory_tool


def test_redact_keeps_the_shape_and_nothing_said():
    message = {"role": "assistant", "content": [{"type": "text", "text": "secret"}],
               "reasoning_content": "secret thoughts", "name": "Ada",
               "tool_calls": [{"id": "c1", "type": "function",
                               "function": {"name": "lookup", "arguments": '{"q": "secret"}'}}]}
    out = redact(message)
    assert out == {"role": "assistant", "content": FORGOTTEN,
                   "tool_calls": [{"id": "c1", "type": "function",
                                   "function": {"name": "lookup", "arguments": "{}"}}]}
    assert redact({"role": "tool", "tool_call_id": "c1", "content": "secret"}) == {
        "role": "tool", "tool_call_id": "c1", "content": FORGOTTEN}
    assert "secret" not in str(redact({"role": "user", "content": "secret",
                                       "tool_calls": "junk"}))


def test_a_query_matches_only_rows_with_every_word():
    words = query_words("My dog Rex!")
    assert words == ["my", "dog", "rex"]
    assert matches_all(words, "Rex is my dog")
    assert matches_all(words, "my dogs: Rex, Fido")  # an inflection
    assert matches_all(query_words("dogs"), "one dog")  # the other way round
    assert not matches_all(words, "my cat Rex")
    assert not matches_all(query_words("do"), "a dog")  # too short to be the same word
    assert matches_all(query_words("walk"), "walking home")
    assert not matches_all(query_words("dog"), "doggedly")
    assert not matches_all([], "anything")
    assert query_words("?! --") == []


def test_scrub_lines_drops_only_lines_with_every_word():
    words = query_words("Rex dog")
    assert scrub_lines(words, "Name: Ada\nHer dog Rex\nRex the cat") == "Name: Ada\nRex the cat"
    assert scrub_lines([], "keep\nall") == "keep\nall"
    assert scrub_lines(words, "") == ""


def test_retention_days_and_cutoff():
    assert retention_days(30, {}, "messages") == 30
    assert retention_days(30, {"retention_messages_days": 0}, "messages") == 0
    assert retention_days(0, {"retention_responses_days": 2.5}, "responses") == 2.5
    for junk in (-1, "7", True, None):
        assert retention_days(9, {"retention_messages_days": junk}, "messages") == 9
    assert cutoff(1000.0, 0) is None
    assert cutoff(200_000.0, 1) == 200_000.0 - 86_400.0


def limits(per_turn: int = 0, per_agent: int = 0) -> SimpleNamespace:
    return SimpleNamespace(agents_per_tenant=0, archival_inserts_per_turn=per_turn,
                           passages_per_agent=per_agent)


def test_passage_quota():
    assert passage_quota(limits(), 100) is None
    assert passage_quota(limits(per_turn=3), 100) == 3
    assert passage_quota(limits(per_agent=10), 8) == 2
    assert passage_quota(limits(per_agent=10), 12) == 0
    assert passage_quota(limits(per_turn=1, per_agent=10), 2) == 1


def test_archival_insert_stops_at_the_quota():
    state = MemoryState.of([])
    state.passage_quota = 1
    ctx = SimpleNamespace()

    def insert(text: str) -> tuple[str, bool]:
        return asyncio.run(execute_memory_tool(
            "archival_memory_insert", {"content": text}, state, ctx))

    assert insert("one") == ("OK: saved to archival memory.", True)
    result, ok = insert("two")
    assert not ok and "quota" in result and "nothing saved" in result
    assert state.new_passages == [("one", [])]
