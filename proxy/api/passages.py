"""Archival memory: list, search, add and delete passages (docs/api.md).

Passages added here are the same rows the model's `archival_memory_insert` writes and
`archival_memory_search` reads.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from .. import views
from ..errors import bad_request
from .rest import (
    MAX_PAGE,
    Scope,
    endpoint,
    load_agent,
    not_found,
    ok,
    query_int,
    query_list,
    read_model,
)
from .schemas import PassageCreate

MAX_OFFSET = 1_000_000


@endpoint
async def list_passages(request: Request, scope: Scope) -> Response:
    """Newest first; with `query`, ranked hits (`score`); `tags` keeps passages having all."""
    agent = await load_agent(request, scope)
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
    tags = query_list(request, "tags")
    query = (request.query_params.get("query") or "").strip()
    store = scope.state.store
    if query:
        search = scope.state.service.embeddings.search  # as archival_memory_search ranks
        found = await search.search_passages(agent.pk, query, tags=tags,
                                             top_k=offset + limit + 1)
        window = found[offset:offset + limit + 1]
        data = [views.passage_object(p, score=p.score or 0.0) for p in window[:limit]]
    else:
        window = await store.list_passages_page(agent.pk, tags=tags, limit=limit + 1,
                                                offset=offset)
        data = [views.passage_object(p) for p in window[:limit]]
    return ok(views.list_object(data, len(window) > limit))


@endpoint
async def create_passage(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    body = await read_model(request, scope, PassageCreate)
    if any(not tag for tag in body.tags):
        raise bad_request("tags must not be empty strings", param="tags", code="invalid_body")
    scope.state.service.storage.check(scope.tenant)
    passage = await scope.state.store.insert_passage(
        agent.pk, body.text, body.tags,
        max_passages=scope.state.settings.limits.passages_per_agent)
    scope.state.service.embeddings.notify(agent.pk)  # embed it in the background, if enabled
    return ok(views.passage_object(passage), 201)


@endpoint
async def delete_passage(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    raw = request.path_params["passage"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise bad_request("the passage id must be a positive integer", param="passage_id",
                          code="invalid_id")
    if not await scope.state.store.delete_passage(agent.pk, int(raw)):
        raise not_found("passage", raw)
    return ok({"object": "passage.deleted", "id": int(raw), "deleted": True})
