"""Planning a turn's input ahead (proxy/turn/ahead.py): from the last turn's tip alone, the
plan is either exactly what the full state gives or not made at all.

The property is what lets the store write the plan with its read: whenever `plan_ahead`
plans, `plan_input` over the whole state (its context, its last turn) plans the same input
under the same node, and reads nothing from the store either."""

from __future__ import annotations

import asyncio

from hypothesis import event, given, settings
from hypothesis import strategies as st

from proxy import tokens
from proxy.core.messages import visible_hash
from proxy.core.reconcile import Action
from proxy.core.tree import chain, hang
from proxy.core.types import (
    Block,
    Conversation,
    Message,
    NewMessage,
    StoredMessage,
    Turn,
    TurnState,
)
from proxy.turn.ahead import (
    MemoryOnly,
    NeedsStore,
    PlannedAhead,
    Tip,
    Tips,
    plan_ahead,
    tip_after,
)
from proxy.turn.input import InputPlan, client_hashes, plan_input, read_history
from tests.fakes.turns import MODEL, assistant, user

LAST_REQUEST = "the last turn's request"


def _state(messages: list[Message], *, resends: bool | None,
           last_status: str = "done") -> TurnState:
    """A conversation whose context is `messages`, one path from the root, its last turn
    (`last`) holding the final two messages."""
    paths = chain(visible_hash(m) for m in messages)
    context = [StoredMessage(seq=i + 1, data=m, turn_id=f"t{i // 2}", created_at=0.0,
                             tokens=tokens.count_message(m, MODEL),
                             visible_hash=visible_hash(m), parent_seq=i, path_hash=paths[i])
               for i, m in enumerate(messages)]
    last = Turn(context[-1].turn_id, 1, last_status, LAST_REQUEST, None, 0.0,
                response={"id": "r"}, first_seq=max(1, len(messages) - 1), finished_at=0.0)
    conversation = Conversation(1, 1, "c", 0.0, resends_history=resends)
    return TurnState(conversation, last, [Block("human")], len(messages), 0, context)


def _tip(state: TurnState) -> Tip:
    newest = state.context[-1]
    assert state.last_turn is not None and newest.path_hash
    return Tip(Conversation(**vars(state.conversation)), newest.seq, newest.path_hash,
               newest.role, state.last_turn.turn_id, state.last_turn.request_hash)


async def _ahead(state: TurnState, client: list[Message], *, fingerprint: str = "this one",
                 history_client: bool = False) -> PlannedAhead | None:
    return await plan_ahead(_tip(state), client_messages=client,
                            hashes=client_hashes(client), fingerprint=fingerprint,
                            model=MODEL, history_client=history_client, agent_resends=False)


async def _full(state: TurnState, client: list[Message], *, fingerprint: str = "this one",
                history_client: bool = False) -> InputPlan:
    """`plan_input` over the whole state, as the service plans after its read (a read of
    the store would raise NeedsStore: an append at the tip needs none)."""
    hashes = client_hashes(client)
    history = await read_history(MemoryOnly(), state, client, hashes, fingerprint,  # type: ignore[arg-type]
                                 history_client=history_client)
    return plan_input(state=state, history=history, client_messages=client, hashes=hashes,
                      fingerprint=fingerprint, model=MODEL, history_client=history_client,
                      agent_resends=False)


def _run(coro):  # noqa: ANN001, ANN202
    return asyncio.run(coro)


# --- the property ---------------------------------------------------------------------------
WORDS = ["hi", "hello", "yes", "no", "why?", "ok"]
message = st.builds(lambda role, text: {"role": role, "content": text},
                    st.sampled_from(["user", "assistant"]), st.sampled_from(WORDS))


@st.composite
def exchanges(draw: st.DrawFn) -> list[Message]:
    """A stored conversation: user/assistant pairs from a few words (repeats are likely)."""
    pairs = draw(st.integers(1, 4))
    return [m for _ in range(pairs) for m in (
        user(draw(st.sampled_from(WORDS))), assistant(draw(st.sampled_from(WORDS))))]


@st.composite
def requests(draw: st.DrawFn, stored: list[Message]) -> list[Message]:
    """What a client sends next: a new message alone, the history with new messages, the
    history cut at its start, edited, regenerated or resent, or anything at all."""
    new = [user(draw(st.sampled_from(WORDS))) for _ in range(draw(st.integers(1, 2)))]
    kind = draw(st.sampled_from(["alone", "alone", "history", "history", "cut", "edited",
                                 "regenerate", "resent", "random"]))  # appends: twice as often
    if kind == "alone":
        return new
    if kind == "history":
        return [*stored, *new]
    if kind == "cut":
        return [*stored[draw(st.integers(0, len(stored) - 1)):], *new]
    if kind == "edited":
        edited = list(stored)
        at = draw(st.integers(0, len(stored) - 1))
        edited[at] = {**edited[at], "content": draw(st.sampled_from(WORDS))}
        return [*edited, *new]
    if kind == "regenerate":
        return stored[:-1]
    if kind == "resent":
        return list(stored)
    return draw(st.lists(message, min_size=1, max_size=5))


@settings(max_examples=600, deadline=None)
@given(data=st.data(), resends=st.sampled_from([None, True, False]),
       history_client=st.booleans(), repeat=st.sampled_from([False, False, False, True]))
def test_a_plan_made_ahead_is_the_plan_the_full_state_gives(data, resends, history_client,
                                                              repeat):
    stored = data.draw(exchanges())
    client = data.draw(requests(stored))
    state = _state(stored, resends=resends)
    fingerprint = LAST_REQUEST if repeat else "this one"
    ahead = _run(_ahead(state, client, fingerprint=fingerprint, history_client=history_client))
    event("planned ahead" if ahead is not None else "not planned ahead")
    if ahead is None:
        return
    full = _run(_full(state, client, fingerprint=fingerprint, history_client=history_client))
    assert ahead.with_context(state) == full
    assert ahead.begin.inputs == full.inputs and ahead.begin.parent_seq == full.parent_seq
    assert ahead.begin.assumed.tip_seq == state.context[-1].seq
    assert ahead.begin.request_hash == fingerprint != LAST_REQUEST


# --- what is planned ahead and what is not ---------------------------------------------------
STORED = [user("where is the key?"), assistant("under the mat")]


def test_a_new_message_alone_is_planned_ahead_under_the_tip() -> None:
    state = _state(STORED, resends=False)
    ahead = _run(_ahead(state, [user("and the door?")]))
    assert ahead is not None
    assert ahead.plan.decision.action is Action.APPEND
    assert [m.data["content"] for m in ahead.begin.inputs] == ["and the door?"]
    assert ahead.begin.parent_seq == 2 and ahead.begin.assumed.tip_seq == 2
    assert ahead.begin.assumed.resends_history is False
    assert ahead.plan.reply_hash == ahead.begin.inputs[-1].path_hash


def test_a_chat_ui_resending_its_history_is_planned_ahead() -> None:
    state = _state(STORED, resends=True)
    ahead = _run(_ahead(state, [*STORED, user("and the door?")], history_client=True))
    assert ahead is not None
    assert [m.data["content"] for m in ahead.begin.inputs] == ["and the door?"]


def test_what_needs_the_state_or_the_store_is_not_planned_ahead() -> None:
    state = _state(STORED, resends=True)
    edited = [user("where is the car?"), STORED[1], user("and the door?")]
    assert _run(_ahead(state, edited)) is None  # a branch: looked up in the store
    assert _run(_ahead(state, STORED[:1])) is None  # a regenerate
    assert _run(_ahead(state, list(STORED))) is None  # nothing new
    # the same request as the last turn's: perhaps a replay, decided from the state
    assert _run(_ahead(state, [user("again")], fingerprint=LAST_REQUEST)) is None
    # a first request that teaches the conversation its client resends history
    learning = _state(STORED, resends=None)
    assert _run(_ahead(learning, [*STORED, user("and the door?")])) is None


def test_planning_ahead_reads_nothing() -> None:
    async def read() -> None:
        await MemoryOnly().find_nodes(1, [])

    try:
        _run(read())
    except NeedsStore as exc:
        assert str(exc) == "find_nodes"
    else:
        raise AssertionError("MemoryOnly read something")


# --- the tip a finished turn leaves ----------------------------------------------------------
def test_the_tip_is_the_last_stored_message_in_context_numbered_on() -> None:
    conversation = Conversation(1, 1, "c", 0.0, resends_history=False)
    steps = [NewMessage(assistant("calling a tool")),
             NewMessage({"role": "tool", "content": "42"}),
             NewMessage(assistant("the answer is 42"))]
    hang(steps, "input-path")
    tip = tip_after(conversation, "t9", "h9", 10, steps)
    assert tip is not None
    assert (tip.seq, tip.path_hash, tip.role, tip.turn_id, tip.request_hash) == (
        13, steps[-1].path_hash, "assistant", "t9", "h9")
    hidden = [*steps[:2], NewMessage(assistant("not in context"), in_context=False,
                                     path_hash="p")]
    tip = tip_after(conversation, "t9", "h9", 10, hidden)
    assert tip is not None and (tip.seq, tip.role) == (12, "tool")
    assert tip_after(conversation, "t9", "h9", None, steps) is None  # where it started unknown
    assert tip_after(conversation, "t9", "h9", 10, []) is None  # nothing stored


def test_tips_keep_the_newest_per_conversation_within_a_bound() -> None:
    tips = Tips()
    tips.LIMIT = 3

    def tip(pk: int, seq: int) -> Tip:
        return Tip(Conversation(pk, 1, f"c{pk}", 0.0), seq, "p", "assistant", "t", "h")

    for pk in range(1, 5):
        tips.put(tip(pk, 1))
    assert len(tips) == 3 and tips.get(1) is None  # the oldest went
    tips.put(tip(2, 7))
    assert tips.get(2) == tip(2, 7)
    tips.forget(2)
    assert tips.get(2) is None and len(tips) == 2
