"""A turn's input: what of the client's messages is new, and storing it before any upstream
call (docs/design.md §4.2, §5).

Three steps, so that the decision itself is a plain function:
1. `read_history` reads what the decision needs from the store — the visible transcript, only
   when this request can be compared with it, and whether an unfinished turn of this very
   request stored nothing yet;
2. `plan_input` (pure) reconciles the client's messages with that history and says what to
   store: the new messages with their hashes and token counts, what to supersede, what the
   conversation learned about its client, the turn to continue;
3. `store_input` writes the plan in one transaction and returns the turn id and the context
   with the input in it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .. import tokens
from ..core.messages import visible_hash
from ..core.reconcile import Action, Decision, StoredRef, learned_resends_history, reconcile
from ..core.types import (
    Agent,
    Conversation,
    Message,
    NewMessage,
    StoredMessage,
    Turn,
    TurnState,
)
from ..store.base import TurnStore


@dataclass(frozen=True)
class History:
    """What the store says about the conversation, as far as this request needs it."""

    transcript: list[StoredMessage]  # visible, not superseded; empty when not read
    read_transcript: bool  # whether the request was compared with the transcript
    pending: list[str] | None  # hashes of the unfinished last turn's input, if any
    unfinished_without_input: bool  # that turn is this very request and stored nothing


@dataclass(frozen=True)
class InputPlan:
    decision: Decision
    inputs: list[NewMessage]  # what to store as this turn's input (empty for CONTINUE)
    context: list[StoredMessage]  # the context without what the decision supersedes
    continue_turn: str | None  # the unfinished turn this request continues
    first_user: Message | None  # set when this turn gives the conversation its first reply
    learned_resends: bool | None  # the conversation's new `resends_history`, when it changed
    agent_learns_resends: bool  # the agent's new chats are conversations of their own


def client_hashes(client_messages: Sequence[Message]) -> dict[int, str]:
    """Each client message's visible hash, keyed by object identity: hashed once for
    reconciling and for storing (the decision's new input are the request's own objects)."""
    return {id(m): visible_hash(m) for m in client_messages}


def needs_transcript(state: TurnState, client_messages: Sequence[Message], fingerprint: str,
                     *, history_client: bool) -> bool:
    """Whether the request must be compared with the stored transcript: anything but the SDK
    style (only new messages, to a conversation whose last turn finished differently)."""
    last = state.last_turn
    return (
        (last is not None and (last.status != "done" or last.request_hash == fingerprint))
        or bool(state.conversation.resends_history)
        or history_client
        or any(m.get("role") == "assistant" for m in client_messages)
    )


def pending_input(last: Turn | None, transcript: Sequence[StoredMessage]) -> list[str] | None:
    """Hashes of the unfinished last turn's input (its user and tool messages), or None."""
    if last is None or last.status == "done":
        return None
    return [
        m.visible_hash or visible_hash(m.data)
        for m in transcript
        if m.turn_id == last.turn_id and m.role in ("user", "tool")
    ] or None


async def read_history(store: TurnStore, state: TurnState, client_messages: list[Message],
                       fingerprint: str, *, history_client: bool) -> History:
    conversation, last = state.conversation, state.last_turn
    read = needs_transcript(state, client_messages, fingerprint, history_client=history_client)
    transcript = await store.visible_transcript(conversation.pk) if read else []
    pending = pending_input(last, transcript)
    unfinished = False
    if (pending is None and last is not None and last.status != "done"
            and last.request_hash == fingerprint and last.first_seq is not None):
        # Whether `last` has no messages at all (not even superseded ones: a turn whose input
        # was discarded is not continued).
        rows = await store.list_messages(conversation.pk, after_seq=last.first_seq - 1,
                                         limit=1, include_superseded=True)
        unfinished = not any(m.turn_id == last.turn_id for m in rows)
    return History(transcript, read, pending, unfinished)


def plan_input(
    *,
    state: TurnState,
    history: History,
    client_messages: list[Message],
    hashes: dict[int, str],
    fingerprint: str,
    model: str,
    retry: bool,
    history_client: bool,
    agent_resends: bool,
) -> InputPlan:
    """Reconcile the client's messages with the stored history (pure)."""
    conversation, last = state.conversation, state.last_turn
    transcript = history.transcript
    if history.unfinished_without_input:
        # The same request again after its turn stopped before storing anything of its own (a
        # regenerate cut off by a crash or an upstream failure): continue that turn.
        # Reconciling would take a resent lone first message for new input, stored twice.
        decision = Decision(Action.CONTINUE)
    else:
        resends = conversation.resends_history
        if resends is None and history_client:
            resends = True  # a chat UI's own header: it resends history until shown otherwise
        refs = [StoredRef(m.seq, m.visible_hash or visible_hash(m.data), m.role)
                for m in transcript]
        repeat = (last is not None and last.status == "done" and not retry
                  and last.request_hash == fingerprint)
        decision = reconcile(refs, client_messages, pending_input=history.pending,
                             resends_history=resends, repeat_of_last=repeat,
                             client_hashes=[hashes[id(m)] for m in client_messages])
    learned = learned_resends_history(client_messages, decision, conversation.resends_history,
                                      had_replies=last is not None)
    if learned == conversation.resends_history:
        learned = None
    cut = decision.supersede_from_seq
    kept = transcript if cut is None else [m for m in transcript if m.seq < cut]
    first_user: Message | None = None
    if last is None or (history.read_transcript
                        and not any(m.role == "assistant" for m in kept)):
        first_user = next((m for m in [*(k.data for k in kept), *decision.new_input]
                           if m.get("role") == "user"), None)
    context = list(state.context) if cut is None else [m for m in state.context if m.seq < cut]
    if decision.action is Action.CONTINUE and last is not None:
        return InputPlan(decision, [], context, last.turn_id, first_user, learned,
                         bool(learned) and not agent_resends)
    inputs = [
        NewMessage(m, visible=True, visible_hash=hashes.get(id(m)) or visible_hash(m),
                   tokens=tokens.count_message(m, model))
        for m in decision.new_input
    ]
    return InputPlan(decision, inputs, context, None, first_user, learned,
                     bool(learned) and not agent_resends)


async def store_input(
    store: TurnStore,
    plan: InputPlan,
    *,
    agent: Agent,
    conversation: Conversation,
    fingerprint: str,
    idempotency_key: str | None,
) -> tuple[str, list[StoredMessage]]:
    """Write the plan; return the turn id to answer and the context with the input in it."""
    if plan.learned_resends is not None:
        await store.update_conversation(conversation.pk, resends_history=plan.learned_resends)
        conversation.resends_history = plan.learned_resends
        if plan.agent_learns_resends:
            # New chats of this agent's client start conversations of their own.
            agent.settings = {**agent.settings, "resends_history": True}
            await store.update_agent_settings(agent.pk, agent.settings)
    if plan.continue_turn is not None:
        await store.reopen_turn(plan.continue_turn)
        return plan.continue_turn, plan.context
    turn_id = uuid.uuid4().hex
    now = time.time()
    first_seq = await store.begin_turn(
        conversation.pk, turn_id, fingerprint, idempotency_key, plan.inputs,
        supersede_from_seq=plan.decision.supersede_from_seq,
    )
    context = plan.context + [
        StoredMessage(seq=first_seq + i, data=m.data, turn_id=turn_id, created_at=now,
                      tokens=m.tokens, visible_hash=m.visible_hash)
        for i, m in enumerate(plan.inputs)
    ]
    return turn_id, context
