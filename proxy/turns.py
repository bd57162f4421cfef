"""A stateful turn from start to finish: lock, reconcile, store the input, loop, persist.

The HTTP layer parses and authenticates; this module owns the order of effects that keeps the
store consistent (DESIGN §5): the input is written before the first upstream call, the rest of
the turn in one transaction at the end, and a failure marks the turn failed with its input kept
so that a retry continues it instead of storing it twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio

from . import tokens
from .api.auth import Caller
from .catalog import ModelCatalog
from .compaction import Compactor, TurnContext
from .config import Settings
from .core.identity import DEFAULT_CONVERSATION, Identity
from .core.loop import Event, TurnDone, TurnLoop, add_usage
from .core.messages import head_hash, request_hash, split_system, visible_hash
from .core.prompts import BASE_INSTRUCTIONS, MemoryStats, client_system_text, render_system
from .core.reconcile import Action, Decision, StoredRef, learned_resends_history, reconcile
from .core.tools import MemoryState, ToolContext, memory_tools_for
from .core.types import (
    Agent,
    Block,
    Conversation,
    Message,
    NewMessage,
    StoredMessage,
    Turn,
    TurnResult,
    TurnState,
)
from .embeddings import EmbeddingService
from .errors import ProxyError, bad_request
from .locks import ConversationLocks
from .metrics import Metrics
from .store.base import Store
from .upstream import Route, UpstreamClient

log = logging.getLogger("memproxy.turns")

ID_CACHE_SIZE = 50_000  # agents whose ids are kept in memory (then the cache starts over)


@dataclass
class TurnRequest:
    caller: Caller
    identity: Identity
    body: dict[str, Any]
    started: float  # perf_counter() when the request arrived
    idempotency_key: str | None = None
    retry: bool = False
    route: Route | None = None  # the request's deadline in, the upstream that answered out

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return bool(isinstance(options, dict) and options.get("include_usage"))


@dataclass
class Replay:
    """A retried request whose turn already finished: answer from the store."""

    response: dict[str, Any]
    agent_id: str
    conversation_id: str
    turn: Turn


@dataclass
class TurnSession:
    """A running turn. Iterate `events()` exactly once; it persists and releases the lock."""

    service: StatefulService
    request: TurnRequest
    agent: Agent
    conversation: Conversation
    turn_id: str
    loop: TurnLoop
    memory: MemoryState
    window: TurnContext
    decision: Decision
    exit_stack: AsyncExitStack
    done: TurnDone | None = None
    response: dict[str, Any] | None = None
    first_user: Message | None = None  # set when this turn gives the conversation its head
    _finished: bool = field(default=False, repr=False)

    def overhead_ms(self) -> float:
        elapsed = time.perf_counter() - self.request.started
        upstream = self.loop.upstream_seconds + self.window.summary_seconds
        return max(0.0, (elapsed - upstream) * 1000)

    def headers(self) -> dict[str, str]:
        steps = self.done.steps if self.done else 1
        return {
            "x-memproxy-agent-id": self.agent.agent_id,
            "x-memproxy-conversation-id": self.conversation.conversation_id,
            "x-memproxy-turn-id": self.turn_id,
            "x-memproxy-steps": str(steps),
            "x-memproxy-context-tokens": str(self.window.estimate() - self.window.reserve_output),
            "x-memproxy-overhead-ms": f"{self.overhead_ms():.2f}",
        }

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for event in self.loop.run():
                if isinstance(event, TurnDone):
                    self.done = event
                    await self._persist(event)
                yield event
        except BaseException as exc:
            # A client that disconnects cancels us (anyio cancellation is level-triggered), so
            # the bookkeeping runs shielded: the turn is marked and the lock always released.
            with anyio.CancelScope(shield=True):
                if not self._finished:
                    await self._fail(exc)
                await self.close()
            raise
        else:
            await self.close()

    async def close(self) -> None:
        await self.exit_stack.aclose()

    async def _persist(self, done: TurnDone) -> None:
        from .api.sse import completion

        self.response = completion(
            completion_id=f"chatcmpl-{self.turn_id}",
            created=done.created,
            model=done.model,
            message=done.reply,
            finish_reason=done.finish_reason,
            usage=done.usage,
            system_fingerprint=done.system_fingerprint,
        )
        add_usage(done.usage, self.window.summary_usage)
        model = str(self.request.body.get("model", ""))
        for message in done.messages:
            message.tokens = tokens.count_message(message.data, model)
        result = TurnResult(
            messages=done.messages,
            blocks=self.memory.changed_blocks(),
            passages=self.memory.new_passages,
            response=self.response,
            revisions=self.memory.revisions,
        )
        await self.service.store.finish_turn(
            self.turn_id, self.conversation.pk, self.agent.pk, result
        )
        self.service.embeddings.notify(self.agent.pk)  # embed new messages/passages (background)
        self._finished = True
        self._record_metrics(done)
        await self._record_head(done)
        await self.service.catalog.flush()

    async def _record_head(self, done: TurnDone) -> None:
        """After a conversation's first reply: remember its first exchange, so a client that
        resends the history without naming the conversation finds it again."""
        if self.first_user is None:
            return
        reply = next((m for m in done.messages if m.visible and m.data.get("role") == "assistant"),
                     None)
        if reply is None or reply.visible_hash is None:
            return
        head = head_hash(visible_hash(self.first_user), reply.visible_hash)
        await self.service.store.update_conversation(self.conversation.pk, head_hash=head)

    def _record_metrics(self, done: TurnDone) -> None:
        metrics = self.service.metrics
        metrics.steps.observe(done.steps)
        metrics.upstream.observe(self.loop.upstream_seconds + self.window.summary_seconds)
        for key, count in done.tool_calls.items():
            name, _, outcome = key.partition(":")
            metrics.tool_calls.labels(name, outcome).inc(count)
        for kind in ("prompt_tokens", "completion_tokens"):
            metrics.tokens.labels(kind.removesuffix("_tokens")).inc(done.usage.get(kind, 0))
        if self.window.compactions:
            metrics.compactions.inc(self.window.compactions)

    async def _fail(self, exc: BaseException) -> None:
        """Record the failure. The input stays (unanswered) so that a retry continues the turn,
        unless the upstream rejected the request as invalid: then the conversation is left as
        it was before, because resending the same request cannot succeed."""
        self._finished = True
        status = getattr(exc, "status", None)
        error = {"type": type(exc).__name__, "status": status}
        rejected = isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429)
        try:
            if rejected:
                await self.service.store.discard_turn(self.turn_id, error)
            else:
                await self.service.store.fail_turn(self.turn_id, error)
        except Exception:  # the original error matters more; the turn stays 'open'
            log.exception("could not mark turn %s failed", self.turn_id)


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
        self.locks = ConversationLocks(store, settings.agent.lease_ttl_s)
        self.embeddings = EmbeddingService(settings, store, self.metrics)  # app lifespan starts it
        self.running: dict[int, str] = {}  # conversation pk -> request hash of its running turn
        self._agents: dict[tuple[str, str], Agent] = {}
        self._conversations: dict[tuple[int, str], int] = {}
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
                del self._conversations[key]

    async def _state(self, agent: Agent, conversation_pk: int) -> TurnState:
        try:
            return await self.store.load_turn_state(agent.pk, conversation_pk)
        except LookupError:
            # Deleted (by another process) since it was cached: recreate it under the same id.
            self.forget_agent(agent.tenant, agent.agent_id)
            raise ProxyError(
                409, "the agent or conversation was deleted while this request waited; retry",
                code="conversation_deleted", headers={"Retry-After": "1"},
            ) from None

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
                                 resends_history=resends, repeat_of_last=repeat)
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
        kept = [m for m in transcript if cut is None or m.seq < cut]
        first_user: Message | None = None
        if last is None or (needs_transcript and not any(m.role == "assistant" for m in kept)):
            first_user = next((m for m in [*(k.data for k in kept), *decision.new_input]
                               if m.get("role") == "user"), None)
        if decision.action is Action.CONTINUE and last is not None:
            await self.store.reopen_turn(last.turn_id)
            return last.turn_id, decision, state.context, first_user
        model = str(request.body.get("model", ""))
        inputs = [
            NewMessage(m, visible=True, visible_hash=visible_hash(m),
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
        context = [m for m in state.context if cut is None or m.seq < cut]
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
        protect_from = min((m.seq for m in context if m.turn_id == turn_id), default=None)
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
