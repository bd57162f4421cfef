"""The next upstream request, exactly as the next turn would send it, without running the turn.

`GET /v1/agents/{a}/context?format=raw` (docs/api.md) shows an operator the JSON body the
upstream will receive: the system message with the rendered memory blocks, the summary, the
in-context messages, the optional new user message, the tools (memory tools and how
`tool_choice` is mapped) and the model parameters. A re-implementation of prompt assembly
would drift from the real one, so this module runs the turn's own code with its effects
replaced:

- the input is located and planned by the same functions (`turn/input.py`: `read_history`,
  the pure `plan_input`) for the request a client would send (the SDK style: just the new user
  message; for a conversation whose client resends its history, a chat UI's: the active path,
  then the message), and the context with that input in it is what `store_input` would return
  (`context_with_input`), but nothing is stored;
- the turn is prepared by `StatefulService.prepare` itself (system prompt, automatic recall,
  the window and its page-outs, the loop), with `Sinks` that write nothing: a page-out is
  planned as the turn would plan it and shows the gap note a background summary shows first;
- the loop runs its first step, and the upstream it calls records the body and stops it.

The upstream key is never part of a request body, so it cannot appear here. What a fallback
upstream receives differs only by a configured model rename (`[[upstream.fallbacks]] model`).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

from ..core.caller import Caller
from ..core.identity import Identity
from ..core.messages import request_hash
from ..core.reconcile import Action, Decision
from ..core.summary import pending_note
from ..core.types import Conversation, StoredMessage
from .background_summaries import transcript
from .input import InputPlan, client_hashes, context_with_input, plan_input, read_history
from .report import inspected
from .request import TurnRequest
from .service import Sinks, StatefulService, StoredTurn
from .summarizer import max_summary_chars

PREVIEW_TURN = "preview"  # the turn id the previewed input carries (never stored)


class Captured(Exception):
    """Raised by `_CaptureUpstream` to stop the loop at its first upstream call."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("the preview's upstream request")
        self.body = body


class _CaptureUpstream:
    """The loop's upstream in a preview: the first request is recorded, never sent."""

    async def chat(self, body: dict[str, Any], *, api_key: str | None, route: Any = None
                   ) -> dict[str, Any]:
        raise Captured(body)

    async def chat_stream(self, body: dict[str, Any], *, api_key: str | None,
                          route: Any = None) -> Any:
        raise Captured(body)
        yield  # pragma: no cover - makes this an async generator like the real one


class _NoWrites:
    """A preview's store for the window: a page-out and an overflow are not written."""

    async def evict_messages(self, conversation_pk: int, through_seq: int, summary: str) -> int:
        return 0

    async def discard_turn(self, *args: Any, **kwargs: Any) -> None:
        return None


class _PlannedPageOut:
    """A page-out as a background summary starts it (background_summaries.SummaryQueue),
    minus the writes: the prompt shows the previous summary with the gap note."""

    def __init__(self) -> None:
        self.evicted = 0

    async def page_out(self, conversation: Conversation, evicted: list[StoredMessage], *,
                       window: int, model: str, api_key: str | None) -> str:
        self.evicted += len(evicted)
        return pending_note(conversation.summary, transcript(evicted),
                            max_chars=max_summary_chars(window) * 2)


async def next_request(
    service: StatefulService,
    tenant: str,
    agent_id: str,
    conversation_id: str | None,
    model: str | None,
    api_key: str | None,
    message: str | None = None,
) -> dict[str, Any]:
    """`{"request": body, "paged_out": n, "model": ...}`: the body of the next turn's first
    upstream call for `message` (or for the conversation as it stands), `paged_out` the
    messages that turn would page out first."""
    store = service.store
    agent, conversation, model = await inspected(store, tenant, agent_id, conversation_id,
                                                 model)
    state = await store.load_turn_state(agent.pk, conversation.pk)
    new: list[dict[str, Any]] = [{"role": "user", "content": message}] if message else []
    if new and conversation.resends_history:  # a chat UI's: the active path, then the message
        new = [dict(m.data) for m in await store.visible_transcript(conversation.pk)] + new
    body: dict[str, Any] = {"model": model, "messages": new}
    request = TurnRequest(
        caller=Caller(tenant=tenant),
        identity=Identity(agent_id, conversation.conversation_id, "path"),
        body=body, started=time.perf_counter())
    plan, context = await _planned_input(store, state, new, body, model,
                                         bool(agent.settings.get("resends_history")))
    stored = StoredTurn(agent, state, PREVIEW_TURN, context, plan)
    pages = _PlannedPageOut()
    sinks = Sinks(store=_NoWrites(), upstream=_CaptureUpstream(), background=pages)
    async with AsyncExitStack() as stack:
        session = await service.prepare(request, api_key, stored, [], stack, sinks)
        try:
            async for _ in session.loop.run():
                pass
        except Captured as captured:
            return {"model": model, "request": captured.body, "paged_out": pages.evicted}
    raise RuntimeError("the turn's loop ended without calling the upstream")


async def _planned_input(store: Any, state: Any, new: list[dict[str, Any]],
                         body: dict[str, Any], model: str, agent_resends: bool
                         ) -> tuple[InputPlan, list[StoredMessage]]:
    """The plan for the new message as the turn makes it, and the context once it would be
    stored; without a message, the context as it stands."""
    if not new:
        plan = InputPlan(Decision(Action.APPEND, new_input=[]), [], list(state.context), None,
                         None, False)
        return plan, list(state.context)
    hashes = client_hashes(new)
    fingerprint = request_hash(body)
    history = await read_history(store, state, new, hashes, fingerprint, history_client=False)
    plan = plan_input(state=state, history=history, client_messages=new, hashes=hashes,
                      fingerprint=fingerprint, model=model, history_client=False,
                      agent_resends=agent_resends)
    if plan.continue_turn is not None:
        return plan, plan.context
    first = max((m.seq for m in plan.context), default=0) + 1
    return plan, context_with_input(plan, PREVIEW_TURN, first, time.time())
