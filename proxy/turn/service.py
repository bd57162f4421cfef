"""A stateful turn from start to finish: lock, reconcile, store the input, loop, persist
(the running part — streaming the loop's events, persisting, failing — is `turn_session.py`).

The HTTP layer parses and authenticates; this module owns the order of effects that keeps the
store consistent (DESIGN §5): the input is written before the first upstream call, the rest of
the turn in one transaction at the end, and a failure marks the turn failed with its input kept
so that a retry continues it instead of storing it twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

from .. import tokens
from ..config import Settings
from ..core.identity import DEFAULT_CONVERSATION
from ..core.loop import TurnLoop
from ..core.messages import head_hash, request_hash, split_system, visible_hash
from ..core.prompts import BASE_INSTRUCTIONS, MemoryStats, client_system_text, render_system
from ..core.reconcile import Action, Decision, StoredRef, learned_resends_history, reconcile
from ..core.tools import MemoryState, ToolContext, memory_tools_for
from ..core.types import (
    Agent,
    Block,
    Conversation,
    KnownContext,
    Message,
    NewMessage,
    StoredMessage,
    Turn,
    TurnState,
)
from ..embeddings import EmbeddingService
from ..errors import ProxyError, bad_request
from ..models.catalog import ModelCatalog
from ..obs.metrics import Metrics
from ..store.base import Store
from ..upstream import UpstreamClient
from .context_cache import ContextCache
from .locks import ConversationLocks
from .session import Replay, TurnRequest, TurnSession
from .window import Compactor

log = logging.getLogger("memproxy.turns")

ID_CACHE_SIZE = 50_000  # agents whose ids are kept in memory (then the cache starts over)


class StatefulService:
    def __init__(
        self, settings: Settings, store: Store, upstream: UpstreamClient,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.store = store
        self.upstream = upstream
        upstream.observer = self.metrics  # upstream failures, circuits, fallbacks
        self.catalog = ModelCatalog(settings, store, upstream)
        self.compactor = Compactor(settings, store, upstream, self.catalog)
        self.locks = ConversationLocks(store.turn_leases(), settings.agent.lease_ttl_s)
        self.embeddings = EmbeddingService(settings, store, self.metrics)  # app lifespan starts it
        self.running: dict[int, str] = {}  # conversation pk -> request hash of its running turn
        self._agents: dict[tuple[str, str], Agent] = {}
        self._conversations: dict[tuple[int, str], int] = {}
        self.contexts = ContextCache(settings.agent.context_cache_messages)
        self.base_instructions = settings.agent.base_instructions or BASE_INSTRUCTIONS
        self.default_blocks = [
            Block(label=label, value=b.value, description=b.description, limit=b.limit,
                  read_only=b.read_only)
            for label, b in settings.agent.blocks.items()
        ]

    async def start(self, request: TurnRequest, api_key: str | None) -> TurnSession | Replay:
        body = request.body
        system_messages, client_messages = split_system(body["messages"])
        if not client_messages:
            raise bad_request(
                "messages must contain at least one user, assistant or tool message",
                param="messages",
            )
        agent = await self._agent(request.caller.tenant, request.identity.agent_id)
        conversation_id = request.identity.conversation_id or await self._conversation_for(
            agent, client_messages)
        conversation_pk = await self._conversation_pk(agent, conversation_id)
        fingerprint = request_hash(body)
        # The same request while the first is still running (a double submit) waits for it
        # and gets its answer.
        double_submit = self.running.get(conversation_pk) == fingerprint
        stack = AsyncExitStack()
        waited = time.perf_counter()
        await stack.enter_async_context(
            self.locks.hold(conversation_pk, self.settings.agent.lock_timeout_s)
        )
        self.metrics.lock_wait.observe(time.perf_counter() - waited)
        try:
            # Read under the lock: the previous turn may have changed the summary.
            state = await self._state(agent, conversation_pk)
            conversation = state.conversation
            self.running[conversation.pk] = fingerprint
            stack.callback(self.running.pop, conversation.pk, None)
            replay = await self._find_replay(request, conversation, fingerprint, double_submit)
            if replay is not None:
                await stack.aclose()
                return Replay(replay.response or {}, agent.agent_id,
                              conversation.conversation_id, replay)
            turn_id, decision, context, first_user = await self._record_input(
                request, agent, state, client_messages, fingerprint
            )
            session = await self._prepare(
                request, api_key, agent, state, context, turn_id, decision, system_messages,
                stack,
            )
            session.first_user = first_user
        except BaseException:
            await stack.aclose()
            raise
        return session

    async def _agent(self, tenant: str, agent_id: str) -> Agent:
        """The agent, created on first use and cached in memory (ids never change; a deleted
        agent is noticed by `_state` and looked up again)."""
        key = (tenant, agent_id)
        agent = self._agents.get(key)
        if agent is None:
            agent = await self.store.ensure_agent(tenant, agent_id, self.default_blocks)
            if len(self._agents) >= ID_CACHE_SIZE:
                self._agents.clear()
                self._conversations.clear()
            self._agents[key] = agent
        return agent

    async def _conversation_pk(self, agent: Agent, conversation_id: str) -> int:
        conversation_pk = self._conversations.get((agent.pk, conversation_id))
        if conversation_pk is None:
            conversation = await self.store.ensure_conversation(agent.pk, conversation_id)
            conversation_pk = self._conversations[(agent.pk, conversation_id)] = conversation.pk
        return conversation_pk

    async def _conversation_for(self, agent: Agent, client_messages: list[Message]) -> str:
        """The conversation a request that names none belongs to (DESIGN §3.2, §4.2).

        A resent history is matched by its first exchange to the conversation it continues,
        or starts a new one; a lone first message from a client known to resend histories
        starts a new chat; anything else (the SDK style) is the `default` conversation.
        """
        if (len(client_messages) >= 2 and client_messages[0].get("role") == "user"
                and client_messages[1].get("role") == "assistant"):
            head = head_hash(visible_hash(client_messages[0]), visible_hash(client_messages[1]))
            found = await self.store.find_conversation_by_head(agent.pk, head)
            return found.conversation_id if found is not None else f"chat-{head[:16]}"
        if agent.settings.get("resends_history") and not any(
                m.get("role") == "assistant" for m in client_messages):
            return f"chat-{uuid.uuid4().hex[:16]}"
        return DEFAULT_CONVERSATION

    def forget_agent(self, tenant: str, agent_id: str) -> None:
        agent = self._agents.pop((tenant, agent_id), None)
        if agent is not None:
            for key in [k for k in self._conversations if k[0] == agent.pk]:
                self.contexts.forget(self._conversations.pop(key))

    async def _state(self, agent: Agent, conversation_pk: int) -> TurnState:
        try:
            state = await self.store.load_turn_state(
                agent.pk, conversation_pk, self.contexts.get(conversation_pk))
        except LookupError:
            # Deleted (by another process) since it was cached: recreate it under the same id.
            self.forget_agent(agent.tenant, agent.agent_id)
            raise ProxyError(
                409, "the agent or conversation was deleted while this request waited; retry",
                code="conversation_deleted", headers={"Retry-After": "1"},
            ) from None
        self.contexts.put(conversation_pk, KnownContext(
            state.epoch, state.conversation.created_at, tuple(state.context)))
        return state

    async def _find_replay(
        self, request: TurnRequest, conversation: Conversation, fingerprint: str,
        double_submit: bool = False,
    ) -> Turn | None:
        if not (request.retry or request.idempotency_key or double_submit):
            return None
        turn = await self.store.find_turn(
            conversation.pk,
            idempotency_key=request.idempotency_key,
            request_hash=None if request.idempotency_key else fingerprint,
        )
        if turn is not None and turn.status == "done" and turn.response:
            return turn
        return None

    async def _unfinished_without_input(
        self, conversation_pk: int, last: Turn | None, fingerprint: str,
        pending: list[str] | None,
    ) -> bool:
        """Whether `last` is an unfinished turn of this very request that has no messages at
        all (not even superseded ones: a turn whose input was discarded is not continued)."""
        if (pending is not None or last is None or last.status == "done"
                or last.request_hash != fingerprint or last.first_seq is None):
            return False
        rows = await self.store.list_messages(conversation_pk, after_seq=last.first_seq - 1,
                                              limit=1, include_superseded=True)
        return not any(m.turn_id == last.turn_id for m in rows)

    async def _record_input(
        self,
        request: TurnRequest,
        agent: Agent,
        state: TurnState,
        client_messages: list[dict[str, Any]],
        fingerprint: str,
    ) -> tuple[str, Decision, list[StoredMessage], Message | None]:
        """Reconcile and store the new input. Returns the turn id to answer, the decision,
        the conversation's context with the input in it, and — when this turn gives the
        conversation its first reply — its first user message (to record the head)."""
        conversation, last = state.conversation, state.last_turn
        # Each client message is hashed once, for reconciling and for storing the new input
        # (keyed by object: the decision's new input are the request's own message objects).
        hashes = {id(m): visible_hash(m) for m in client_messages}
        if last is not None and last.status == "open":
            # We hold the conversation's lease, so no process is running this turn any more.
            log.warning("conversation %s of agent %s: turn %s was interrupted before it was"
                        " answered (its process stopped or lost the lease); its input is kept"
                        " unanswered and a resend of it continues the turn",
                        conversation.conversation_id, agent.agent_id, last.turn_id)
        needs_transcript = (
            (last is not None and (last.status != "done" or last.request_hash == fingerprint))
            or bool(conversation.resends_history)
            or request.identity.history_client
            or any(m.get("role") == "assistant" for m in client_messages)
        )
        transcript: list[StoredMessage] = (
            await self.store.visible_transcript(conversation.pk) if needs_transcript else []
        )
        pending: list[str] | None = None
        if last is not None and last.status != "done":
            pending = [
                m.visible_hash or visible_hash(m.data)
                for m in transcript
                if m.turn_id == last.turn_id and m.role in ("user", "tool")
            ] or None
        refs = [StoredRef(m.seq, m.visible_hash or visible_hash(m.data), m.role) for m in transcript]
        resends = conversation.resends_history
        if resends is None and request.identity.history_client:
            resends = True  # a chat UI's own header: it resends history until shown otherwise
        repeat = (last is not None and last.status == "done" and not request.retry
                  and last.request_hash == fingerprint)
        if await self._unfinished_without_input(conversation.pk, last, fingerprint, pending):
            # The same request again after its turn stopped before storing anything of its
            # own (a regenerate cut off by a crash or an upstream failure): continue that turn.
            # Reconciling would take a resent lone first message for new input, stored twice.
            decision = Decision(Action.CONTINUE)
        else:
            decision = reconcile(refs, client_messages, pending_input=pending,
                                 resends_history=resends, repeat_of_last=repeat,
                                 client_hashes=[hashes[id(m)] for m in client_messages])
        learned = learned_resends_history(
            client_messages, decision, conversation.resends_history,
            had_replies=last is not None,
        )
        if learned is not None and learned != conversation.resends_history:
            await self.store.update_conversation(conversation.pk, resends_history=learned)
            conversation.resends_history = learned
            if learned and not agent.settings.get("resends_history"):
                # New chats of this agent's client start conversations of their own.
                agent.settings = {**agent.settings, "resends_history": True}
                await self.store.update_agent_settings(agent.pk, agent.settings)
        self.metrics.reconcile.labels(decision.action.value).inc()
        cut = decision.supersede_from_seq
        kept = transcript if cut is None else [m for m in transcript if m.seq < cut]
        first_user: Message | None = None
        if last is None or (needs_transcript and not any(m.role == "assistant" for m in kept)):
            first_user = next((m for m in [*(k.data for k in kept), *decision.new_input]
                               if m.get("role") == "user"), None)
        if decision.action is Action.CONTINUE and last is not None:
            await self.store.reopen_turn(last.turn_id)
            return last.turn_id, decision, state.context, first_user
        model = str(request.body.get("model", ""))
        inputs = [
            NewMessage(m, visible=True,
                       visible_hash=hashes[id(m)] if id(m) in hashes else visible_hash(m),
                       tokens=tokens.count_message(m, model))
            for m in decision.new_input
        ]
        turn_id = uuid.uuid4().hex
        now = time.time()
        first_seq = await self.store.begin_turn(
            conversation.pk,
            turn_id,
            fingerprint,
            request.idempotency_key,
            inputs,
            supersede_from_seq=decision.supersede_from_seq,
        )
        context = list(state.context) if cut is None else [m for m in state.context
                                                           if m.seq < cut]
        context += [
            StoredMessage(seq=first_seq + i, data=m.data, turn_id=turn_id, created_at=now,
                          tokens=m.tokens, visible_hash=m.visible_hash)
            for i, m in enumerate(inputs)
        ]
        return turn_id, decision, context, first_user

    async def _prepare(
        self,
        request: TurnRequest,
        api_key: str | None,
        agent: Agent,
        state: TurnState,
        context: list[StoredMessage],
        turn_id: str,
        decision: Decision,
        system_messages: list[dict[str, Any]],
        stack: AsyncExitStack,
    ) -> TurnSession:
        conversation, blocks = state.conversation, state.blocks
        stats = MemoryStats(
            # as read before this turn's input was stored (superseded messages aside)
            recall_messages=state.recall_messages + len(decision.new_input),
            archival_passages=state.archival_passages,
            last_modified=max((b.updated_at or 0 for b in blocks), default=None) or None,
        )
        system_text = render_system(
            base_instructions=self.base_instructions,
            client_system=client_system_text(system_messages),
            blocks=blocks,
            stats=stats,
            now=time.time(),
        )
        memory = MemoryState.of(blocks)
        body = {k: v for k, v in request.body.items() if k != "messages"}
        protect_from = _first_seq_of(turn_id, context)
        tools = memory_tools_for(body.get("tools") or [])
        try:
            window = await self.compactor.prepare(
                conversation=conversation,
                context=context,
                system_text=system_text,
                tools=tools,
                body=request.body,
                api_key=api_key,
                protect_from_seq=protect_from,
            )
        except ProxyError as exc:
            if exc.code == "context_length_exceeded":  # leave the conversation as it was
                await self.store.discard_turn(turn_id, {"type": "ProxyError", "status": 400})
            raise
        loop = TurnLoop(
            upstream=self.upstream,
            api_key=api_key,
            body=body,
            prompt=window.base_prompt(),
            memory=memory,
            tool_context=ToolContext(
                store=self.embeddings.search,  # full-text, or hybrid (docs/search.md)
                agent_pk=agent.pk,
                conversation_id=conversation.conversation_id,
                current_turn_from_seq=protect_from,
                max_result_chars=window.max_tool_result_chars,
            ),
            max_steps=self.settings.agent.max_steps,
            stream=request.stream,
            guard=window,
            route=request.route,
        )
        return TurnSession(
            service=self,
            request=request,
            agent=agent,
            conversation=conversation,
            turn_id=turn_id,
            loop=loop,
            memory=memory,
            window=window,
            decision=decision,
            exit_stack=stack,
        )


def _first_seq_of(turn_id: str, context: list[StoredMessage]) -> int | None:
    """The seq of the turn's first message in the context. A turn's messages are the newest
    (they were appended last), so only the tail is read, not the whole context."""
    first = None
    for message in reversed(context):
        if message.turn_id != turn_id:
            break
        first = message.seq
    return first
