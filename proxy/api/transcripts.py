"""Transcripts: an agent's conversations (listed, or created empty), a conversation's messages
(paged or searched), and full-text search across all of an agent's conversations (docs/api.md).

A conversation is also created by its first turn; creating one ahead lets a client (the
inspector's Chat panel) show and pick it before anything is said in it.

Messages are shown as stored, internal memory steps (`visible: false`) and, on request,
superseded ones included, so an operator sees what the model saw. Searches cover the visible
messages; the agent-wide search ranks exactly as the model's `conversation_search` does
(embeddings/search.py), a single conversation's by the store's full-text index (BM25: FTS5
bm25 / Postgres in SQL).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import views
from ..core.identity import validate_id
from ..errors import ProxyError, bad_request
from ..store.admin_types import ConversationStats
from .rest import (
    MAX_PAGE,
    Scope,
    endpoint,
    load_agent,
    load_conversation,
    ok,
    query_bool,
    query_date,
    query_int,
    query_list,
    read_model,
)
from .schemas import ConversationCreate

SEARCH_ROLES = frozenset({"user", "assistant", "tool"})
MAX_SEQ = 2**31 - 1


@endpoint
async def list_conversations(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    stats = await scope.state.store.list_conversation_stats(agent.pk)
    return ok(views.list_object([views.conversation_object(s) for s in stats]))


@endpoint
async def create_conversation(request: Request, scope: Scope) -> Response:
    """An empty conversation of an existing agent; `409 conflict` if the id is taken."""
    agent = await load_agent(request, scope)
    body = await read_model(request, scope, ConversationCreate)
    conversation_id = validate_id(body.id, "id")
    store = scope.state.store
    if await store.get_conversation(agent.pk, conversation_id) is not None:
        raise ProxyError(409, f"conversation {conversation_id!r} already exists",
                         code="conflict", param="id")
    conversation = await store.ensure_conversation(agent.pk, conversation_id)
    return ok(views.conversation_object(ConversationStats(conversation, 0, None)), 201)


@endpoint
async def list_messages(request: Request, scope: Scope) -> Response:
    """A page by seq (oldest first, `next_after` for the next; or with `order=desc` newest
    first, `next_before` for the older page: a transcript opened at its end), or with `query`
    the best full-text hits of this conversation (`score`, best first)."""
    agent = await load_agent(request, scope)
    conversation = await load_conversation(request, scope, agent)
    after = query_int(request, "after", 0, 0, MAX_SEQ)
    before = query_int(request, "before", MAX_SEQ, 1, MAX_SEQ)
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    superseded = query_bool(request, "include_superseded")
    order = request.query_params.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise bad_request("order must be asc or desc", param="order", code="invalid_parameter")
    query = (request.query_params.get("query") or "").strip()
    store = scope.state.store
    if query:
        hits = await store.search_conversation(conversation.pk, agent.pk, query,
                                               limit=limit + 1, include_superseded=superseded)
        data = [views.message_object(m, score=score) for m, score in hits[:limit]]
        return ok(views.list_object(data, len(hits) > limit, next_after=None))
    newest_first = order == "desc"
    rows = await store.list_messages(conversation.pk, after_seq=after, limit=limit + 1,
                                     include_superseded=superseded, before_seq=before,
                                     newest_first=newest_first)
    page, has_more = rows[:limit], len(rows) > limit
    cursor = page[-1].seq if has_more else None
    extra = ({"next_after": None, "next_before": cursor} if newest_first
             else {"next_after": cursor})
    return ok(views.list_object([views.message_object(m) for m in page], has_more, **extra))


@endpoint
async def search_agent_messages(request: Request, scope: Scope) -> Response:
    """Across every conversation of the agent, ranked like the model's `conversation_search`
    (the same `SearchService`: hybrid when embeddings are on); a blank query lists the newest
    messages. `start_date`/`end_date` (inclusive) keep the messages written within them."""
    agent = await load_agent(request, scope)
    query = request.query_params.get("query") or ""
    roles = query_list(request, "roles", SEARCH_ROLES)
    limit = query_int(request, "limit", 20, 1, MAX_PAGE)
    start, end = date_window(request)
    search = scope.state.service.embeddings.search  # hybrid when embeddings are on
    hits = await search.agent_messages(agent.pk, query, roles=roles, limit=limit + 1,
                                       start=start, end=end)
    data = [views.message_object(m, score=score, conversation_id=cid)
            for cid, m, score in hits[:limit]]
    return ok(views.list_object(data, len(hits) > limit))


def date_window(request: Request) -> tuple[float | None, float | None]:
    """`start_date` and `end_date` (as conversation_search names them), checked in order."""
    start = query_date(request, "start_date", end=False)
    end = query_date(request, "end_date", end=True)
    if start is not None and end is not None and start > end:
        raise bad_request("start_date is after end_date", param="start_date",
                          code="invalid_parameter")
    return start, end
