"""A turn's input (`proxy.turn.input`): the pure `plan_input` over hand-built states and
histories, and `read_history` against the in-memory store."""

from __future__ import annotations

import asyncio
import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import tokens
from proxy.core.messages import visible_hash
from proxy.core.reconcile import Action, Found, longest_known, tip_length
from proxy.core.tree import ROOT_SEQ, chain, hang
from proxy.core.types import (
    Block,
    Conversation,
    Message,
    NewMessage,
    StoredMessage,
    Turn,
    TurnResult,
    TurnState,
)
from proxy.turn.input import (
    History,
    InputPlan,
    client_hashes,
    node_of,
    plan_input,
    read_history,
    visible_tail,
)
from tests.fakes.store import InMemoryTurnStore
from tests.fakes.turns import MODEL, assistant, user


def stored(messages: list[Message], *, first_seq: int = 1) -> list[StoredMessage]:
    """A transcript of finished exchanges: turn `tN` holds the Nth user message and reply,
    each message the child of the one before (one path from the root)."""
    paths = chain(visible_hash(m) for m in messages)
    return [StoredMessage(seq=first_seq + i, data=m, turn_id=f"t{i // 2}", created_at=0.0,
                          tokens=tokens.count_message(m, MODEL), visible_hash=visible_hash(m),
                          parent_seq=first_seq + i - 1 if i else 0, path_hash=paths[i])
            for i, m in enumerate(messages)]


def turn(turn_id: str, status: str = "done", request_hash: str = "earlier",
         first_seq: int | None = 1) -> Turn:
    return Turn(turn_id, 1, status, request_hash, None, 0.0, first_seq=first_seq)


def state_of(transcript: list[StoredMessage], last: Turn | None = None, *,
             resends: bool | None = None, context: list[StoredMessage] | None = None,
             ) -> TurnState:
    conversation = Conversation(1, 1, "c", 0.0, resends_history=resends)
    return TurnState(conversation, last, [Block("human")], len(transcript), 0,
                     list(transcript if context is None else context))


def plan(state: TurnState, client: list[Message], *, read: bool = True,
         transcript: list[StoredMessage] | None = None,
         pending: list[str] | None = None, unfinished: bool = False,
         history_client: bool = False, agent_resends: bool = False,
         fingerprint: str = "this request") -> InputPlan:
    """`plan_input` with the request located in `transcript` (default: the context) when
    `read`, as `read_history` would locate it."""
    rows = list(state.context) if transcript is None else transcript
    tip = node_of(state.context[-1]) if state.context else None
    found = None
    if read:
        path = chain(visible_hash(m) for m in client)
        length = tip_length(path, tip)
        found = (Found(length, tip) if length and tip is not None else
                 longest_known(path, {m.path_hash: node_of(m) for m in rows if m.path_hash}))
    history = History(tip, found, [h for h, _ in visible_tail(state.context)], pending,
                      unfinished)
    return plan_input(
        state=state, history=history,
        client_messages=client, hashes=client_hashes(client), fingerprint=fingerprint,
        model=MODEL, history_client=history_client, agent_resends=agent_resends)


def test_a_first_message_is_new_input_with_its_hash_and_tokens() -> None:
    message = user("hello")
    result = plan(state_of([]), [message])
    assert result.decision.action is Action.APPEND
    [new] = result.inputs
    assert new.data is message and new.visible
    assert (new.visible_hash, new.tokens) == (visible_hash(message),
                                              tokens.count_message(message, MODEL))
    assert new.path_hash == chain([visible_hash(message)])[0]  # the root's child
    assert (result.parent_seq, result.reply_hash) == (ROOT_SEQ, new.path_hash)
    assert (result.continue_turn, result.learned_resends, result.context) == (None, None, [])


def test_an_sdk_style_second_message_is_new_input_and_teaches_no_resends() -> None:
    transcript = stored([user("q1"), assistant("a1")])
    result = plan(state_of(transcript, turn("t0")), [user("q2")], read=False)
    assert [m.data for m in result.inputs] == [user("q2")]
    assert result.decision.parent is None and result.context == transcript
    assert result.parent_seq == 2  # under the tip
    assert result.learned_resends is False and not result.agent_learns_resends


def test_a_resent_history_teaches_the_conversation_and_the_agent() -> None:
    transcript = stored([user("q1"), assistant("a1")])
    client = [user("q1"), assistant("a1"), user("q2")]
    result = plan(state_of(transcript, turn("t0")), client)
    assert [m.data for m in result.inputs] == [user("q2")]
    assert result.learned_resends is True and result.agent_learns_resends
    known = plan(state_of(transcript, turn("t0")), client, agent_resends=True)
    assert known.learned_resends is True and not known.agent_learns_resends


def test_a_regenerate_supersedes_the_last_reply_and_cuts_it_from_the_context() -> None:
    transcript = stored([user("q1"), assistant("a1"), user("q2"), assistant("a2")])
    # the first message was paged out: the context is shorter than the transcript
    state = state_of(transcript, turn("t1", first_seq=3), resends=True, context=transcript[1:])
    result = plan(state, [user("q1"), assistant("a1"), user("q2")], transcript=transcript)
    assert result.decision.action is Action.REGENERATE
    assert result.parent_seq == 3 and result.inputs == [] and not result.reload
    assert result.reply_hash == transcript[2].path_hash
    assert [m.seq for m in result.context] == [2, 3]


def test_a_move_before_the_context_reads_the_context_again() -> None:
    transcript = stored([user("q1"), assistant("a1"), user("q2"), assistant("a2")])
    state = state_of(transcript, turn("t1", first_seq=3), resends=True, context=transcript[2:])
    result = plan(state, [user("q1"), assistant("a1"), user("edited")], transcript=transcript)
    assert result.decision.action is Action.BRANCH and result.parent_seq == 2
    assert result.reload  # the summary covers a1: the new path's summary comes from the store


def test_a_resend_of_a_failed_turns_input_continues_that_turn() -> None:
    transcript = stored([user("q1"), assistant("a1"), user("q2")])
    failed = turn("t1", status="failed", first_seq=3)
    result = plan(state_of(transcript, failed), [user("q2")],
                  pending=[visible_hash(user("q2"))])
    assert result.decision.action is Action.CONTINUE
    assert (result.continue_turn, result.inputs) == ("t1", [])
    assert result.context == transcript


def test_the_same_request_after_its_turn_stored_nothing_continues_it() -> None:
    transcript = stored([user("q1"), assistant("a1")])
    cut = turn("t1", status="failed", request_hash="this request", first_seq=3)
    result = plan(state_of(transcript, cut, resends=True), [user("q1")], unfinished=True)
    assert (result.decision.action, result.continue_turn) == (Action.CONTINUE, "t1")


exchanges = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=5)


@settings(max_examples=200, deadline=None)
@given(exchanges, st.lists(st.text(max_size=12), min_size=1, max_size=4),
       st.sampled_from([None, True, False]), st.booleans())
def test_a_resent_transcript_plus_new_messages_stores_exactly_the_new_ones(
    pairs: list[tuple[str, str]], new_texts: list[str], resends: bool | None,
    history_client: bool,
) -> None:
    history = [m for question, answer in pairs for m in (user(question), assistant(answer))]
    transcript = stored(history)
    state = state_of(transcript, turn(f"t{len(pairs) - 1}") if pairs else None, resends=resends)
    new = [user(text) for text in new_texts]
    before = copy.deepcopy(state)
    result = plan(state, [*copy.deepcopy(history), *new], history_client=history_client)
    assert [m.data for m in result.inputs] == new
    assert result.decision.parent is None and result.continue_turn is None
    assert result.context == transcript
    assert [m.path_hash for m in result.inputs] == chain(
        visible_hash(m) for m in [*history, *new])[len(history):]
    assert state == before  # pure: the state it was given is unchanged


def test_read_history_locates_a_request_without_a_query_when_it_reaches_the_tip() -> None:
    async def scenario() -> None:
        store = InMemoryTurnStore()
        agent = await store.ensure_agent("t", "a", [])
        conversation = await store.ensure_conversation(agent.pk, "c")
        first = stored([user("q1")])[0]
        await store.begin_turn(conversation.pk, "t0", "h0", None, [_new(first)], parent_seq=0)
        state = await store.load_turn_state(agent.pk, conversation.pk)
        assert state.last_turn is not None and state.last_turn.status == "open"
        store.calls.clear()

        # a different request while the last turn is unfinished: its input is pending
        client = [user("q2")]
        history = await read_history(store, state, client, client_hashes(client), "h1",
                                     history_client=False)
        assert history.pending == [visible_hash(user("q1"))] and history.found is None

        await store.finish_turn("t0", conversation.pk, agent.pk, _result(first.path_hash))
        state = await store.load_turn_state(agent.pk, conversation.pk)
        store.calls.clear()
        sdk = await read_history(store, state, client, client_hashes(client), "h1",
                                 history_client=False)
        assert (sdk.found, sdk.pending) == (None, None)
        assert store.calls == []  # the SDK style reads nothing more
        resent = [user("q1"), assistant("a1"), user("q2")]
        ui = await read_history(store, state, resent, client_hashes(resent), "h1",
                                history_client=True)
        assert ui.found is not None and (ui.found.length, ui.found.node.seq) == (2, 2)
        assert store.calls == []  # at the tip: no lookup
        edit = [user("q1"), assistant("a1"), user("q2"), assistant("a2"), user("q3")]
        none = await read_history(store, state, edit, client_hashes(edit), "h1",
                                  history_client=True)
        assert none.found is not None and none.found.length == 2
        assert store.calls == ["find_nodes"]

    asyncio.run(scenario())


def test_read_history_continues_only_a_turn_that_stored_nothing_at_all() -> None:
    async def scenario() -> None:
        store = InMemoryTurnStore()
        agent = await store.ensure_agent("t", "a", [])
        conversation = await store.ensure_conversation(agent.pk, "c")
        await store.begin_turn(conversation.pk, "t0", "same", None, [], parent_seq=0)
        await store.fail_turn("t0", {"status": 503})
        state = await store.load_turn_state(agent.pk, conversation.pk)
        client = [user("q")]
        history = await read_history(store, state, client, client_hashes(client), "same",
                                     history_client=False)
        assert history.unfinished_without_input

        # a turn whose input was discarded (superseded) is not continued
        await store.begin_turn(conversation.pk, "t1", "again", None, [_new(stored(
            [user("q")])[0])])
        await store.discard_turn("t1", {"status": 400})
        state = await store.load_turn_state(agent.pk, conversation.pk)
        history = await read_history(store, state, client, client_hashes(client), "again",
                                     history_client=False)
        assert not history.unfinished_without_input

    asyncio.run(scenario())


def _new(message: StoredMessage) -> NewMessage:
    return NewMessage(message.data, visible_hash=message.visible_hash, tokens=message.tokens,
                      path_hash=message.path_hash)


def _result(after: str | None) -> TurnResult:
    reply = NewMessage(assistant("a1"))
    hang([reply], after or "")
    return TurnResult([reply], [], [], {})
