"""Which requests repeat a finished turn, to be answered from the store instead of running
again: a retry, a double submit, a request naming its turn by `Idempotency-Key`, or a resend
whose answer never reached its client (service.py asks, under the conversation's lock)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..core.types import Turn, TurnState
from ..store.base import TurnStore
from .input import resends_history
from .request import TurnRequest

if TYPE_CHECKING:
    from .session import TurnSession


class UndeliveredTurns:
    """The last turn of each conversation whose answer the client never received (it had
    disconnected when the turn finished), for recognising an unmarked resend of it. In this
    process only, bounded: a resend that reaches another process is a new turn."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._turns: dict[int, str] = {}

    def add(self, session: TurnSession) -> None:
        if len(self._turns) >= self.LIMIT:
            self._turns.pop(next(iter(self._turns)))
        self._turns[session.conversation.pk] = session.turn_id

    def pop(self, conversation_pk: int) -> str | None:
        return self._turns.pop(conversation_pk, None)


async def find_replay(
    store: TurnStore, request: TurnRequest, state: TurnState, fingerprint: str, *,
    double_submit: bool = False, resend_window_s: float = 0.0,
    undelivered: UndeliveredTurns | None = None,
) -> Turn | None:
    """The finished turn this request repeats, to answer from the store, or None.

    An `Idempotency-Key` names its turn. Otherwise only the conversation's LAST turn can
    be repeated — the same input at the same position — never an older identical turn:
    with a retry marker, as a double submit, or, from a client that does not resend its
    history, as an unmarked identical resend within `[agent] resend_window_s` of that
    turn's end when its answer never reached the client (the client's own timeout fired
    while the turn went on: `UndeliveredTurns`). An identical question asked again after
    its answer arrived is a new turn.
    """
    if request.idempotency_key:
        turn = await store.find_turn(state.conversation.pk,
                                     idempotency_key=request.idempotency_key)
        return turn if turn is not None and turn.status == "done" and turn.response else None
    last = state.last_turn
    if (last is None or last.status != "done" or not last.response
            or last.request_hash != fingerprint):
        return None
    if request.retry or double_submit:
        return last
    resends = resends_history(state.conversation,
                              history_client=request.identity.history_client)
    if (resend_window_s > 0 and not resends and last.finished_at is not None
            and time.time() - last.finished_at <= resend_window_s and undelivered is not None
            and undelivered.pop(state.conversation.pk) == last.turn_id):
        return last
    return None
