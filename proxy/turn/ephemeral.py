"""Temporary chats (docs/temporary-chats.md): answered with memory read-only, nothing stored.

Open WebUI's "Temporary Chat" (conversation ids `temporary:<id>`, its local form `local:<id>`)
promises that nothing of the chat is kept, and `X-Memory: ephemeral` asks the same of any
client (core/identity.py sets `Identity.ephemeral`). Such a turn still knows the agent: its
blocks are in the system prompt and the searches (`conversation_search`,
`archival_memory_search`) read the real store. But the model is offered no editing tool, and
the turn writes nothing at all: no agent (an unknown agent gets the default blocks, in memory),
no conversation row, no message, no turn, no block change, no passage, no embedding. So
nothing of it can be recalled later.

It is a path of its own rather than the stateful pipeline with a write-dropping store: there is
nothing to reconcile, replay, lock or persist, and the turn's context is simply the messages
the client sent. What it shares with a stateful turn is the running part: the window (paging
and summaries, kept in memory), the agent loop and the `TurnSession` that streams it, whose
writes go to `_Discard`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, Protocol

from ..config import Settings
from ..core.loop import TurnLoop
from ..core.messages import split_system
from ..core.prompts import (
    BASE_INSTRUCTIONS_NO_TOOLS,
    MemoryStats,
    client_system_text,
    render_system,
)
from ..core.reconcile import Action, Decision
from ..core.tools import MemoryState, SearchBackend, ToolContext, memory_tools_for
from ..core.types import (
    Agent,
    Block,
    Conversation,
    Message,
    MessageHit,
    Passage,
    StoredMessage,
    TurnResult,
)
from ..errors import bad_request
from ..obs.metrics import Metrics
from ..store.base import LookupStore
from .observers import RecordMetrics
from .recall import recall_section, wanted
from .request import TurnRequest
from .session import TurnEffects, TurnSession
from .tool_fallback import ToolFallback
from .window import TurnWindow

READ_ONLY_NOTE = (
    "This is a temporary chat: nothing of it will be kept, and your memory is read-only here."
    " You can read your memory blocks and search with conversation_search and"
    " archival_memory_search, but you cannot save or change anything; if the user asks you to"
    " remember something, tell them that a temporary chat cannot."
)
READ_ONLY_NOTE_NO_TOOLS = (
    "This is a temporary chat: nothing of it will be kept, and your memory is read-only here;"
    " if the user asks you to remember something, tell them that a temporary chat cannot."
)
CONVERSATION_ID = "ephemeral"  # reported when the request named no conversation
HISTORY_TURN = "client-history"  # the turn id of the messages before this turn's input


class ServiceParts(Protocol):
    """What a temporary chat uses of the `StatefulService` (service.py)."""

    settings: Settings
    store: Any  # a LookupStore: an agent, its blocks and counts are read, nothing is written
    upstream: Any  # core.loop.Upstream
    catalog: Any  # window.Calibrations
    embeddings: Any  # `.search`: full-text or hybrid search (docs/search.md)
    metrics: Metrics
    base_instructions: str
    default_blocks: list[Block]


class _Discard:
    """Where a temporary chat's session and window write: nowhere. The calls a turn makes at
    its end (finish, fail, discard) and a page-out's `evict_messages` are accepted and
    dropped; the summary a page-out makes lives in the turn's in-memory conversation only."""

    async def finish_turn(self, turn_id: str, conversation_pk: int, agent_pk: int,
                          result: TurnResult) -> int:
        return len(result.passages)  # none is kept, and none was held back by a quota

    async def fail_turn(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def discard_turn(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def evict_messages(self, conversation_pk: int, through_seq: int, summary: str) -> int:
        return 0


class _NothingToSearch:
    """The searches of an agent that does not exist yet: there is nothing to find."""

    async def search_passages(self, agent_pk: int, query: str, *, tags: list[str] | None = None,
                              top_k: int = 5) -> list[Passage]:
        return []

    async def search_messages(self, agent_pk: int, query: str, *,
                              roles: list[str] | None = None, limit: int = 10,
                              start: float | None = None, end: float | None = None,
                              newest: int | None = None) -> list[MessageHit]:
        return []


class EphemeralSession(TurnSession):
    """A temporary chat's running turn; its headers say that nothing was stored."""

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "x-memproxy-ephemeral": "true"}


async def start_ephemeral(service: ServiceParts, request: TurnRequest,
                          api_key: str | None) -> TurnSession:
    """A temporary chat's turn, ready to run: the agent's memory read, nothing written."""
    system_messages, client_messages = split_system(request.body["messages"])
    if not client_messages:
        raise bad_request(
            "messages must contain at least one user, assistant or tool message",
            param="messages",
        )
    now = time.time()
    agent, blocks, stats, search = await _read_memory(service, request, now)
    # the turns around hits are read from the store; an unknown agent has none
    neighbours = None if isinstance(search, _NothingToSearch) else service.store
    conversation = Conversation(
        pk=0, agent_pk=agent.pk, created_at=now,
        conversation_id=request.identity.conversation_id or CONVERSATION_ID)
    turn_id = f"ephemeral-{uuid.uuid4().hex[:24]}"
    context, input_seq = client_context(client_messages, turn_id, now)
    tools_ok = await service.catalog.tools_supported(request.model)

    async def system_for(tools: bool) -> str:
        """The system text; without tools, the no-tools instructions and automatic recall
        (turn/recall.py; read-only like everything here) as `[memory] auto_recall` says."""
        base = service.base_instructions
        if not tools and service.settings.agent.base_instructions is None:
            base = BASE_INSTRUCTIONS_NO_TOOLS
        recall = ""
        if wanted(service.settings.memory.auto_recall, tools=tools):
            recall = await recall_section(
                search, agent_pk=agent.pk, conversation_id="", new_input=client_messages,
                context=[], archival_passages=stats.archival_passages,
                budget_tokens=service.settings.memory.auto_recall_tokens, model=request.model,
                neighbours=neighbours, neighbour_count=service.settings.memory.search_neighbours)
        return render_system(
            base_instructions=f"{base}\n\n{READ_ONLY_NOTE if tools else READ_ONLY_NOTE_NO_TOOLS}",
            client_system=client_system_text(system_messages),
            blocks=blocks, stats=stats, now=now, tools=tools, recall=recall,
        )

    system_text = await system_for(tools_ok)
    body = {k: v for k, v in request.body.items() if k != "messages"}
    client_tools = list(body.get("tools") or [])
    discard = _Discard()
    window = await TurnWindow.open(
        conversation=conversation, context=context, system_text=system_text,
        tools=memory_tools_for(client_tools, read_only=True) if tools_ok else client_tools,
        client_tools=client_tools, body=request.body,
        api_key=api_key, protect_from_seq=input_seq, settings=service.settings.memory,
        store=discard,  # type: ignore[arg-type]  # only evict_messages is called
        upstream=service.upstream, catalog=service.catalog,
    )
    memory = MemoryState.of(blocks)
    upstream = ToolFallback(service.upstream, service.catalog, request.model, client_tools,
                            tools=tools_ok, on_switch=lambda: system_for(False))
    loop = TurnLoop(
        upstream=upstream, api_key=api_key, body=body, prompt=window.base_prompt(),
        memory=memory,
        tool_context=ToolContext(store=search, agent_pk=agent.pk,
                                 max_result_chars=window.max_tool_result_chars,
                                 neighbours=neighbours,
                                 neighbour_count=service.settings.memory.search_neighbours),
        max_steps=service.settings.agent.max_steps, stream=request.stream, guard=window,
        route=request.route, read_only_memory=True,
    )
    effects = TurnEffects(discard, [RecordMetrics(service.metrics)],  # type: ignore[arg-type]
                          service.metrics)
    return EphemeralSession(
        effects=effects, request=request, agent=agent, conversation=conversation,
        turn_id=turn_id, loop=loop, memory=memory, window=window,
        decision=Decision(Action.APPEND, new_input=[]), exit_stack=AsyncExitStack(),
    )


async def _read_memory(service: ServiceParts, request: TurnRequest, now: float
                       ) -> tuple[Agent, list[Block], MemoryStats, SearchBackend]:
    """The agent's blocks, counts and search, read only; an unknown agent is not created:
    it gets the configured default blocks and has nothing to search."""
    store: LookupStore = service.store
    tenant, agent_id = request.caller.tenant, request.identity.agent_id
    agent = await store.get_agent(tenant, agent_id)
    if agent is None:
        blocks = [Block(**vars(b)) for b in service.default_blocks]
        return (Agent(pk=0, tenant=tenant, agent_id=agent_id, created_at=now), blocks,
                MemoryStats.of(blocks, 0, 0), _NothingToSearch())
    blocks = await store.get_blocks(agent.pk)
    stats = MemoryStats.of(blocks, recall_messages=await store.count_messages(agent.pk),
                           archival_passages=await store.count_passages(agent.pk))
    return agent, blocks, stats, service.embeddings.search


def client_context(messages: Sequence[Message], turn_id: str, now: float
                   ) -> tuple[list[StoredMessage], int]:
    """The client's messages as the turn's context, numbered from 1, and the number of the
    first one of this turn's input: what follows the last assistant message (all of it for a
    client that sends only its new message). The input is never paged out; the history
    before it may be, into an in-memory summary, when it does not fit the window."""
    last_reply = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"),
                     default=-1)
    input_from = last_reply + 1 if last_reply + 1 < len(messages) else last_reply
    context = [
        StoredMessage(seq=i + 1, data=dict(m), created_at=now,
                      turn_id=turn_id if i >= input_from else HISTORY_TURN)
        for i, m in enumerate(messages)
    ]
    return context, input_from + 1
