"""A turn's input: what of the client's messages is new, where in the conversation's tree it
goes, and storing it before any upstream call (docs/conversation-tree.md, docs/design.md §5).

Three steps, so that the decision itself is a plain function:
1. `read_history` locates the request in the tree: the active tip first (no query: the common
   append), else one indexed lookup of the request's path hashes, else an anchor on the active
   path's recent messages (in memory) or on any stored path; and whether an unfinished turn of
   this very request stored nothing yet;
2. `plan_input` (pure) says what to store: the new messages with their hashes and token counts,
   the node they hang under, what the conversation learned about its client, the turn to
   continue;
3. `store_input` writes the plan in one transaction and returns the turn id and the context
   with the input in it (read again when an old branch became the active path).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .. import tokens
from ..core.messages import visible_hash
from ..core.reconcile import (
    Action,
    Decision,
    Found,
    anchor_in_tail,
    anchor_length,
    learned_resends_history,
    longest_known,
    reconcile,
    tip_length,
)
from ..core.tree import ROOT_HASH, ROOT_SEQ, Node, chain, hang, prefer
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
    """Where the request is in the conversation's tree, as far as this request needs it."""

    tip: Node | None  # the active path's last message (None: nothing stored)
    found: Found | None  # the request's longest known prefix (None: not looked up / unknown)
    active_tail: list[str]  # visible hashes of the active path in context (only with `pending`)
    pending: list[str] | None  # hashes of the unfinished last turn's input, if any
    unfinished_without_input: bool  # that turn is this very request and stored nothing


@dataclass(frozen=True)
class InputPlan:
    decision: Decision
    inputs: list[NewMessage]  # what to store as this turn's input (empty for CONTINUE)
    context: list[StoredMessage]  # the context after the move, before the input
    continue_turn: str | None  # the unfinished turn this request continues
    learned_resends: bool | None  # the conversation's new `resends_history`, when it changed
    agent_learns_resends: bool  # the agent's new chats are conversations of their own
    parent_seq: int = ROOT_SEQ  # the message the input follows
    reply_hash: str = ROOT_HASH  # the path hash the turn's steps and reply follow
    reload: bool = False  # the move changes more than the tail: read the context again


def client_hashes(client_messages: Sequence[Message]) -> dict[int, str]:
    """Each client message's visible hash, keyed by object identity: hashed once for
    reconciling and for storing (the decision's new input are the request's own objects)."""
    return {id(m): visible_hash(m) for m in client_messages}


def node_of(message: StoredMessage) -> Node:
    return Node(message.seq, message.path_hash or "", message.role, active=True,
                turn_id=message.turn_id)


def visible_tail(context: Sequence[StoredMessage]) -> list[tuple[str, Node]]:
    """The active path's visible messages in context, as (visible hash, node), oldest first."""
    return [(m.visible_hash or visible_hash(m.data), node_of(m)) for m in context if m.visible]


def call_key(message: Message, hashed: str) -> str:
    """A message's visible hash plus the tool-call ids it carries. The hash leaves ids out (a
    client may re-encode a call), but an agent framework running the same tool loop twice
    sends the same calls and results with new ids: anchoring on the ids first keeps run 2 from
    continuing run 1."""
    if message.get("role") == "tool":
        return f"{hashed}|{message.get('tool_call_id')}"
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        return hashed + "|" + ",".join(str(c.get("id")) for c in calls if isinstance(c, dict))
    return hashed


def resends_history(conversation: Conversation, *, history_client: bool) -> bool | None:
    resends = conversation.resends_history
    if resends is None and history_client:
        return True  # a chat UI's own header: it resends history until shown otherwise
    return resends


def pending_input(last: Turn | None, context: Sequence[StoredMessage]) -> list[str] | None:
    """Hashes of the unfinished last turn's input (its user and tool messages), or None."""
    if last is None or last.status == "done":
        return None
    return [
        m.visible_hash or visible_hash(m.data)
        for m in context
        if m.turn_id == last.turn_id and m.role in ("user", "tool") and m.visible
    ] or None


async def locate(store: TurnStore, agent_pk: int, conversation_pk: int | None,
                 hashes: Sequence[str], roles: Sequence[str], *, tip: Node | None = None,
                 context: Sequence[StoredMessage] = (),
                 messages: Sequence[Message] = ()) -> Found | None:
    """The request's longest known prefix in one conversation (or, with `conversation_pk`
    None, in any of the agent's): the tip, then one lookup of its path hashes, then an anchor
    in the active path's context kept in memory, then an anchor in the store."""
    path = chain(hashes)
    length = tip_length(path, tip)
    if length is not None and tip is not None:
        return Found(length, tip)
    found = longest_known(path, await _nodes(store, agent_pk, path, conversation_pk))
    if found is not None:
        return found
    m = anchor_length(hashes, roles)
    if m == 0:
        return None
    visible = [row for row in context if row.visible]
    tail = visible_tail(visible)
    found = None
    if messages:  # tool-call ids first, then the hashes alone (call_key)
        keyed = [(call_key(row.data, h), node)
                 for row, (h, node) in zip(visible, tail, strict=True)]
        found = anchor_in_tail([call_key(msg, h) for msg, h in zip(messages, hashes, strict=True)],
                               roles, keyed, m)
    found = found or anchor_in_tail(hashes, roles, tail, m)
    if found is None:
        node = await store.find_anchor(agent_pk, list(hashes[:m]),
                                       conversation_pk=conversation_pk)
        found = None if node is None else Found(m, node, anchored=True)
    if found is None or found.length == len(hashes) or (tip and found.node.seq == tip.seq):
        return found
    # What follows the anchor may be stored under it too (a regenerate or an edit by a
    # client that dropped its oldest turns): the longest stored continuation.
    rest = chain(hashes[found.length:], start=found.node.path_hash)
    below = longest_known(rest, await _nodes(store, agent_pk, rest, found.node.conversation_pk
                                             or conversation_pk))
    if below is None:
        return found
    return Found(found.length + below.length, below.node, anchored=True)


async def _nodes(store: TurnStore, agent_pk: int, path: list[str],
                 conversation_pk: int | None) -> dict[str, Node]:
    """The stored nodes of these path hashes, the preferred one for each (tree.prefer)."""
    nodes: dict[str, list[Node]] = {}
    for node in await store.find_nodes(agent_pk, path, conversation_pk=conversation_pk):
        nodes.setdefault(node.path_hash, []).append(node)
    return {h: best for h, group in nodes.items() if (best := prefer(group)) is not None}


async def read_history(store: TurnStore, state: TurnState, client_messages: list[Message],
                       hashes: dict[int, str], fingerprint: str, *, history_client: bool) -> History:
    conversation, last, context = state.conversation, state.last_turn, state.context
    tip = node_of(context[-1]) if context else None
    if tip is None and last is not None:
        tip = await store.path_tip(conversation.pk)  # everything evicted or discarded
    ordered = [hashes[id(m)] for m in client_messages]
    roles = [str(m.get("role", "")) for m in client_messages]
    found: Found | None = None
    if "assistant" in roles or resends_history(conversation, history_client=history_client):
        found = await locate(store, conversation.agent_pk, conversation.pk, ordered, roles,
                             tip=tip, context=context, messages=client_messages)
    pending = pending_input(last, context)
    unfinished = False
    if (pending is None and last is not None and last.status != "done"
            and last.request_hash == fingerprint and last.first_seq is not None):
        # Whether `last` has no messages at all (not even superseded ones: a turn whose input
        # was discarded is not continued).
        rows = await store.list_messages(conversation.pk, after_seq=last.first_seq - 1,
                                         limit=1, include_superseded=True)
        unfinished = not any(m.turn_id == last.turn_id for m in rows)
    # the active path's visible hashes matter only to continue an unfinished turn
    tail = [] if pending is None else [h for h, _ in visible_tail(context)]
    return History(tip, found, tail, pending, unfinished)


def plan_input(
    *,
    state: TurnState,
    history: History,
    client_messages: list[Message],
    hashes: dict[int, str],
    fingerprint: str,
    model: str,
    history_client: bool,
    agent_resends: bool,
) -> InputPlan:
    """Decide what of the client's messages to store and where (pure)."""
    conversation, last = state.conversation, state.last_turn
    if history.unfinished_without_input:
        # The same request again after its turn stopped before storing anything of its own (a
        # regenerate cut off by a crash or an upstream failure): continue that turn.
        # Reconciling would take a resent lone first message for new input, stored twice.
        decision = Decision(Action.CONTINUE)
    else:
        decision = reconcile(
            client_messages, [hashes[id(m)] for m in client_messages],
            tip=history.tip, found=history.found, active_tail=history.active_tail,
            pending_input=history.pending,
            resends_history=resends_history(conversation, history_client=history_client))
    learned = learned_resends_history(client_messages, decision, conversation.resends_history,
                                      had_replies=last is not None)
    if learned == conversation.resends_history:
        learned = None
    agent_learns = bool(learned) and not agent_resends
    parent = decision.parent
    context = list(state.context)
    reload = False
    if parent is not None:
        context = [m for m in context if m.seq <= parent.seq]
        # An old branch comes back, or the move reaches back before the summary's coverage:
        # the context (and the summary) of the new path are read from the store.
        reload = not parent.active or not state.context or parent.seq < state.context[0].seq
    under = parent or history.tip
    parent_seq, start = (ROOT_SEQ, ROOT_HASH) if under is None else (under.seq, under.path_hash)
    if decision.action is Action.CONTINUE and last is not None:
        return InputPlan(decision, [], context, last.turn_id, learned, agent_learns,
                         parent_seq, start)
    inputs = [
        NewMessage(m, visible=True, visible_hash=hashes.get(id(m)) or visible_hash(m),
                   tokens=tokens.count_message(m, model))
        for m in decision.new_input
    ]
    reply_hash = hang(inputs, start)
    return InputPlan(decision, inputs, context, None, learned, agent_learns, parent_seq,
                     reply_hash, reload)


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
        parent_seq=plan.parent_seq, move=plan.reload,
    )
    if plan.reload:
        moved = await store.load_turn_state(agent.pk, conversation.pk)
        conversation.summary = moved.conversation.summary
        return turn_id, moved.context
    return turn_id, context_with_input(plan, turn_id, first_seq, now)


def context_with_input(plan: InputPlan, turn_id: str, first_seq: int, now: float
                       ) -> list[StoredMessage]:
    """The context once the plan's input is stored from `first_seq` on (also what a preview
    of the next request assumes: turn/preview.py)."""
    return plan.context + [
        StoredMessage(seq=first_seq + i, data=m.data, turn_id=turn_id, created_at=now,
                      tokens=m.tokens, visible_hash=m.visible_hash,
                      parent_seq=plan.parent_seq if i == 0 else first_seq + i - 1,
                      path_hash=m.path_hash)
        for i, m in enumerate(plan.inputs)
    ]
