"""Reconcile what a client sends with what is stored (docs/design.md §4.2), as a pure function.

SDK clients send only the new message; chat UIs resend the whole visible history each turn,
regenerate replies and edit earlier messages. The stored *visible* transcript (what the client
has seen) is compared with the client's non-system messages by `visible_hash`, and the result
says which client messages are new input and whether stored messages are superseded.

The one rule that protects SDK clients: a request without any assistant message is new input,
because such a client never echoes history (a chat UI's very first turn is also this shape and
is new input too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .messages import visible_hash
from .types import Message


class Action(StrEnum):
    APPEND = "append"  # new input after the stored tip
    CONTINUE = "continue"  # the client resent the input of an unanswered turn
    REGENERATE = "regenerate"  # the client's history stops before the stored last reply
    BRANCH = "branch"  # the client's history differs from the stored one at some message
    ANCHOR = "anchor"  # the client dropped or summarised old turns; matched on recent ones


@dataclass(frozen=True)
class StoredRef:
    """What reconciliation needs of a stored visible message."""

    seq: int
    hash: str
    role: str


@dataclass
class Decision:
    action: Action
    new_input: list[Message] = field(default_factory=list)
    supersede_from_seq: int | None = None

    @property
    def stores_nothing(self) -> bool:
        return not self.new_input and self.supersede_from_seq is None


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _anchor(client: list[str], stored: list[str]) -> tuple[int, int] | None:
    """Find where the client's recent history meets the stored transcript.

    Returns (i, j): client[:i] ends with the same run of messages as stored[:j] (at least two
    messages, or one when it is all the client sent before its new input). Prefers the latest
    match in the client's list and then the latest stored position.
    """
    positions: dict[str, list[int]] = {}
    for j, h in enumerate(stored):
        positions.setdefault(h, []).append(j)
    for i in range(len(client), 0, -1):
        for j in reversed(positions.get(client[i - 1], [])):
            run = 1
            while run < i and run <= j and client[i - 1 - run] == stored[j - run]:
                run += 1
            if run >= 2 or run == i:
                return i, j + 1
    return None


def _last_occurrence(haystack: list[str], needle: list[str]) -> int | None:
    n = len(needle)
    for start in range(len(haystack) - n, -1, -1):
        if haystack[start : start + n] == needle:
            return start
    return None


def reconcile(
    stored: list[StoredRef],
    client_messages: list[Message],
    *,
    pending_input: list[str] | None = None,
    resends_history: bool | None = None,
    repeat_of_last: bool = False,
    client_hashes: list[str] | None = None,
) -> Decision:
    """Decide what of `client_messages` (system messages removed) is new.

    `stored` is the visible, non-superseded transcript, oldest first. `pending_input` holds the
    hashes of the input of the last turn when that turn never finished (it failed or the process
    died): a client resending exactly that input continues the turn instead of storing it twice.
    `resends_history` is what the conversation has learned about its client: True for a chat UI
    that resends the whole history, so that a lone first message sent again is a regenerate of
    the first reply; False or None (unknown) treat a request without assistant messages as new
    input, the SDK style. `repeat_of_last` says the request is byte-for-byte the last finished
    turn's request, with no retry marker: unless the client is known to be SDK-style
    (`resends_history is False`), that is a regenerate of that turn's reply.
    `client_hashes`, when the caller has them, are `visible_hash` of each client message.
    """
    if client_hashes is None:
        client_hashes = [visible_hash(m) for m in client_messages]
    if pending_input and client_hashes[-len(pending_input):] == pending_input:
        start = len(client_hashes) - len(pending_input)
        prefix = client_hashes[:start]
        tip = len(stored) - len(pending_input)
        if not prefix or prefix == [s.hash for s in stored[:tip]][-len(prefix):]:
            return Decision(Action.CONTINUE)

    stored_hashes = [s.hash for s in stored]
    has_assistant = any(m.get("role") == "assistant" for m in client_messages)
    if not has_assistant and not resends_history:
        if repeat_of_last and resends_history is not False:
            start = _last_occurrence(stored_hashes, client_hashes)
            end = None if start is None else start + len(client_hashes)
            if end is not None and end < len(stored) and stored[end].role == "assistant":
                return Decision(Action.REGENERATE, [], supersede_from_seq=stored[end].seq)
        return Decision(Action.APPEND, list(client_messages))

    k = _common_prefix(client_hashes, stored_hashes)
    if k == len(stored):
        return Decision(Action.APPEND, list(client_messages[k:]))
    if k == len(client_hashes):
        return Decision(Action.REGENERATE, [], supersede_from_seq=stored[k].seq)
    if k > 0 or not has_assistant:
        # A history-resending client whose list differs from the start (an edit of its first
        # message) branches there too; with assistant messages we try anchoring first.
        return Decision(Action.BRANCH, list(client_messages[k:]), supersede_from_seq=stored[k].seq)

    found = _anchor(client_hashes, stored_hashes)
    if found is not None:
        i, j = found
        supersede = stored[j].seq if j < len(stored) else None
        return Decision(Action.ANCHOR, list(client_messages[i:]), supersede_from_seq=supersede)

    # Nothing matches: a history we never saw. Keep the stored transcript intact and take what
    # follows the client's last assistant message as the new input.
    last_assistant = max(i for i, m in enumerate(client_messages) if m.get("role") == "assistant")
    return Decision(Action.APPEND, list(client_messages[last_assistant + 1 :]))


def learned_resends_history(
    client_messages: list[Message], decision: Decision, previous: bool | None, had_replies: bool
) -> bool | None:
    """What a request teaches about its client: does it resend the conversation's history?

    Echoing stored assistant messages back means yes. New input without any assistant message,
    sent to a conversation that already has replies, means no: a history-resending client
    would have included them.
    """
    has_assistant = any(m.get("role") == "assistant" for m in client_messages)
    echoed = len(decision.new_input) < len(client_messages)
    if has_assistant and echoed and decision.action is not Action.ANCHOR:
        return True
    if not has_assistant and decision.action is Action.APPEND and had_replies:
        return False
    return previous
