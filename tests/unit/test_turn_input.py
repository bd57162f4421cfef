"""A turn's input (`proxy.turn.input`): the pure `plan_input` over hand-built states and
histories, and `read_history` against the in-memory store."""

from __future__ import annotations

import asyncio
import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import tokens
from proxy.core.messages import visible_hash
from proxy.core.reconcile import Action
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
from proxy.turn.input import History, InputPlan, client_hashes, plan_input, read_history
from tests.fakes.store import InMemoryTurnStore
from tests.fakes.turns import MODEL, assistant, user


def stored(messages: list[Message], *, first_seq: int = 1) -> list[StoredMessage]:
    """A transcript of finished exchanges: turn `tN` holds the Nth user message and reply."""
    return [StoredMessage(seq=first_seq + i, data=m, turn_id=f"t{i // 2}", created_at=0.0,
                          tokens=tokens.count_message(m, MODEL), visible_hash=visible_hash(m))
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
         pending: list[str] | None = None, unfinished: bool = False, retry: bool = False,
         history_client: bool = False, agent_resends: bool = False,
         fingerprint: str = "this request") -> InputPlan:
    """`plan_input` with a history read from the context (or `transcript`) when `read`."""
    visible = (list(state.context) if transcript is None else transcript) if read else []
    return plan_input(
        state=state, history=History(visible, read, pending, unfinished),
        client_messages=client, hashes=client_hashes(client), fingerprint=fingerprint,
        model=MODEL, retry=retry, history_client=history_client, agent_resends=agent_resends)


def test_a_first_message_is_new_input_with_its_hash_and_tokens() -> None:
    message = user("hello")
    result = plan(state_of([]), [message])
    assert result.decision.action is Action.APPEND
    [new] = result.inputs
    assert new.data is message and new.visible
    assert (new.visible_hash, new.tokens) == (visible_hash(message),
                                              tokens.count_message(message, MODEL))
    assert result.first_user is message  # this turn gives the conversation its head
    assert (result.continue_turn, result.learned_resends, result.context) == (None, None, [])


def test_an_sdk_style_second_message_is_new_input_and_teaches_no_resends() -> None:
    transcript = stored([user("q1"), assistant("a1")])
    result = plan(state_of(transcript, turn("t0")), [user("q2")], read=False)
    assert [m.data for m in result.inputs] == [user("q2")]
    assert result.decision.supersede_from_seq is None and result.context == transcript
    assert result.learned_resends is False and not result.agent_learns_resends
    assert result.first_user is None


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
    assert result.decision.supersede_from_seq == 4 and result.inputs == []
    assert [m.seq for m in result.context] == [2, 3]


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
    assert result.decision.supersede_from_seq is None and result.continue_turn is None
    assert result.context == transcript
    assert state == before  # pure: the state it was given is unchanged


def test_read_history_reads_the_transcript_only_when_the_request_can_be_compared() -> None:
    async def scenario() -> None:
        store = InMemoryTurnStore()
        agent = await store.ensure_agent("t", "a", [])
        conversation = await store.ensure_conversation(agent.pk, "c")
        first = stored([user("q1")])[0]
        await store.begin_turn(conversation.pk, "t0", "h0", None, [_new(first)])
        state = await store.load_turn_state(agent.pk, conversation.pk)
        assert state.last_turn is not None and state.last_turn.status == "open"
        store.calls.clear()

        # a different request while the last turn is unfinished: compared, its input pending
        history = await read_history(store, state, [user("q2")], "h1", history_client=False)
        assert history.read_transcript and history.pending == [visible_hash(user("q1"))]

        await store.finish_turn("t0", conversation.pk, agent.pk, _result())
        state = await store.load_turn_state(agent.pk, conversation.pk)
        store.calls.clear()
        sdk = await read_history(store, state, [user("q2")], "h1", history_client=False)
        assert (sdk.read_transcript, sdk.transcript, sdk.pending) == (False, [], None)
        assert store.calls == []  # the SDK style reads nothing more
        ui = await read_history(store, state, [user("q2")], "h1", history_client=True)
        assert ui.read_transcript and [m.seq for m in ui.transcript] == [1, 2]

    asyncio.run(scenario())


def test_read_history_continues_only_a_turn_that_stored_nothing_at_all() -> None:
    async def scenario() -> None:
        store = InMemoryTurnStore()
        agent = await store.ensure_agent("t", "a", [])
        conversation = await store.ensure_conversation(agent.pk, "c")
        await store.begin_turn(conversation.pk, "t0", "same", None, [])
        await store.fail_turn("t0", {"status": 503})
        state = await store.load_turn_state(agent.pk, conversation.pk)
        history = await read_history(store, state, [user("q")], "same", history_client=False)
        assert history.unfinished_without_input

        # a turn whose input was discarded (superseded) is not continued
        await store.begin_turn(conversation.pk, "t1", "again", None, [_new(stored(
            [user("q")])[0])])
        await store.discard_turn("t1", {"status": 400})
        state = await store.load_turn_state(agent.pk, conversation.pk)
        history = await read_history(store, state, [user("q")], "again", history_client=False)
        assert not history.unfinished_without_input

    asyncio.run(scenario())


def _new(message: StoredMessage) -> NewMessage:
    return NewMessage(message.data, visible_hash=message.visible_hash, tokens=message.tokens)


def _result() -> TurnResult:
    reply = assistant("a1")
    return TurnResult([NewMessage(reply, visible_hash=visible_hash(reply))], [], [], {})
