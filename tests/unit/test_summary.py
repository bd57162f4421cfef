"""The recursive summary (proxy.core.summary): prompt, transcript, chunking, gap note, bounds."""

from __future__ import annotations

import calendar
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import tokens
from proxy.core.summary import (
    SUMMARY_CUT,
    SUMMARY_SYSTEM_PROMPT,
    TRUNCATED,
    chunk_transcript,
    clamp_summary,
    gap_note,
    render_transcript,
    split_text,
    summary_request,
    target_words,
    transcript_budget,
)

TS = calendar.timegm((2024, 5, 1, 10, 32, 0))  # 2024-05-01 10:32 UTC
TS2 = calendar.timegm((2024, 5, 3, 18, 5, 0))


def call(name: str, args: str, cid: str = "c1") -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


# --------------------------------------------------------------------------- prompt


def test_system_prompt_demands_faithful_merged_verbatim_summary():
    p = SUMMARY_SYSTEM_PROMPT.lower()
    for phrase in (
        "verbatim",
        "names",
        "numbers",
        "ids",
        "dates",
        "places",
        "decisions",
        "preferences",
        "open tasks",
        "third person",
        "never invent",
        "merge",
        "previous summary",
        "bullet points",
        "length limit",
    ):
        assert phrase in p, phrase


def test_request_includes_previous_summary_transcript_and_length_target():
    request = summary_request("Alice lives in Oslo.", "user: I moved to Bergen", max_chars=4000)
    assert [m["role"] for m in request] == ["system", "user"]
    assert request[0]["content"] == SUMMARY_SYSTEM_PROMPT  # stable: cacheable
    user = request[1]["content"]
    assert "Alice lives in Oslo." in user and "user: I moved to Bergen" in user
    assert user.index("Alice lives") < user.index("I moved")
    assert f"at most {target_words(4000)} words" in user and "4000 characters" in user
    assert target_words(4000) == 500


def test_request_without_previous_summary_says_so():
    user = summary_request("  ", "user: hi", max_chars=800)[1]["content"]
    assert "(none" in user


# --------------------------------------------------------------------------- transcript


def test_transcript_renders_roles_tool_calls_and_results():
    text = render_transcript(
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("get_weather", '{"city": "Paris"}')],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18°C, sunny"},
            {"role": "assistant", "content": "It is 18°C and sunny."},
        ]
    )
    assert text.splitlines() == [
        "user: Weather in Paris?",
        'assistant called get_weather({"city": "Paris"})',
        "tool result: 18°C, sunny",
        "assistant: It is 18°C and sunny.",
    ]


def test_transcript_text_and_calls_in_one_message_and_parallel_calls():
    text = render_transcript(
        [
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [call("a", "{}", "1"), call("b", '{"x": 1}', "2")],
            },
        ]
    )
    assert text == 'assistant: Checking both.\nassistant called a({})\nassistant called b({"x": 1})'


def test_transcript_timestamps_are_utc_minutes():
    text = render_transcript(
        [
            {"role": "user", "content": "hi", "_created_at": TS},
            {"role": "assistant", "content": "hello", "_created_at": TS + 59.9},
            {"role": "user", "content": "no time"},
            {"role": "user", "content": "bad time", "_created_at": "yesterday"},
        ]
    )
    assert text.splitlines() == [
        "[2024-05-01 10:32] user: hi",
        "[2024-05-01 10:32] assistant: hello",
        "user: no time",
        "user: bad time",
    ]


def test_transcript_truncates_long_messages_and_arguments():
    long = "x" * 5000
    text = render_transcript(
        [
            {"role": "user", "content": long},
            {"role": "assistant", "content": None, "tool_calls": [call("f", long)]},
        ],
        max_chars_per_message=100,
    )
    first, second = text.splitlines()
    assert first == "user: " + "x" * 100 + TRUNCATED
    assert second == "assistant called f(" + "x" * 100 + TRUNCATED + ")"
    assert TRUNCATED == "…[truncated]"
    assert (
        render_transcript([{"role": "user", "content": "y" * 100}], max_chars_per_message=100)
        == "user: " + "y" * 100
    )


def test_transcript_content_parts_unicode_names_and_system():
    text = render_transcript(
        [
            {
                "role": "user",
                "name": "Zoë",
                "content": [
                    {"type": "text", "text": "Was steht hier? 日本語 🙂"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            },
            {"role": "developer", "content": "Be brief."},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        ]
    )
    assert text.splitlines() == [
        "user (Zoë): Was steht hier? 日本語 🙂 [image]",
        "system: Be brief.",
        "assistant: I can't.",
    ]


# --------------------------------------------------------------------------- chunking

texts = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400
) | st.sampled_from(["", "word " * 300, "日本語のテキスト" * 60, "🙂" * 50])
messages = st.lists(
    st.builds(
        lambda role, text, ts: {
            "role": role,
            "content": text,
            **({"_created_at": ts} if ts else {}),
        },
        st.sampled_from(["user", "assistant", "tool", "system"]),
        texts,
        st.one_of(st.none(), st.integers(0, 2_000_000_000)),
    ),
    max_size=12,
)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@settings(max_examples=150, deadline=None)
@given(messages, st.integers(4, 400))
def test_chunks_fit_the_budget_and_preserve_order_and_content(evicted, budget):
    chunks = chunk_transcript(evicted, budget_tokens=budget)
    full = render_transcript(evicted)
    assert all(tokens.count_text(c) <= budget for c in chunks)
    assert squash("".join(chunks)) == squash(full)
    if all(tokens.count_text(render_transcript([m])) <= budget for m in evicted):
        assert "\n".join(chunks) == full  # whole messages only, nothing lost between them


def test_chunking_packs_whole_messages_greedily():
    evicted = [{"role": "user", "content": "a" * 10}] * 5  # each block "user: aaaaaaaaaa" = 16
    chunks = chunk_transcript(evicted, budget_tokens=40, count=len)
    assert chunks == ["user: aaaaaaaaaa\nuser: aaaaaaaaaa"] * 2 + ["user: aaaaaaaaaa"]
    assert chunk_transcript(evicted, budget_tokens=10**6) == [render_transcript(evicted)]
    assert chunk_transcript([], budget_tokens=10) == []
    with pytest.raises(ValueError):
        chunk_transcript(evicted, budget_tokens=0)


def test_an_oversized_message_is_split_alone_at_word_boundaries():
    evicted = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "lorem ipsum " * 40},
        {"role": "user", "content": "bye"},
    ]
    chunks = chunk_transcript(evicted, budget_tokens=100, count=len)
    assert chunks[0] == "user: hi" and chunks[-1] == "user: bye"
    middle = chunks[1:-1]
    assert len(middle) >= 5 and all(len(c) <= 100 for c in middle)
    assert "".join(middle) == "assistant: " + ("lorem ipsum " * 40).strip()
    assert all(c.endswith(" ") for c in middle[:-1])


@settings(max_examples=100, deadline=None)
@given(texts, st.integers(1, 50))
def test_split_text_restores_exactly(text, budget):
    pieces = split_text(text, budget, len)
    assert "".join(pieces) == text and all(0 < len(p) <= budget for p in pieces)


def test_transcript_budget_leaves_room_for_a_full_request():
    window, reserve, max_chars = 8192, 1000, 4000
    budget = transcript_budget(window, reserve, max_chars=max_chars)
    assert 0 < budget < window - reserve - max_chars // 2
    assert (
        transcript_budget(window, reserve, max_chars=max_chars, previous_summary_tokens=0) > budget
    )
    previous = ("The user, Alice, lives in Oslo and prefers trains. " * 200)[:max_chars]
    huge = [{"role": "user", "content": "word " * 20_000}]
    chunk = chunk_transcript(huge, budget_tokens=budget)[0]
    request = summary_request(previous, chunk, max_chars=max_chars)
    assert tokens.count_messages(request) + reserve <= window
    assert transcript_budget(100, 90, max_chars=4000) == 1


# --------------------------------------------------------------------------- gap note


def test_gap_note_keeps_previous_summary_and_states_count_and_dates():
    evicted = [
        {"role": "user", "content": "a", "_created_at": TS},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c", "_created_at": TS2},
    ]
    out = gap_note("Alice lives in Oslo.", evicted, reason="summarizer timed out")
    assert out.startswith("Alice lives in Oslo.\n\n[Note: 3 earlier messages")
    assert "from 2024-05-01 10:32 UTC to 2024-05-03 18:05 UTC" in out
    assert "(summarizer timed out)" in out and "conversation_search" in out


def test_gap_note_without_summary_or_dates_and_singular():
    out = gap_note("", [{"role": "user", "content": "x"}], reason="HTTP 502")
    assert out == (
        "[Note: 1 earlier message was moved out of context without a summary"
        " (HTTP 502); use conversation_search to recall them.]"
    )


def test_consecutive_gaps_merge_into_one_note():
    single = gap_note("Summary.", [{"role": "user", "content": "a"}], reason="r")
    assert gap_note(single, [{"role": "user", "content": "a"}], reason="r").count("[Note:") == 1
    first = gap_note(
        "Summary.", [{"role": "user", "content": "a", "_created_at": TS}] * 2, reason="timeout"
    )
    second = gap_note(
        first,
        [{"role": "user", "content": "b", "_created_at": TS2}] * 3,
        reason="HTTP 500 (bad gateway)",
    )
    assert second.count("[Note:") == 1 and second.startswith("Summary.\n\n")
    assert "5 earlier messages from 2024-05-01 10:32 UTC to 2024-05-03 18:05 UTC" in second
    third = gap_note(second, [{"role": "user", "content": "c"}], reason="x")
    assert third.count("[Note:") == 1
    assert "6 earlier messages were moved" in third and third.startswith("Summary.")


def test_gap_note_survives_a_size_bound():
    previous = "Fact. " * 2000
    out = gap_note(previous, [{"role": "user", "content": "x"}], reason="r", max_chars=1000)
    assert len(out) <= 1000 and out.startswith("Fact.") and out.endswith("recall them.]")


# --------------------------------------------------------------------------- clamp


def test_clamp_keeps_short_summaries_and_cuts_at_a_sentence():
    assert clamp_summary("  Short one.  ", max_chars=100) == "Short one."
    text = "First sentence here. Second sentence is longer. Third one never fits at all."
    out = clamp_summary(text, max_chars=70)
    assert out == "First sentence here. Second sentence is longer." + SUMMARY_CUT
    lines = "- item one\n- item two\n- item three is much longer than the others"
    assert clamp_summary(lines, max_chars=45) == "- item one\n- item two" + SUMMARY_CUT
    cjk = "東京に住んでいる。猫が二匹いる。来月大阪へ引っ越す予定で、新しい仕事を探している。"
    assert clamp_summary(cjk, max_chars=40) == "東京に住んでいる。猫が二匹いる。" + SUMMARY_CUT


@settings(max_examples=200, deadline=None)
@given(texts, st.integers(0, 300))
def test_clamp_always_bounds(text, max_chars):
    out = clamp_summary(text, max_chars=max_chars)
    assert len(out) <= max_chars
    if len(text.strip()) <= max_chars:
        assert out == text.strip()
    elif max_chars > len(SUMMARY_CUT):
        assert out.endswith(SUMMARY_CUT) and text.strip().startswith(out[: -len(SUMMARY_CUT)])
