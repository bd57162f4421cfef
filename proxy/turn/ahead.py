"""Planning a turn's input before its conversation is read, so that a store that can
(`begins_in_read`: Postgres) reads the state, takes the lease and stores the input in one
statement: one round trip fewer per turn (issue 19).

Most turns append to the conversation exactly where this process's last turn in it ended.
So the process remembers, per conversation, how its last turn here ended (`Tip`): the
newest message (seq, path hash), that turn, and what the conversation knows of its client.
From that alone `plan_ahead` plans the input with the functions input.py plans with, and
keeps the plan only when it is an append at that tip that needed no store read (a
`MemoryOnly` store refuses every read). The store's statement checks the assumptions
(`Assumed`) against the database in its own snapshot; when they hold, the plan is the one
the full state gives (tests/unit/test_turn_ahead.py checks this over generated
conversations and requests) and the input is stored with the read. When they do not —
another process answered in between, a turn failed, the client branched — nothing is
stored, and the turn is planned from the state the statement read, as without planning
ahead: the same two statements as before, never a wrong write.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..core.reconcile import Action
from ..core.types import (
    Assumed,
    Conversation,
    Message,
    NewMessage,
    PlannedBegin,
    StoredMessage,
    Turn,
    TurnState,
)
from .input import InputPlan, plan_input, read_history
from .observers import FinishedTurn


@dataclass(frozen=True)
class Tip:
    """How this process's last turn in a conversation ended: what the next turn assumes."""

    conversation: Conversation  # as that turn left it (resends_history)
    seq: int  # the newest message in context: the turn's reply
    path_hash: str
    role: str
    turn_id: str  # that turn, done
    request_hash: str


def tip_after(conversation: Conversation, turn_id: str, request_hash: str,
              input_tip_seq: int | None, stored: Sequence[NewMessage]) -> Tip | None:
    """The Tip once a turn whose context ended at `input_tip_seq` stored `stored` (its steps
    and reply, numbered on from there), or None when that cannot be told (nothing stored in
    context). A wrong guess costs only the planning ahead: the store checks it."""
    if input_tip_seq is None:
        return None
    for k in range(len(stored) - 1, -1, -1):
        message = stored[k]
        if message.in_context and message.path_hash:
            return Tip(conversation, input_tip_seq + k + 1, message.path_hash,
                       str(message.data.get("role", "")), turn_id, request_hash)
    return None


class Tips:
    """The Tip of each conversation this process answered last, bounded (oldest out)."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._tips: OrderedDict[int, Tip] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tips)

    def put(self, tip: Tip) -> None:
        pk = tip.conversation.pk
        self._tips.pop(pk, None)
        if len(self._tips) >= self.LIMIT:
            self._tips.popitem(last=False)
        self._tips[pk] = tip

    def get(self, conversation_pk: int) -> Tip | None:
        return self._tips.get(conversation_pk)

    def forget(self, conversation_pk: int) -> None:
        self._tips.pop(conversation_pk, None)


class NeedsStore(Exception):
    """Planning needed to read the store: the request is not an append at the tip."""


class MemoryOnly:
    """The store `plan_ahead` plans with: every read means the plan needs the store."""

    def __getattr__(self, name: str) -> Any:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise NeedsStore(name)
        return refuse


@dataclass(frozen=True)
class PlannedAhead:
    plan: InputPlan  # its context is the tip only: `with_context` gives the real one
    begin: PlannedBegin

    def with_context(self, state: TurnState) -> InputPlan:
        """The plan with the context the store read (an append: the whole of it)."""
        return replace(self.plan, context=list(state.context))


def assumed_state(tip: Tip) -> TurnState:
    """The state a plan ahead is made from: the tip as the whole context."""
    conversation = tip.conversation
    last = Turn(tip.turn_id, conversation.pk, "done", tip.request_hash, None, 0.0,
                response={}, finished_at=0.0)
    newest = StoredMessage(seq=tip.seq, data={"role": tip.role}, turn_id=tip.turn_id,
                           created_at=0.0, path_hash=tip.path_hash)
    return TurnState(replace(conversation), last, [], 0, 0, [newest])


async def plan_ahead(tip: Tip | None, *, client_messages: list[Message],
                     hashes: dict[int, str], fingerprint: str, model: str,
                     history_client: bool, agent_resends: bool) -> PlannedAhead | None:
    """The input of a request that appends at `tip`, planned from the tip alone, or None
    when it is anything else (a repeat of the last request, an edit, a branch, a new
    client, nothing new): that request is planned from the state, after the read."""
    if tip is None or tip.request_hash == fingerprint:
        return None  # maybe a replay of the last turn: service.py decides from the state
    state = assumed_state(tip)
    try:
        history = await read_history(MemoryOnly(), state, client_messages, hashes,  # type: ignore[arg-type]
                                     fingerprint, history_client=history_client)
    except NeedsStore:
        return None
    plan = plan_input(state=state, history=history, client_messages=client_messages,
                      hashes=hashes, fingerprint=fingerprint, model=model,
                      history_client=history_client, agent_resends=agent_resends)
    if (plan.decision.action is not Action.APPEND or plan.decision.parent is not None
            or not plan.inputs or plan.continue_turn is not None
            or plan.learned_resends is not None or plan.reload):
        return None
    begin = PlannedBegin(uuid.uuid4().hex, fingerprint, plan.inputs, plan.parent_seq,
                         Assumed(tip.seq, tip.path_hash, tip.turn_id,
                                 tip.conversation.resends_history))
    return PlannedAhead(plan, begin)


@dataclass
class RememberTips:
    """The observer that keeps `Tips`: each finished turn's tip replaces its conversation's."""

    tips: Tips

    async def turn_finished(self, turn: FinishedTurn) -> None:
        tip = tip_after(turn.conversation, turn.turn_id, turn.request_hash,
                        turn.input_tip_seq, turn.done.messages)
        if tip is None:
            self.tips.forget(turn.conversation.pk)
        else:
            self.tips.put(tip)
