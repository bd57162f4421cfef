"""An in-memory test double of the store's turn role: what `proxy.turn` asks of a database.

`InMemoryTurnStore` implements only the methods a stateful turn calls (agents and
conversations, the turn's state (and what a temporary chat reads instead), its input, its outcome, page-outs, leases, model stats and the
memory tools' searches), with the semantics of the real stores: seqs are consecutive per
conversation and never reused, `begin_turn(supersede_from_seq=...)` and `discard_turn` mark
messages superseded (and out of context), `evict_messages` takes messages out of context and
stores the summary, `finish_turn` appends the turn's messages, applies its memory edits and
stores its response exactly once. Everything handed in or out is a copy, as a database's rows
are, so a test cannot pass because the service and the store share an object.

It is a double, not a specification: the store contract tests (tests/store) pin the real
stores' behaviour, and this file follows them. Searches are a naive case-insensitive substring
match, enough for the memory tools' results to be checked.

For assertions, `calls` lists every method called in order, and `messages`, `turns`,
`passages`, `revisions` and `heads` are the stored rows.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proxy.core.messages import message_text
from proxy.core.tree import Node
from proxy.core.types import (
    Agent,
    Block,
    BlockRevision,
    Conversation,
    KnownContext,
    MessageHit,
    NewMessage,
    Passage,
    StoredMessage,
    Turn,
    TurnResult,
    TurnState,
)
from proxy.errors import quota_exceeded
from tests.fakes.summary_jobs import InMemorySummaryJobs

T = TypeVar("T")


def _copy(value: T) -> T:
    return copy.deepcopy(value)


class InMemoryLeases:
    """Conversation leases shared by every `ConversationLocks` of one store, as a lease table
    is shared by processes: two services over one store exclude each other. Nothing expires,
    so nothing is renewed (like `store.leases.FileLeases`)."""

    expires = False

    def __init__(self, holders: dict[int, str]) -> None:
        self.holders = holders

    async def acquire_lease(self, conversation_pk: int, owner: str, ttl_s: float) -> bool:
        if self.holders.get(conversation_pk, owner) != owner:
            return False
        self.holders[conversation_pk] = owner
        return True

    async def release_lease(self, conversation_pk: int, owner: str) -> None:
        if self.holders.get(conversation_pk) == owner:
            del self.holders[conversation_pk]


@dataclass
class InMemoryTurnStore(InMemorySummaryJobs):
    """The turn's role of the Store protocol (proxy/store/base.py), in memory."""

    agents: dict[int, Agent] = field(default_factory=dict)
    blocks: dict[int, list[Block]] = field(default_factory=dict)  # agent pk -> in order
    conversations: dict[int, Conversation] = field(default_factory=dict)
    heads: dict[int, str] = field(default_factory=dict)  # conversation pk -> head hash
    summaries: dict[tuple[int, int], str] = field(default_factory=dict)  # (conv, seq) -> text
    follows: dict[str, int] = field(default_factory=dict)  # turn id -> its reply's parent seq
    messages: dict[int, list[StoredMessage]] = field(default_factory=dict)  # by seq, all rows
    turns: dict[str, Turn] = field(default_factory=dict)  # in creation order
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)  # turn id -> error
    passages: dict[int, list[Passage]] = field(default_factory=dict)
    revisions: list[BlockRevision] = field(default_factory=list)
    model_stats: dict[str, dict] = field(default_factory=dict)
    lease_holders: dict[int, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    epoch: int = 0  # bumped when a conversation is deleted (see KnownContext)
    _pks: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _called(self, name: str) -> None:
        self.calls.append(name)

    def _conversation(self, conversation_pk: int) -> Conversation:
        conversation = self.conversations.get(conversation_pk)
        if conversation is None:
            raise LookupError(f"no conversation with pk {conversation_pk}")
        return conversation

    # --- agents and conversations ---------------------------------------------------------
    async def ensure_agent(self, tenant: str, agent_id: str,
                           default_blocks: list[Block], *, max_agents: int = 0) -> Agent:
        self._called("ensure_agent")
        for agent in self.agents.values():
            if (agent.tenant, agent.agent_id) == (tenant, agent_id):
                return _copy(agent)
        if max_agents and sum(a.tenant == tenant for a in self.agents.values()) >= max_agents:
            raise quota_exceeded("agents_per_tenant", max_agents)
        now = time.time()
        agent = Agent(next(self._pks), tenant, agent_id, now, {})
        self.agents[agent.pk] = agent
        self.blocks[agent.pk] = [Block(**{**vars(b), "updated_at": now})
                                 for b in default_blocks]
        self.passages[agent.pk] = []
        return _copy(agent)

    async def update_agent_settings(self, agent_pk: int, settings: dict) -> None:
        self._called("update_agent_settings")
        if agent_pk in self.agents:
            self.agents[agent_pk].settings = _copy(settings)

    async def delete_agent(self, agent_pk: int) -> None:
        """What another process deleting the agent leaves: every row of it gone."""
        self._called("delete_agent")
        self.agents.pop(agent_pk, None)
        for pk in [pk for pk, c in self.conversations.items() if c.agent_pk == agent_pk]:
            del self.conversations[pk]
            self.messages.pop(pk, None)
            self.heads.pop(pk, None)
        self.epoch += 1

    async def ensure_conversation(self, agent_pk: int, conversation_id: str) -> Conversation:
        self._called("ensure_conversation")
        for conversation in self.conversations.values():
            if (conversation.agent_pk, conversation.conversation_id) == (agent_pk,
                                                                          conversation_id):
                return _copy(conversation)
        conversation = Conversation(next(self._pks), agent_pk, conversation_id, time.time())
        self.conversations[conversation.pk] = conversation
        self.messages[conversation.pk] = []
        return _copy(conversation)

    # --- the tree (core/tree.py) -----------------------------------------------------------
    def _node(self, m: StoredMessage, conversation_pk: int) -> Node:
        return Node(m.seq, m.path_hash or "", m.role, active=not m.superseded,
                    turn_id=m.turn_id, conversation_pk=conversation_pk,
                    conversation_id=self.conversations[conversation_pk].conversation_id)

    def _agent_rows(self, agent_pk: int, conversation_pk: int | None):
        for pk, c in self.conversations.items():
            if c.agent_pk == agent_pk and conversation_pk in (None, pk):
                for m in self.messages[pk]:
                    if m.visible:
                        yield pk, m

    async def find_nodes(self, agent_pk: int, path_hashes: list[str], *,
                         conversation_pk: int | None = None) -> list[Node]:
        self._called("find_nodes")
        wanted = set(path_hashes)
        return [self._node(m, pk) for pk, m in self._agent_rows(agent_pk, conversation_pk)
                if m.path_hash in wanted]

    async def find_anchor(self, agent_pk: int, visible_hashes: list[str], *,
                          conversation_pk: int | None = None) -> Node | None:
        self._called("find_anchor")
        candidates = sorted(((pk, m) for pk, m in self._agent_rows(agent_pk, conversation_pk)
                             if visible_hashes and m.visible_hash == visible_hashes[-1]),
                            key=lambda c: (not c[1].superseded, c[1].pk or 0), reverse=True)
        for pk, m in candidates:
            by_seq = {r.seq: r for r in self.messages[pk]}
            seen: list[str] = []
            row: StoredMessage | None = m
            while row is not None and len(seen) < len(visible_hashes):
                if row.visible:
                    seen.append(row.visible_hash or "")
                row = by_seq.get(row.parent_seq or 0)
            if seen == list(reversed(visible_hashes)):
                return self._node(m, pk)
        return None

    async def path_tip(self, conversation_pk: int) -> Node | None:
        self._called("path_tip")
        active = [m for m in self.messages.get(conversation_pk, []) if not m.superseded]
        return self._node(active[-1], conversation_pk) if active else None

    def _coverage(self, conversation_pk: int) -> tuple[int, str]:
        for m in reversed(self.messages[conversation_pk]):
            if not m.superseded and (conversation_pk, m.seq) in self.summaries:
                return m.seq, self.summaries[(conversation_pk, m.seq)]
        return 0, ""

    def _move(self, conversation_pk: int, parent_seq: int, move: bool) -> None:
        """What the real stores do (store/sqlite/tree.py): truncate the active path after the
        parent; with `move`, restore the parent's path and the summary of the new path."""
        rows = self.messages[conversation_pk]
        by_seq = {m.seq: m for m in rows}
        restore: list[StoredMessage] = []
        meet = parent_seq
        if move:
            row = by_seq.get(parent_seq)
            while row is not None and row.superseded:
                restore.append(row)
                row = by_seq.get(row.parent_seq or 0)
            meet = 0 if row is None else row.seq
        before = self._coverage(conversation_pk)
        for m in rows:
            if m.seq > meet and not m.superseded:
                m.superseded, m.in_context = True, False
        for m in restore:
            m.superseded, m.in_context = False, True
        after = self._coverage(conversation_pk)
        if move and after != before:
            self._conversation(conversation_pk).summary = after[1]
            for m in rows:
                if not m.superseded:
                    m.in_context = m.seq > after[0]

    async def update_conversation(self, conversation_pk: int, *, summary: str | None = None,
                                  resends_history: bool | None = None,
                                  head_hash: str | None = None) -> None:
        self._called("update_conversation")
        conversation = self.conversations.get(conversation_pk)
        if conversation is None:
            return
        if summary is not None:
            conversation.summary = summary
        if resends_history is not None:
            conversation.resends_history = resends_history
        if head_hash is not None:
            self.heads[conversation_pk] = head_hash

    # --- reading a turn's state -----------------------------------------------------------
    async def load_turn_state(self, agent_pk: int, conversation_pk: int,
                              known: KnownContext | None = None) -> TurnState:
        """`known` changes only what a real store decodes, never the result: ignored."""
        self._called("load_turn_state")
        conversation = self._conversation(conversation_pk)
        turns = [t for t in self.turns.values() if t.conversation_pk == conversation_pk]
        recall = sum(1 for c in self.conversations.values() if c.agent_pk == agent_pk
                     for m in self.messages[c.pk] if m.visible and not m.superseded)
        return TurnState(
            conversation=_copy(conversation),
            last_turn=_copy(turns[-1]) if turns else None,
            blocks=_copy(self.blocks.get(agent_pk, [])),
            recall_messages=recall,
            archival_passages=len(self.passages.get(agent_pk, [])),
            context=self._rows(conversation_pk, lambda m: m.in_context and not m.superseded),
            epoch=self.epoch,
        )

    def _rows(self, conversation_pk: int, keep: Any) -> list[StoredMessage]:
        return [_copy(m) for m in self.messages.get(conversation_pk, []) if keep(m)]

    async def visible_transcript(self, conversation_pk: int) -> list[StoredMessage]:
        self._called("visible_transcript")
        return self._rows(conversation_pk, lambda m: m.visible and not m.superseded)

    async def list_messages(self, conversation_pk: int, *, after_seq: int = 0, limit: int = 100,
                            include_superseded: bool = False, before_seq: int | None = None,
                            newest_first: bool = False) -> list[StoredMessage]:
        self._called("list_messages")
        rows = self._rows(conversation_pk, lambda m: m.seq > after_seq
                          and (before_seq is None or m.seq < before_seq)
                          and (include_superseded or not m.superseded))
        return (rows[::-1] if newest_first else rows)[:limit]

    async def find_turn(self, conversation_pk: int, *, idempotency_key: str | None = None,
                        request_hash: str | None = None) -> Turn | None:
        """The newest turn with that idempotency key if one is given, else that request hash."""
        self._called("find_turn")
        if idempotency_key is not None:
            match = [t for t in self.turns.values() if t.idempotency_key == idempotency_key]
        elif request_hash is not None:
            match = [t for t in self.turns.values() if t.request_hash == request_hash]
        else:
            return None
        match = [t for t in match if t.conversation_pk == conversation_pk]
        return _copy(match[-1]) if match else None

    # --- writing a turn -------------------------------------------------------------------
    def _append(self, conversation_pk: int, turn_id: str,
                inputs: list[NewMessage], parent_seq: int | None = None) -> int:
        """Append rows after the highest seq ever used, chained under `parent_seq` (default:
        the row before); the first new seq."""
        rows = self.messages[conversation_pk]
        first_seq = (rows[-1].seq if rows else 0) + 1
        parent = first_seq - 1 if parent_seq is None else parent_seq
        now = time.time()
        rows.extend(
            StoredMessage(seq=first_seq + i, data=_copy(m.data), turn_id=turn_id, created_at=now,
                          in_context=m.in_context, visible=m.visible, tokens=m.tokens,
                          visible_hash=m.visible_hash, pk=next(self._pks),
                          parent_seq=parent if i == 0 else first_seq + i - 1,
                          path_hash=m.path_hash)
            for i, m in enumerate(inputs)
        )
        return first_seq

    async def begin_turn(self, conversation_pk: int, turn_id: str, request_hash: str,
                         idempotency_key: str | None, inputs: list[NewMessage],
                         supersede_from_seq: int | None = None, *,
                         parent_seq: int | None = None, move: bool = False) -> int:
        self._called("begin_turn")
        self._conversation(conversation_pk)
        if supersede_from_seq is not None:
            for m in self.messages[conversation_pk]:
                if m.seq >= supersede_from_seq:
                    m.superseded, m.in_context = True, False
        if parent_seq is not None:
            self._move(conversation_pk, parent_seq, move)
        if parent_seq is None and supersede_from_seq is not None:
            parent_seq = supersede_from_seq - 1  # the row before the superseded ones
        first_seq = self._append(conversation_pk, turn_id, inputs, parent_seq)
        follows = first_seq + len(inputs) - 1 if inputs else (
            first_seq - 1 if parent_seq is None else parent_seq)
        self.turns[turn_id] = Turn(turn_id, conversation_pk, "open", request_hash,
                                   idempotency_key, time.time(), first_seq=first_seq)
        self.follows[turn_id] = follows
        return first_seq

    async def reopen_turn(self, turn_id: str) -> None:
        self._called("reopen_turn")
        turn = self.turns.get(turn_id)
        if turn is not None and turn.status == "failed":
            turn.status = "open"

    async def fail_turn(self, turn_id: str, error: dict) -> None:
        self._called("fail_turn")
        turn = self.turns.get(turn_id)
        if turn is not None and turn.status != "done":
            turn.status, self.errors[turn_id] = "failed", _copy(error)

    async def discard_turn(self, turn_id: str, error: dict) -> None:
        """Fail the turn and supersede its own messages: the conversation is as before it."""
        self._called("discard_turn")
        turn = self.turns.get(turn_id)
        if turn is None or turn.status == "done":
            return
        turn.status, self.errors[turn_id] = "failed", _copy(error)
        for m in self.messages.get(turn.conversation_pk, []):
            if m.turn_id == turn_id and m.seq >= (turn.first_seq or 0):
                m.superseded, m.in_context = True, False

    async def finish_turn(self, turn_id: str, conversation_pk: int, agent_pk: int,
                          result: TurnResult) -> int:
        """All of the turn's outcome, once: LookupError (writing nothing) for an unknown or
        already finished turn. Passages past `result.max_passages` are dropped; returns how
        many were stored."""
        self._called("finish_turn")
        turn = self.turns.get(turn_id)
        if turn is None or turn.conversation_pk != conversation_pk or turn.status == "done":
            raise LookupError(f"turn {turn_id!r} is unknown or already finished")
        now = time.time()
        turn.status, turn.response = "done", _copy(result.response)
        turn.finished_at = now
        self._append(conversation_pk, turn_id, result.messages, self.follows.get(turn_id))
        blocks = self.blocks.setdefault(agent_pk, [])
        for block in result.blocks:
            stored = Block(**{**vars(block), "updated_at": now})
            index = next((i for i, b in enumerate(blocks) if b.label == block.label), None)
            if index is None:
                blocks.append(stored)
            else:
                blocks[index] = stored
        self.revisions.extend(
            BlockRevision(**{**vars(r), "turn_id": turn_id, "created_at": now})
            for r in result.revisions)
        stored = self.passages.setdefault(agent_pk, [])
        passages = result.passages
        if result.max_passages:
            passages = passages[:max(0, result.max_passages - len(stored))]
        stored.extend(Passage(next(self._pks), text, list(tags), now) for text, tags in passages)
        return len(passages)

    def _evict_rows(self, conversation_pk: int, through_seq: int) -> int:
        """Messages up to `through_seq` leave the context (`evict_messages`, summary_jobs.py)."""
        evicted = 0
        for m in self.messages.get(conversation_pk, []):
            if m.seq <= through_seq and m.in_context and not m.superseded:
                m.in_context, evicted = False, evicted + 1
        return evicted

    # --- leases and model statistics ------------------------------------------------------
    def turn_leases(self) -> InMemoryLeases:
        return InMemoryLeases(self.lease_holders)

    # --- reads without a turn (LookupStore): what a temporary chat reads -------------------
    async def get_agent(self, tenant: str, agent_id: str) -> Agent | None:
        self._called("get_agent")
        return next((_copy(a) for a in self.agents.values()
                     if (a.tenant, a.agent_id) == (tenant, agent_id)), None)

    async def get_blocks(self, agent_pk: int) -> list[Block]:
        self._called("get_blocks")
        return _copy(self.blocks.get(agent_pk, []))

    async def count_messages(self, agent_pk: int) -> int:
        self._called("count_messages")
        return sum(1 for c in self.conversations.values() if c.agent_pk == agent_pk
                   for m in self.messages[c.pk] if m.visible and not m.superseded)

    async def count_passages(self, agent_pk: int) -> int:
        self._called("count_passages")
        return len(self.passages.get(agent_pk, []))

    async def get_model_stats(self, model: str) -> dict | None:
        self._called("get_model_stats")
        return _copy(self.model_stats.get(model))

    async def put_model_stats(self, model: str, data: dict) -> None:
        self._called("put_model_stats")
        self.model_stats[model] = _copy(data)

    # --- the memory tools' searches (naive: case-insensitive substring) -------------------
    async def search_messages(self, agent_pk: int, query: str, *,
                              roles: list[str] | None = None, limit: int = 10,
                              start: float | None = None,
                              end: float | None = None,
                              newest: int | None = None) -> list[MessageHit]:
        self._called("search_messages")
        needle = query.strip().lower()
        hits = [
            MessageHit(c.conversation_id, m.seq, m.role, message_text(m.data), m.created_at, 1.0)
            for c in self.conversations.values() if c.agent_pk == agent_pk
            for m in self.messages[c.pk]
            if m.visible and not m.superseded and (roles is None or m.role in roles)
            and needle in message_text(m.data).lower()
            and (start is None or m.created_at >= start) and (end is None or m.created_at <= end)
        ]
        return sorted(hits, key=lambda h: h.created_at, reverse=True)[:limit]

    async def message_neighbours(self, agent_pk: int, hits: Sequence[tuple[str, int]],
                                 count: int) -> list[tuple[int, MessageHit]]:
        """The stores' contract (tests/store/test_recall_search.py), over the lists."""
        self._called("message_neighbours")
        found: list[tuple[int, MessageHit]] = []
        for index, (cid, seq) in enumerate(hits):
            conv = next((c for c in self.conversations.values()
                         if c.agent_pk == agent_pk and c.conversation_id == cid), None)
            if conv is None or count <= 0:
                continue
            turns = [m for m in self.messages[conv.pk] if m.visible and not m.superseded
                     and message_text(m.data) and (m.role == "user" or (
                         m.role == "assistant" and "tool_calls" not in m.data))]
            before = [m for m in turns if m.seq < seq][-count:]
            after = [m for m in turns if m.seq > seq][:count]
            found += [(index, MessageHit(cid, m.seq, m.role, message_text(m.data),
                                         m.created_at, 0.0)) for m in before + after]
        return found

    async def search_passages(self, agent_pk: int, query: str, *,
                              tags: list[str] | None = None, top_k: int = 5) -> list[Passage]:
        self._called("search_passages")
        needle = query.strip().lower()
        found = [
            Passage(p.pk, p.text, list(p.tags), p.created_at, 1.0)
            for p in reversed(self.passages.get(agent_pk, []))
            if needle in p.text.lower() and set(tags or []) <= set(p.tags)
        ]
        return found[:top_k]
