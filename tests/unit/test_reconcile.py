"""Reconciliation of client histories with the conversation's tree (pure): where a request's
history ends in what is stored, and what of it is new."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.messages import visible_hash
from proxy.core.reconcile import (
    ROOT,
    Action,
    Found,
    anchor_in_tail,
    anchor_length,
    learned_resends_history,
    longest_known,
    reconcile,
    tip_length,
)
from proxy.core.tree import Node, chain


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


class Tree:
    """Stored paths as the lookups see them: every prefix of every path is a node; the
    active path's nodes are active, the others' are superseded."""

    def __init__(self, active: list[dict], *others: list[dict]) -> None:
        self.nodes: dict[str, Node] = {}
        self.messages = active
        self.seq = 0
        for path in others:
            self._add(path, active=False)
        self.active = self._add(active, active=True)

    def _add(self, path: list[dict], *, active: bool) -> list[Node]:
        out = []
        for h, m in zip(chain(visible_hash(m) for m in path), path, strict=True):
            node = self.nodes.get(h)
            if node is None or (active and not node.active):
                self.seq += 1
                node = Node(self.seq, h, m["role"], active=active)
                self.nodes[h] = node
            out.append(node)
        return out

    @property
    def tip(self) -> Node | None:
        return self.active[-1] if self.active else None

    def decide(self, client: list[dict], **kwargs):
        hashes = [visible_hash(m) for m in client]
        path = chain(hashes)
        length = tip_length(path, self.tip)
        found = Found(length, self.tip) if length and self.tip else longest_known(path, self.nodes)
        if found is None and (m := anchor_length(hashes, [c["role"] for c in client])):
            tail = [(visible_hash(msg), node)
                    for msg, node in zip(self.messages, self.active, strict=True)]
            found = anchor_in_tail(hashes, [c["role"] for c in client], tail, m)
        return reconcile(client, hashes, tip=self.tip, found=found, **kwargs)


tree = Tree


def test_sdk_style_single_message_is_new_input_at_the_tip():
    decision = tree([u("hi"), a("hello")]).decide([u("hi")])
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("hi")] and decision.parent is None


def test_first_request_of_a_chat_ui_is_new_input():
    decision = tree([]).decide([u("hi")], resends_history=True)
    assert decision.action is Action.APPEND and decision.new_input == [u("hi")]


def test_resent_history_appends_only_the_new_tail():
    history = [u("one"), a("1"), u("two"), a("2")]
    decision = tree(history).decide([*history, u("three")])
    assert decision.action is Action.APPEND
    assert decision.new_input == [u("three")] and not decision.moves_path


def test_cosmetic_differences_still_match():
    history = [u("one"), a("The answer  is\n 1.")]
    resent = [
        {"role": "user", "content": [{"type": "text", "text": " one ", "cache_control": {}}]},
        {"role": "assistant", "content": "The answer is 1.", "name": "bot"},
        u("two"),
    ]
    decision = tree(history).decide(resent)
    assert decision.action is Action.APPEND and decision.new_input == [u("two")]


def test_tool_call_arguments_are_compared_as_json():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1, "b": 2}'}}
    echoed = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"b":2,"a":1}'}}
    history = [u("go"), {"role": "assistant", "content": None, "tool_calls": [call]}]
    resent = [u("go"), {"role": "assistant", "content": None, "tool_calls": [echoed]},
              {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    decision = tree(history).decide(resent)
    assert decision.action is Action.APPEND and decision.new_input == [resent[-1]]


def test_regenerate_answers_the_last_user_message_again():
    history = [u("one"), a("1"), u("two"), a("2")]
    t = tree(history)
    decision = t.decide([u("one"), a("1"), u("two")])
    assert decision.action is Action.REGENERATE and decision.new_input == []
    assert decision.parent == t.active[2] and not decision.switches


def test_edit_of_an_earlier_message_branches_under_its_parent():
    history = [u("one"), a("1"), u("two"), a("2"), u("three"), a("3")]
    t = tree(history)
    decision = t.decide([u("one"), a("1"), u("TWO!")])
    assert decision.action is Action.BRANCH
    assert decision.new_input == [u("TWO!")] and decision.parent == t.active[1]


def test_switching_back_to_a_branch_that_splits_at_message_one():
    alpha = [u("The code word is alpha"), a("Noted")]
    beta = [u("The code word is beta"), a("Noted")]
    t = tree(beta, alpha)
    decision = t.decide([*alpha, u("What is the code word?")], resends_history=True)
    assert decision.action is Action.SWITCH and decision.switches
    assert decision.parent.path_hash == chain(visible_hash(m) for m in alpha)[-1]
    assert decision.new_input == [u("What is the code word?")]


def test_an_identical_exchange_on_two_branches_is_told_apart_by_its_path():
    one = [u("first"), a("1"), u("same"), a("same reply")]
    two = [u("second"), a("2"), u("same"), a("same reply")]
    t = tree(two, one)
    decision = t.decide([*one, u("next")])
    assert decision.action is Action.SWITCH
    assert decision.parent.path_hash == chain(visible_hash(m) for m in one)[-1]
    assert decision.new_input == [u("next")]


def test_a_history_never_seen_is_a_new_branch_from_the_root_holding_all_of_it():
    t = tree([u("one"), a("1")])
    resent = [u("x"), a("y"), u("z1"), u("z2")]
    decision = t.decide(resent)
    assert decision.action is Action.BRANCH
    assert decision.parent == ROOT and decision.new_input == resent


def test_a_client_that_dropped_its_oldest_turns_anchors_on_the_active_path():
    history = [u("one"), a("1"), u("two"), a("2"), u("three"), a("3")]
    t = tree(history)
    decision = t.decide([u("three"), a("3"), u("four")])
    assert decision.action is Action.ANCHOR
    assert decision.new_input == [u("four")] and decision.parent is None  # at the tip


def test_a_lone_user_message_never_anchors_but_a_reply_does():
    history = [u("hi"), a("hello"), u("hi"), a("again")]
    assert anchor_in_tail([visible_hash(u("hi"))], ["user"],
                          [(visible_hash(m), Node(i, "", m["role"], True))
                           for i, m in enumerate(history)]) is None
    decision = tree(history).decide([a("again"), u("more")])
    assert decision.action is Action.ANCHOR and decision.new_input == [u("more")]


def test_retry_of_an_unanswered_turn_continues_it():
    history = [u("one"), a("1"), u("two")]
    pending = [visible_hash(u("two"))]
    tail = [visible_hash(m) for m in history]
    t = tree(history)
    sdk = t.decide([u("two")], pending_input=pending, active_tail=tail)
    ui = t.decide(history, pending_input=pending, active_tail=tail)
    assert sdk.action is Action.CONTINUE and sdk.stores_nothing
    assert ui.action is Action.CONTINUE and ui.stores_nothing


def test_different_input_after_a_failed_turn_is_new():
    history = [u("one"), a("1"), u("two")]
    decision = tree(history).decide([u("three")], pending_input=[visible_hash(u("two"))],
                                    active_tail=[visible_hash(m) for m in history])
    assert decision.action is Action.APPEND and decision.new_input == [u("three")]


def test_a_history_client_regenerates_its_first_reply_with_the_lone_first_message():
    t = tree([u("hi"), a("hello"), u("more"), a("sure")])
    decision = t.decide([u("hi")], resends_history=True)
    assert decision.action is Action.REGENERATE and decision.parent == t.active[0]


def test_a_history_client_editing_its_first_message_branches_at_the_root():
    decision = tree([u("hi"), a("hello")]).decide([u("hi there")], resends_history=True)
    assert decision.action is Action.BRANCH
    assert decision.parent == ROOT and decision.new_input == [u("hi there")]


def test_the_same_body_again_from_an_unknown_client_is_new_input():
    """An SDK asking the same again; a resend whose answer never arrived is replayed before
    reconciling (turn/service.py), and a known chat UI's lone first message is message 1."""
    history = [u("hello"), a("hi"), u("yes"), a("ok")]
    decision = tree(history).decide([u("yes")])
    assert decision.action is Action.APPEND and decision.new_input == [u("yes")]


def test_learning_the_client_style():
    t = tree([u("hi"), a("hello")])
    echo = [u("hi"), a("hello"), u("more")]
    assert learned_resends_history(echo, t.decide(echo), None, had_replies=True) is True
    lone = t.decide([u("more")])
    assert learned_resends_history([u("more")], lone, None, had_replies=True) is False
    assert learned_resends_history([u("first")], lone, None, had_replies=False) is None


# --- properties ---------------------------------------------------------------------------
texts = st.text(alphabet="ab ", min_size=1, max_size=3)


@st.composite
def exchanges(draw, max_turns=5):
    turns = draw(st.integers(min_value=0, max_value=max_turns))
    out = []
    for _ in range(turns):
        out += [u(draw(texts)), a(draw(texts))]
    return out


@settings(max_examples=300, deadline=None)
@given(exchanges(), st.lists(exchanges(), max_size=3), st.data())
def test_new_input_is_exactly_what_follows_the_longest_stored_prefix(active, others, data):
    """Whatever branches are stored, a chat UI's history (any prefix of any stored branch,
    plus new messages) is split at its longest stored prefix: the rest is new, nothing
    stored is taken as new and nothing new is dropped."""
    t = tree(active, *others)
    base = data.draw(st.sampled_from([active, *others]))
    cut = data.draw(st.integers(0, len(base)))
    new = [u(x) for x in data.draw(st.lists(texts, min_size=1, max_size=2))]
    client = [*base[:cut], *new]
    decision = t.decide(client, resends_history=True)
    path = chain(visible_hash(m) for m in client)
    known = max(n for n in range(len(path) + 1) if n == 0 or path[n - 1] in t.nodes)
    if decision.action is Action.CONTINUE:
        return
    assert decision.new_input == client[known:]
    if known and decision.parent is not None:
        assert decision.parent.path_hash == path[known - 1]
    if decision.parent is not None and decision.parent != ROOT:
        assert decision.switches == (not t.nodes[decision.parent.path_hash].active)


def test_an_anchor_on_a_repeated_exchange_follows_the_request_furthest():
    """The same exchange twice on the path; a windowed client resends its last request (a
    regenerate): it anchors where its whole request is, not at the later copy."""
    history = [u("x"), a("1"), u("same"), a("same reply"), u("same"), a("same reply")]
    t = tree(history)
    decision = t.decide([u("same"), a("same reply"), u("same")])
    assert decision.action is Action.ANCHOR and decision.new_input == []
    assert decision.parent == t.active[4]  # the second "same": its reply is regenerated
