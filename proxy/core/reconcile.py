"""Reconcile what a client sends with what is stored (docs/conversation-tree.md), as pure
functions.

A request's messages (system messages aside) are a PATH in the conversation's tree
(core/tree.py). SDK clients send only the new message: it continues the active path's tip.
Chat UIs and agent frameworks resend a history: its longest prefix already stored locates the
node it continues — on the active path or on an old branch — and what follows is new. So
append, regenerate, an edit at any depth, switching back to an old branch and continuing a
response are one operation: "hang the new messages under that node and make its path active".

Locating is staged so that the common cases cost no query at all (`turn/input.py` does the
I/O): the active tip (`tip_length`), then one indexed lookup of the request's path hashes, then
an anchor for a client that dropped its oldest turns: its messages match a run of the active
path's recent messages (`anchor_in_tail`), or, in the store, of any stored path.

The one rule that protects SDK clients: a request without any assistant message is new input,
because such a client never echoes history — unless the conversation is known to resend its
history (a chat UI), where a lone first message is message 1 again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .tree import ROOT_HASH, ROOT_SEQ, Node
from .types import Message


class Action(StrEnum):
    APPEND = "append"  # new input after the active path's tip
    CONTINUE = "continue"  # the client resent the input of an unanswered turn
    REGENERATE = "regenerate"  # the history ends at a stored message before the tip
    BRANCH = "branch"  # the history leaves the active path (an edit): a new branch
    SWITCH = "switch"  # the history continues an old branch: it becomes the active path
    ANCHOR = "anchor"  # the client dropped its oldest turns; matched on a run of messages


ROOT = Node(ROOT_SEQ, ROOT_HASH, "", active=True)  # the parent of every first message


@dataclass(frozen=True)
class Found:
    """The longest known prefix of a request: its first `length` messages end at `node`."""

    length: int
    node: Node
    anchored: bool = False  # matched on a run of messages, not on the whole path


@dataclass
class Decision:
    action: Action
    new_input: list[Message] = field(default_factory=list)
    parent: Node | None = None  # the node the input hangs under; None: the active tip

    @property
    def moves_path(self) -> bool:
        """The active path changes: the tip is no longer where the input goes."""
        return self.parent is not None

    @property
    def switches(self) -> bool:
        """An old branch becomes the active path again (the store restores it)."""
        return self.parent is not None and not self.parent.active

    @property
    def stores_nothing(self) -> bool:
        return not self.new_input and self.parent is None


def tip_length(chain: Sequence[str], tip: Node | None) -> int | None:
    """How many of the request's messages are the active path up to its tip, when the request
    reaches the tip at its last or second-to-last message (an append, a continue): no lookup."""
    if tip is None or not chain:
        return None
    for length in (len(chain) - 1, len(chain)):
        if length >= 1 and chain[length - 1] == tip.path_hash:
            return length
    return None


def longest_known(chain: Sequence[str], nodes: Mapping[str, Node]) -> Found | None:
    """The longest prefix of the request whose path hash is a stored node."""
    for length in range(len(chain), 0, -1):
        node = nodes.get(chain[length - 1])
        if node is not None:
            return Found(length, node)
    return None


def anchor_length(hashes: Sequence[str], roles: Sequence[str]) -> int:
    """How much of a request an anchor must match: everything up to its last assistant message
    (what follows it is the new input), 0 when it has none."""
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "assistant":
            return i + 1
    return 0


def anchor_in_tail(hashes: Sequence[str], roles: Sequence[str],
                   tail: Sequence[tuple[str, Node]], length: int | None = None) -> Found | None:
    """Anchor a request whose history does not start at the root (a client that dropped its
    oldest turns, a tool loop resending only its own turn) on the active path's recent visible
    messages `tail` ((visible_hash, node), oldest first): its first `m` messages (`m` at most
    `length`, as long as possible) must be exactly a run of the tail. Of the places that run
    occurs, the one the rest of the request follows furthest along the tail wins (a repeated
    exchange, then a regenerate), then the latest. A run of one message counts only when it is
    an assistant or tool message (a reply is specific enough; a lone "hi" is not)."""
    positions: dict[str, list[int]] = {}
    for j, (h, _) in enumerate(tail):
        positions.setdefault(h, []).append(j)
    for m in range(len(hashes) if length is None else length, 0, -1):
        if m == 1 and roles[0] not in ("assistant", "tool"):
            return None
        best: Found | None = None
        for j in reversed(positions.get(hashes[m - 1], [])):
            if j + 1 >= m and all(tail[j - k][0] == hashes[m - 1 - k] for k in range(m)):
                k = 0
                while (m + k < len(hashes) and j + 1 + k < len(tail)
                       and tail[j + 1 + k][0] == hashes[m + k]):
                    k += 1
                if best is None or m + k > best.length:
                    best = Found(m + k, tail[j + k][1], anchored=True)
        if best is not None:
            return best
    return None


def reconcile(
    client_messages: Sequence[Message],
    client_hashes: Sequence[str],
    *,
    tip: Node | None,
    found: Found | None,
    active_tail: Sequence[str] = (),
    pending_input: list[str] | None = None,
    resends_history: bool | None = None,
) -> Decision:
    """Decide what of `client_messages` (system messages removed) is new, and where it goes.

    `tip` is the active path's last message (None: nothing stored yet). `found` is the longest
    known prefix of the request (None when not looked up or nothing matched). `active_tail`
    are the visible hashes of the active path's messages in context, oldest first.
    `pending_input` holds the hashes of the last turn's input when that turn never finished: a
    client resending exactly it continues the turn instead of storing it twice.
    `resends_history` is what the conversation learned about its client (True: a chat UI that
    resends the whole history; a lone first message sent again is then message 1 again).
    Otherwise a request without assistant messages is new input at the tip, even the very
    same body as the last turn's: an SDK asking again (a resend whose answer never arrived is
    replayed before this is reached: turn/service.py).
    """
    hashes = list(client_hashes)
    if pending_input and hashes[-len(pending_input):] == pending_input:
        prefix = hashes[:len(hashes) - len(pending_input)]
        before = list(active_tail[:len(active_tail) - len(pending_input)])
        if not prefix or prefix == before[-len(prefix):]:
            return Decision(Action.CONTINUE)

    has_assistant = any(m.get("role") == "assistant" for m in client_messages)
    if not has_assistant and not resends_history:
        return Decision(Action.APPEND, list(client_messages))

    if found is None:
        if tip is None:
            return Decision(Action.APPEND, list(client_messages))
        # A history never seen: a new branch from the root, holding all of it. The stored
        # path is kept as a branch and never mixed into this one.
        return Decision(Action.BRANCH, list(client_messages), ROOT)

    new_input = list(client_messages[found.length:])
    node = found.node
    if tip is not None and node.seq == tip.seq and node.active:
        return Decision(Action.ANCHOR if found.anchored else Action.APPEND, new_input)
    if not node.active:
        return Decision(Action.SWITCH, new_input, node)
    if found.anchored:
        return Decision(Action.ANCHOR, new_input, node)
    return Decision(Action.BRANCH if new_input else Action.REGENERATE, new_input, node)


def learned_resends_history(
    client_messages: Sequence[Message], decision: Decision, previous: bool | None,
    had_replies: bool,
) -> bool | None:
    """What a request teaches about its client: does it resend the conversation's history?

    Echoing stored assistant messages back from the start of the conversation means yes. New
    input without any assistant message, sent to a conversation that already has replies,
    means no: a history-resending client would have included them.
    """
    has_assistant = any(m.get("role") == "assistant" for m in client_messages)
    echoed = len(decision.new_input) < len(client_messages)
    if has_assistant and echoed and decision.action is not Action.ANCHOR:
        return True
    if not has_assistant and decision.action is Action.APPEND and had_replies:
        return False
    return previous
