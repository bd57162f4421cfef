"""Reconciliation of client histories with the stored transcript (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.messages import visible_hash
from proxy.core.reconcile import Action, StoredRef, reconcile


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


def stored(*messages: dict, start: int = 1) -> list[StoredRef]:
    return [StoredRef(start + i, visible_hash(m), m["role"]) for i, m in enumerate(messages)]


def test_sdk_style_single_message_is_new_input():
    decision = reconcile(stored(u("hi"), a("hello")), [u("hi")])
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("hi")]
    assert decision.supersede_from_seq is None


def test_first_request_of_a_chat_ui_is_new_input():
    decision = reconcile([], [u("hi")])
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("hi")]


def test_resent_history_appends_only_the_new_tail():
    history = [u("one"), a("1"), u("two"), a("2")]
    decision = reconcile(stored(*history), [*history, u("three")])
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("three")]


def test_cosmetic_differences_still_match():
    history = [u("one"), a("The answer  is\n 1.")]
    resent = [
        {"role": "user", "content": [{"type": "text", "text": " one ", "cache_control": {}}]},
        {"role": "assistant", "content": "The answer is 1.", "name": "bot"},
        u("two"),
    ]
    decision = reconcile(stored(*history), resent)
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("two")]


def test_tool_call_arguments_are_compared_as_json():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1, "b": 2}'}}
    echoed = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"b":2,"a":1}'}}
    history = [u("go"), {"role": "assistant", "content": None, "tool_calls": [call]}]
    resent = [u("go"), {"role": "assistant", "content": None, "tool_calls": [echoed]},
              {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    decision = reconcile(stored(*history), resent)
    assert decision.action is Action.APPEND
    assert decision.new_input == [resent[-1]]


def test_regenerate_supersedes_the_last_reply():
    history = [u("one"), a("1"), u("two"), a("2")]
    decision = reconcile(stored(*history), [u("one"), a("1"), u("two")])
    assert decision.action is Action.REGENERATE
    assert decision.new_input == []
    assert decision.supersede_from_seq == 4


def test_edit_of_an_earlier_message_branches_there():
    history = [u("one"), a("1"), u("two"), a("2"), u("three"), a("3")]
    decision = reconcile(stored(*history), [u("one"), a("1"), u("TWO!")])
    assert decision.action is Action.BRANCH
    assert decision.new_input == [u("TWO!")]
    assert decision.supersede_from_seq == 3


def test_client_side_compaction_anchors_on_recent_messages():
    history = [u("one"), a("1"), u("two"), a("2"), u("three"), a("3")]
    resent = [u("summary of one and two"), u("three"), a("3"), u("four")]
    decision = reconcile(stored(*history), resent)
    assert decision.action is Action.ANCHOR
    assert decision.new_input == [u("four")]
    assert decision.supersede_from_seq is None


def test_unknown_history_takes_only_what_follows_the_last_assistant():
    history = [u("one"), a("1")]
    resent = [u("x"), a("y"), u("z1"), u("z2")]
    decision = reconcile(stored(*history), resent)
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("z1"), u("z2")]
    assert decision.supersede_from_seq is None


def test_retry_of_an_unanswered_turn_continues_it():
    history = [u("one"), a("1"), u("two")]
    pending = [visible_hash(u("two"))]
    sdk = reconcile(stored(*history), [u("two")], pending_input=pending)
    ui = reconcile(stored(*history), history, pending_input=pending)
    assert sdk.action is Action.CONTINUE and sdk.stores_nothing
    assert ui.action is Action.CONTINUE and ui.stores_nothing


def test_different_input_after_a_failed_turn_is_new():
    history = [u("one"), a("1"), u("two")]
    decision = reconcile(stored(*history), [u("three")], pending_input=[visible_hash(u("two"))])
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("three")]


# --- properties ---------------------------------------------------------------------------

texts = st.text(alphabet="ab ", min_size=1, max_size=3)


@st.composite
def conversations(draw):
    turns = draw(st.integers(min_value=0, max_value=6))
    messages = []
    for _ in range(turns):
        messages.append(u(draw(texts)))
        messages.append(a(draw(texts)))
    return messages


@settings(max_examples=300, deadline=None)
@given(conversations(), st.lists(texts, min_size=1, max_size=3))
def test_resending_the_stored_history_never_duplicates_it(history, new_texts):
    new = [u(t) for t in new_texts]
    decision = reconcile(stored(*history), [*history, *new])
    if history:
        assert decision.new_input == new
        assert decision.supersede_from_seq is None
    else:
        assert decision.new_input == new


@settings(max_examples=300, deadline=None)
@given(conversations(), st.integers(min_value=0, max_value=12), texts)
def test_after_any_decision_the_kept_transcript_plus_input_equals_the_client_view(
    history, cut, text
):
    """The stored transcript (minus superseded) plus the new input is a suffix-consistent
    version of what the client sent: its tail always equals the client's tail."""
    client = [*history[: min(cut, len(history))], u(text)]
    refs = stored(*history)
    decision = reconcile(refs, client)
    kept = [
        m for m, r in zip(history, refs, strict=True)
        if decision.supersede_from_seq is None or r.seq < decision.supersede_from_seq
    ]
    result = kept + decision.new_input
    assert [visible_hash(m) for m in result[-1:]] == [visible_hash(client[-1])]
    assert len(result) <= len(history) + len(client)


# --- what the conversation has learned about its client -----------------------------------

from proxy.core.reconcile import learned_resends_history  # noqa: E402


def test_a_history_client_regenerates_its_first_reply_with_the_lone_first_message():
    decision = reconcile(stored(u("hi"), a("hello"), u("more"), a("sure")), [u("hi")],
                         resends_history=True)
    assert decision.action is Action.REGENERATE and decision.supersede_from_seq == 2


def test_a_history_client_editing_its_first_message_branches_at_the_start():
    decision = reconcile(stored(u("hi"), a("hello")), [u("hi there")], resends_history=True)
    assert decision.action is Action.BRANCH
    assert decision.supersede_from_seq == 1 and decision.new_input == [u("hi there")]


def test_the_same_body_again_is_a_regenerate_unless_the_client_is_sdk_style():
    history = stored(u("hello"), a("hi"), u("yes"), a("ok"))
    repeat = reconcile(history, [u("yes")], repeat_of_last=True)
    assert repeat.action is Action.REGENERATE and repeat.supersede_from_seq == 4
    sdk = reconcile(history, [u("yes")], repeat_of_last=True, resends_history=False)
    assert sdk.action is Action.APPEND and sdk.new_input == [u("yes")]


def test_learning_the_client_style():
    echo = [u("hi"), a("hello"), u("more")]
    appended = reconcile(stored(u("hi"), a("hello")), echo)
    assert learned_resends_history(echo, appended, None, had_replies=True) is True
    lone = reconcile(stored(u("hi"), a("hello")), [u("more")])
    assert learned_resends_history([u("more")], lone, None, had_replies=True) is False
    assert learned_resends_history([u("first")], lone, None, had_replies=False) is None
    regen = reconcile(stored(u("hi"), a("hello")), [u("hi")], resends_history=True)
    assert learned_resends_history([u("hi")], regen, True, had_replies=True) is True
