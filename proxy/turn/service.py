"""A stateful turn from start to running: lock, state, replay, input, prepare.

The HTTP layer parses and authenticates; this module owns the order of effects that keeps the
store consistent (docs/design.md §5): the input is written before the first upstream call,
the rest of the turn in one transaction at the end (session.py), and a failure marks the turn
failed with its input kept so that a retry continues it instead of storing it twice.

    start ─▶ lock the conversation (locks.py)
          ─▶ read its state under the lock (one store call; context_cache.py), where the
             store can, storing in the same call an input planned ahead (ahead.py)
          ─▶ replay a retried request whose turn finished
          ─▶ reconcile and store the input (input.py), unless stored with the read
          ─▶ prepare: system prompt, window (window.py), loop ─▶ TurnSession (session.py)
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..core.loop import TurnLoop
from ..core.messages import request_hash, split_system
from ..core.prompts import (
    BASE_INSTRUCTIONS,
    BASE_INSTRUCTIONS_NO_TOOLS,
    MemoryStats,
    client_system_text,
    render_system,
)
from ..core.quotas import passage_quota
from ..core.recall import user_text
from ..core.tools import MemoryState, ToolContext, memory_tools_for
from ..core.types import (
    Agent,
    Block,
    KnownContext,
    Message,
    StoredMessage,
    TurnState,
)
from ..embeddings import EmbeddingService
from ..errors import ProxyError, bad_request
from ..models.catalog import ModelCatalog
from ..obs.metrics import Metrics
from ..store.base import Store
from ..store.leases import LeaseClaim
from ..upstream import UpstreamClient
from .ahead import PlannedAhead, RememberTips, Tips, plan_ahead
from .background_summaries import SummaryQueue
from .context_cache import ContextCache
from .ephemeral import start_ephemeral
from .extract import ExtractAfterTurn, FactExtractor
from .identities import Identities
from .input import (
    InputPlan,
    client_hashes,
    context_with_input,
    plan_input,
    read_history,
    store_input,
)
from .locks import ConversationLocks
from .observers import EmbedNewRows, FlushCatalog, RecordMetrics, TurnObserver
from .recall import recall_section, wanted
from .replay import UndeliveredTurns, find_replay
from .request import Replay, TurnRequest
from .session import TurnEffects, TurnSession
from .storage_meter import StorageMeter
from .tool_fallback import ToolFallback
from .window import TurnWindow

log = logging.getLogger("memproxy.turns")


@dataclass(frozen=True)
class StoredTurn:
    """A turn whose input is stored: what preparing its prompt and loop starts from."""

    agent: Agent
    state: TurnState  # as read under the lock, before the input was stored
    turn_id: str
    context: list[StoredMessage]  # the conversation's context, the input in it
    plan: InputPlan
    fingerprint: str = ""  # the request's hash (core.messages.request_hash)

    def memory_stats(self) -> MemoryStats:
        # as read before this turn's input was stored (superseded messages aside)
        return MemoryStats.of(
            self.state.blocks,
            recall_messages=self.state.recall_messages + len(self.plan.decision.new_input),
            archival_passages=self.state.archival_passages,
        )


@dataclass(frozen=True)
class Read:
    """A turn's read under its conversation's lock, and the input it stored if it stored one
    (planned ahead: ahead.py): the plan, the turn and the context with the input in it."""

    state: TurnState
    stored: tuple[InputPlan, str, list[StoredMessage]] | None = None


@dataclass(frozen=True)
class Sinks:
    """Where a prepared turn writes and whom it calls: the service's own store, upstream and
    summary queue, or a preview's (preview.py) that write nothing and capture the first
    upstream request. Preparing is the same code either way, so the preview is the request the
    next turn sends."""

    store: Any  # a TurnStore: page-outs (inline summaries) and discarding an overflowing turn
    upstream: Any  # core.loop.Upstream: the loop's calls
    background: Any  # window.PageOut | None: page-outs with background summaries


class StatefulService:
    """Everything a stateful turn needs, shared by all requests of one app.

    A turn itself uses the store's `TurnStore` role (input.py, window.py, session.py,
    observers.py); the whole `Store` is taken because the embeddings (search, vectors) and the
    model catalog (calibration) share it."""

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
        self.locks = ConversationLocks(store.turn_leases(), settings.agent.lease_ttl_s)
        self.embeddings = EmbeddingService(settings, store, self.metrics)  # app lifespan starts it
        self.observers: list[TurnObserver] = [
            EmbedNewRows(self.embeddings), RecordMetrics(self.metrics),
            FlushCatalog(self.catalog),
        ]
        # the last turn's tip in each conversation, where the store can store an input
        # planned from it with the read (ahead.py)
        self.tips = Tips()
        if getattr(store, "begins_in_read", False):
            self.observers.append(RememberTips(self.tips))
        self.effects = TurnEffects(store, self.observers, self.metrics)
        self.extractor = FactExtractor(store, upstream, settings.memory)  # extract_facts
        # summaries of paged-out messages, written in the background (the app starts it)
        self.summaries = SummaryQueue(store, upstream, settings.memory, self.metrics)
        self.running: dict[int, str] = {}  # conversation pk -> request hash of its running turn
        self.undelivered = UndeliveredTurns()  # answers whose client had gone
        self.contexts = ContextCache(settings.agent.context_cache_messages)
        self.storage = StorageMeter(store, settings.limits.storage_mb_per_tenant,
                                    settings.limits.storage_check_s)  # the app starts it
        self.base_instructions = settings.agent.base_instructions or BASE_INSTRUCTIONS
        self.default_blocks = [
            Block(label=label, value=b.value, description=b.description, limit=b.limit,
                  read_only=b.read_only)
            for label, b in settings.agent.blocks.items()
        ]
        self.identities = Identities(store, self.default_blocks,
                                     max_agents=settings.limits.agents_per_tenant)

    async def start(self, request: TurnRequest, api_key: str | None) -> TurnSession | Replay:
        if request.identity.ephemeral:  # a temporary chat: memory read-only, nothing stored
            return await start_ephemeral(self, request, api_key)
        system_messages, client_messages = split_system(request.body["messages"])
        if not client_messages:
            raise bad_request(
                "messages must contain at least one user, assistant or tool message",
                param="messages",
            )
        self.storage.check(request.caller.tenant)  # in memory: no round trip
        agent = await self.identities.agent(request.caller.tenant, request.identity.agent_id)
        conversation_id = (request.identity.conversation_id
                           or await self.identities.conversation_for(agent, client_messages))
        conversation_pk = await self.identities.conversation_pk(agent, conversation_id)
        fingerprint = request_hash(request.body)
        hashes = client_hashes(client_messages)
        # The same request while the first is still running (a double submit) waits for it
        # and gets its answer.
        double_submit = self.running.get(conversation_pk) == fingerprint
        stack = AsyncExitStack()
        waited = time.perf_counter()
        # Read under the lock (the previous turn may have changed the summary); where the
        # store can, the read takes the lease too (locks.py), and stores the input if it
        # could be planned ahead (ahead.py).
        loaded = await stack.enter_async_context(self.locks.hold(
            conversation_pk, self.settings.agent.lock_timeout_s,
            first=lambda lease: self._read(request, agent, conversation_pk, lease,
                                           client_messages, hashes, fingerprint)))
        self.metrics.lock_wait.observe(time.perf_counter() - waited)
        try:
            assert loaded is not None
            state = loaded.state
            conversation = state.conversation
            self.running[conversation.pk] = fingerprint
            stack.callback(self.running.pop, conversation.pk, None)
            if loaded.stored is not None:  # planned ahead: an append, no replay (ahead.py)
                plan, turn_id, context = loaded.stored
                self.metrics.reconcile.labels(plan.decision.action.value).inc()
            else:
                replay = await find_replay(
                    self.store, request, state, fingerprint, double_submit=double_submit,
                    resend_window_s=self.settings.agent.resend_window_s,
                    undelivered=self.undelivered)
                if replay is not None:
                    await stack.aclose()
                    return Replay(replay.response or {}, agent.agent_id,
                                  conversation.conversation_id, replay)
                plan = await self._plan_input(request, agent, state, client_messages, hashes,
                                              fingerprint)
                turn_id, context = await store_input(
                    self.store, plan, agent=agent, conversation=conversation,
                    fingerprint=fingerprint, idempotency_key=request.idempotency_key)
                if plan.reload:  # the path moved: what this process keeps of it is stale
                    self.contexts.forget(conversation.pk)
            stored = StoredTurn(agent, state, turn_id, context, plan, fingerprint)
            session = await self.prepare(request, api_key, stored, system_messages, stack)
        except BaseException:
            await stack.aclose()
            raise
        return session

    def forget_agent(self, tenant: str, agent_id: str) -> None:
        """Drop what this process keeps of a deleted agent (ids, cached contexts)."""
        for conversation_pk in self.identities.forget_agent(tenant, agent_id):
            self.contexts.forget(conversation_pk)
            self.tips.forget(conversation_pk)

    # --- the steps under the lock -----------------------------------------------------------
    async def _read(self, request: TurnRequest, agent: Agent, conversation_pk: int,
                    lease: LeaseClaim | None, client_messages: list[Message],
                    hashes: dict[int, str], fingerprint: str) -> Read:
        """The turn's first read under the lock; with a lease claim from a store that
        `begins_in_read`, an input planned ahead is stored by the same call (ahead.py)."""
        ahead = None
        if lease is not None and self.tips and not (request.idempotency_key or request.retry):
            ahead = await plan_ahead(
                self.tips.get(conversation_pk), client_messages=client_messages,
                hashes=hashes, fingerprint=fingerprint, model=request.model,
                history_client=request.identity.history_client,
                agent_resends=bool(agent.settings.get("resends_history")))
        state, first_seq = await self._state(agent, conversation_pk, lease, ahead)
        if ahead is None or first_seq is None:
            return Read(state)
        plan, turn_id = ahead.with_context(state), ahead.begin.turn_id
        return Read(state, (plan, turn_id, context_with_input(plan, turn_id, first_seq,
                                                              time.time())))

    async def _state(self, agent: Agent, conversation_pk: int,
                     lease: LeaseClaim | None = None, ahead: PlannedAhead | None = None,
                     ) -> tuple[TurnState, int | None]:
        known = self.contexts.get(conversation_pk)
        first_seq = None
        try:
            if lease is None:
                state = await self.store.load_turn_state(agent.pk, conversation_pk, known)
            elif ahead is None:  # only a store with `leases_in_read` is handed a claim
                state = await self.store.load_turn_state(
                    agent.pk, conversation_pk, known, lease=lease)
            else:  # only a store that `begins_in_read` has tips (ahead.py)
                state, first_seq = await self.store.load_and_begin(  # type: ignore[attr-defined]
                    agent.pk, conversation_pk, known, lease=lease, planned=ahead.begin)
        except LookupError:
            # Deleted (by another process) since it was cached: recreate it under the same id.
            self.forget_agent(agent.tenant, agent.agent_id)
            raise ProxyError(
                409, "the agent or conversation was deleted while this request waited; retry",
                code="conversation_deleted", headers={"Retry-After": "1"},
            ) from None
        self.contexts.put(conversation_pk, KnownContext(
            state.epoch, state.conversation.created_at, tuple(state.context),
            state.left_context))
        return state, first_seq

    async def _plan_input(self, request: TurnRequest, agent: Agent, state: TurnState,
                          client_messages: list[Message], hashes: dict[int, str],
                          fingerprint: str) -> InputPlan:
        last = state.last_turn
        if last is not None and last.status == "open":
            # We hold the conversation's lease, so no process is running this turn any more.
            log.warning("conversation %s of agent %s: turn %s was interrupted before it was"
                        " answered (its process stopped or lost the lease); its input is kept"
                        " unanswered and a resend of it continues the turn",
                        state.conversation.conversation_id, agent.agent_id, last.turn_id)
        history_client = request.identity.history_client
        history = await read_history(self.store, state, client_messages, hashes, fingerprint,
                                     history_client=history_client)
        plan = plan_input(
            state=state, history=history, client_messages=client_messages,
            hashes=hashes, fingerprint=fingerprint,
            model=request.model, history_client=history_client,
            agent_resends=bool(agent.settings.get("resends_history")),
        )
        self.metrics.reconcile.labels(plan.decision.action.value).inc()
        return plan

    async def prepare(
        self,
        request: TurnRequest,
        api_key: str | None,
        stored: StoredTurn,
        system_messages: list[Message],
        stack: AsyncExitStack,
        sinks: Sinks | None = None,
    ) -> TurnSession:
        """The running turn: its system prompt, its window (paged out to fit) and its loop.

        A model that takes no tools (`models/tool_support.py`) is offered none of memproxy's and
        gets the no-tools instructions; automatic recall (recall.py) adds the section of what
        its memory holds about the new message, per `[memory] auto_recall`. `sinks` replaces
        where it writes and whom it calls (a preview: preview.py)."""
        sinks = sinks or self.sinks()
        agent, conversation = stored.agent, stored.state.conversation
        turn_id, plan = stored.turn_id, stored.plan
        tools_ok = await self.catalog.tools_supported(request.model)

        async def system_for(tools: bool) -> str:
            recall = ""
            if wanted(self.settings.memory.auto_recall, tools=tools):
                recall = await recall_section(
                    self.embeddings.search, agent_pk=agent.pk,
                    conversation_id=conversation.conversation_id,
                    new_input=plan.decision.new_input, context=stored.context,
                    archival_passages=stored.state.archival_passages,
                    budget_tokens=self.settings.memory.auto_recall_tokens, model=request.model,
                    neighbours=self.store,
                    neighbour_count=self.settings.memory.search_neighbours)
            return self._system_text(stored, system_messages, tools=tools, recall=recall)

        system_text = await system_for(tools_ok)
        body = {k: v for k, v in request.body.items() if k != "messages"}
        client_tools = list(body.get("tools") or [])
        protect_from = _first_seq_of(turn_id, stored.context)
        try:
            window = await TurnWindow.open(
                conversation=conversation, context=stored.context, system_text=system_text,
                tools=memory_tools_for(client_tools) if tools_ok else client_tools,
                client_tools=client_tools, body=request.body,
                api_key=api_key, protect_from_seq=protect_from, settings=self.settings.memory,
                store=sinks.store, upstream=sinks.upstream, catalog=self.catalog,
                may_page=request.may_page, background=sinks.background,
            )
        except ProxyError as exc:
            if exc.code == "context_length_exceeded":  # leave the conversation as it was
                await sinks.store.discard_turn(turn_id, {"type": "ProxyError", "status": 400})
            raise
        memory = MemoryState.of(stored.state.blocks)
        memory.passage_quota = passage_quota(self.settings.limits,
                                             stored.state.archival_passages)
        memory.passage_cap = self.settings.limits.passages_per_agent
        upstream = ToolFallback(sinks.upstream, self.catalog, request.model, client_tools,
                                tools=tools_ok, on_switch=lambda: system_for(False))
        loop = TurnLoop(
            upstream=upstream,
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
                neighbours=self.store,
                neighbour_count=self.settings.memory.search_neighbours,
            ),
            max_steps=min(request.max_steps or self.settings.agent.max_steps,
                          self.settings.agent.max_steps),
            stream=request.stream,
            guard=window,
            route=request.route,
        )
        effects = self.effects
        if self.settings.memory.extract_facts:  # a model without tools: facts after the turn
            effects = TurnEffects(self.store, [*self.observers, ExtractAfterTurn(
                self.extractor, user_text(plan.decision.new_input), request.model, api_key,
                served_with_tools=lambda: upstream.tools)], self.metrics)
        return TurnSession(
            effects=effects, request=request, agent=agent, conversation=conversation,
            turn_id=turn_id, loop=loop, memory=memory, window=window, decision=plan.decision,
            exit_stack=stack, reply_hash=plan.reply_hash, request_hash=stored.fingerprint,
            input_tip_seq=stored.context[-1].seq if stored.context else None,
        )

    def sinks(self) -> Sinks:
        """The real ones: this service's store, upstream and (by config) summary queue."""
        background = self.summaries if self.settings.memory.summaries == "background" else None
        return Sinks(self.store, self.upstream, background)

    def _system_text(self, stored: StoredTurn, system_messages: list[Message], *,
                     tools: bool, recall: str) -> str:
        base = self.base_instructions
        if not tools and self.settings.agent.base_instructions is None:
            base = BASE_INSTRUCTIONS_NO_TOOLS
        return render_system(
            base_instructions=base,
            client_system=client_system_text(system_messages),
            blocks=stored.state.blocks,
            stats=stored.memory_stats(),
            now=time.time(),
            tools=tools,
            recall=recall,
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
