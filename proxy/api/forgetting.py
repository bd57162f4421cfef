"""Deleting a conversation, forgetting what was said, the audit log and usage (docs/forgetting.md).

Every route is scoped to the caller's tenant (rest.py). `POST .../forget` resolves a query to
rows with the full-text search (every word of the query must be in a row: core/forgetting.py)
and empties them in batches, each batch one transaction; named messages and passages go in the
first. The audit log records who, when, what kind and how many — never the query or the text.
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import Response

from ..core.forgetting import matches_all, query_words
from ..core.identity import validate_id
from ..errors import ProxyError, bad_request
from .forget_schemas import ForgetRequest
from .rest import (
    MAX_PAGE,
    Scope,
    endpoint,
    forget,
    load_agent,
    not_found,
    ok,
    path_id,
    query_int,
    read_model,
)

SEARCH_PAGE = 500  # candidates per round of a query
MAX_CANDIDATES = 50_000  # the widest a round looks when the best candidates all miss a word
MAX_ROUNDS = 200  # bounds one request's work; a repeat forgets the rest


def actor(scope: Scope) -> str:
    """Who acted, for the audit log: the kind of key and a short fingerprint of it (its
    sha256, never the key)."""
    kind = "admin" if scope.caller.admin else "tenant"
    if scope.caller.key is None:
        return kind
    return f"{kind}:{hashlib.sha256(scope.caller.key.encode()).hexdigest()[:12]}"


@endpoint
async def delete_conversation(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    conversation_id = path_id(request, "conversation", "conversation_id")
    removed = await scope.state.store.delete_conversation(
        agent.tenant, agent.agent_id, agent.pk, conversation_id, actor(scope))
    if removed is None:
        raise not_found("conversation", conversation_id)
    forget(scope, agent.agent_id)  # the service's cached conversation pks and contexts
    return ok({"object": "conversation.deleted", "id": conversation_id, "deleted": True,
               "removed": removed.as_dict()})


@endpoint
async def forget_memories(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    body = await read_model(request, scope, ForgetRequest)
    query = (body.query or "").strip()
    if "\x00" in query:
        raise bad_request("query must not contain NUL characters", param="query",
                          code="invalid_parameter")
    for key in body.messages:
        validate_id(key.conversation_id, "conversation_id")
    words = query_words(query)
    if body.query is not None and not words:
        raise bad_request("query must hold at least one word", param="query",
                          code="invalid_parameter")
    if not (words or body.messages or body.passages):
        raise bad_request("give a query, messages or passages to forget", param="query",
                          code="invalid_parameter")
    store, who = scope.state.store, actor(scope)
    total = await store.forget(agent.tenant, agent.agent_id, agent.pk,
                               [(m.conversation_id, m.seq) for m in body.messages],
                               list(dict.fromkeys(body.passages)), actor=who,
                               words=words or None)
    limit = SEARCH_PAGE
    for _ in range(MAX_ROUNDS if words else 0):
        # Candidates match any word: when a whole page of them misses some word, the rows
        # holding all of them may be past it, so the next round looks wider.
        hits = await store.forget_candidates(agent.pk, query, limit)
        keys = [(cid, seq) for cid, seq, text in hits if matches_all(words, text)]
        found = await store.search_passages(agent.pk, query, top_k=limit) if body.archival else []
        passages = [p.pk for p in found if matches_all(words, p.text)]
        full = len(hits) >= limit or len(found) >= limit
        if keys or passages:
            total.add(await store.forget(agent.tenant, agent.agent_id, agent.pk, keys, passages,
                                         actor=who))
        elif not full or limit >= MAX_CANDIDATES:
            break
        else:
            limit = min(limit * 4, MAX_CANDIDATES)
    forget(scope, agent.agent_id)
    return ok({"object": "forget.result", "agent_id": agent.agent_id,
               "removed": total.as_dict()})


@endpoint
async def forget_log(request: Request, scope: Scope) -> Response:
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    agent_id = request.query_params.get("agent_id") or None
    entries = await scope.state.store.audit_log(scope.tenant, agent_id, limit + 1)
    return ok({"object": "list", "data": [e.as_dict() for e in entries[:limit]],
               "has_more": len(entries) > limit})


@endpoint
async def usage(request: Request, scope: Scope) -> Response:
    counts = await scope.state.store.tenant_usage(scope.tenant)
    limits = scope.state.settings.limits
    meter = scope.state.service.storage
    return ok({"object": "usage", "tenant": scope.tenant, "agents": counts.agents,
               "passages": counts.passages, "messages": counts.messages,
               "storage_bytes": meter.measured.get(scope.tenant, 0) if meter.quota_mb else None,
               "limits": {"agents_per_tenant": limits.agents_per_tenant,
                          "passages_per_agent": limits.passages_per_agent,
                          "archival_inserts_per_turn": limits.archival_inserts_per_turn,
                          "storage_mb_per_tenant": limits.storage_mb_per_tenant}})



@endpoint
async def purge(request: Request, scope: Scope) -> Response:
    """Admin only: erase physically what forgetting left behind (store `purge`)."""
    if not scope.caller.admin:
        raise ProxyError(403, "purging needs an admin key", code="admin_required")
    await scope.state.store.purge()
    return ok({"object": "purge", "purged": True})
