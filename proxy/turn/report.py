"""The context window as the next request would see it, part by part (docs/design.md §3.3).

Used by `GET /v1/agents/{agent}/context` so operators can see where the tokens go: the base
instructions, memory blocks, memory metadata, the summary, the in-context messages, the tool
schemas and the output reserve, against the model's window. The client's own system text is
sent with each request and not stored, so it is not part of this report.

Automatic recall (recall.py) depends on the next user message, which only the next request
brings: given one (`?message=`), the report runs the same search a turn would and counts the
section it adds, so an operator can see what the model would be reminded of; without one the
report says whether recall applies to the model and its budget, and counts nothing for it.
"""

from __future__ import annotations

import time
from typing import Any

from .. import tokens
from ..core.identity import DEFAULT_CONVERSATION
from ..core.prompts import MemoryStats, render_system
from ..core.tools import MEMORY_TOOLS
from ..core.types import Agent, Conversation
from ..errors import ProxyError
from .ledger import TokenLedger
from .recall import recall_section, wanted
from .service import StatefulService
from .window import reserved_output


async def inspected(store: Any, tenant: str, agent_id: str, conversation_id: str | None,
                    model: str | None) -> tuple[Agent, Conversation, str]:
    """The agent and conversation a report is about (404s naming which is missing), and the
    model it is for: the one asked for, else the conversation's last turn's."""
    agent = await store.get_agent(tenant, agent_id)
    if agent is None:
        raise ProxyError(404, f"no agent {agent_id!r}", code="agent_not_found", param="agent")
    conversation = await store.get_conversation(agent.pk, conversation_id or DEFAULT_CONVERSATION)
    if conversation is None:
        raise ProxyError(404, f"no conversation {conversation_id!r}",
                         code="conversation_not_found", param="conversation")
    if not model:
        last = await store.last_turn(conversation.pk)
        model = str(((last.response if last else None) or {}).get("model") or "")
    return agent, conversation, model


async def context_report(
    service: StatefulService,
    tenant: str,
    agent_id: str,
    conversation_id: str | None,
    model: str | None,
    api_key: str | None,
    message: str | None = None,
) -> dict[str, Any]:
    store = service.store
    agent, conversation, model = await inspected(store, tenant, agent_id, conversation_id,
                                                 model)
    blocks = await store.get_blocks(agent.pk)
    context = await store.context_messages(conversation.pk)
    stats = MemoryStats.of(blocks, recall_messages=await store.count_messages(agent.pk),
                           archival_passages=await store.count_passages(agent.pk))
    window = await service.catalog.window(model, api_key)
    tools_ok = await service.catalog.tools_supported(model)
    settings = service.settings.memory
    applies = wanted(settings.auto_recall, tools=tools_ok)
    recall = ""
    if applies and message:
        recall = await recall_section(
            service.embeddings.search, agent_pk=agent.pk,
            conversation_id=conversation.conversation_id,
            new_input=[{"role": "user", "content": message}], context=context,
            archival_passages=stats.archival_passages,
            budget_tokens=settings.auto_recall_tokens, model=model)
    # The same ledger a turn budgets with, over the prompt a turn would send without the
    # client's own system text: the parts add up to what the next turn would estimate.
    ledger = TokenLedger.count(
        model=model,
        factor=await service.catalog.factor(model),
        system_text=render_system(base_instructions=service.base_instructions,
                                  client_system="", blocks=blocks, stats=stats, now=time.time(),
                                  tools=tools_ok, recall=recall),
        summary=conversation.summary,
        tools=MEMORY_TOOLS if tools_ok else [],
        context=context,
    )
    reserve = reserved_output({}, settings, window)
    parts = {"client_system": 0, **ledger.parts(blocks=blocks, reserve_output=reserve)}
    # The recall section ends the system message's per-turn part: shown on its own line.
    recalled = min(parts["metadata"], ledger.scale(
        tokens.count_text("\n\n" + recall, model))) if recall else 0
    parts["metadata"] -= recalled
    parts["recall"] = recalled
    total = sum(parts.values())
    return {
        "agent_id": agent.agent_id,
        "conversation_id": conversation.conversation_id,
        "model": model,
        "window": window,
        "tokens": {**parts, "total": total, "free": max(0, window - total)},
        "usage": round(total / window, 4) if window else None,
        "calibration_factor": round(ledger.factor, 4),
        "messages_in_context": len(context),
        "summary": conversation.summary,
        "tools": tools_ok,
        "auto_recall": {
            "mode": settings.auto_recall,
            "applies": applies,
            "budget_tokens": settings.auto_recall_tokens,
            "section": recall or None,
        },
    }
