"""Agents: list, create, read, patch settings, delete, and the context report (docs/api.md).

Every route is scoped to the caller's tenant (rest.py). Deleting or changing an agent also
drops the chat service's cached ids/settings of it, so the next turn in this process reads the
agent afresh.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import views
from ..core.identity import DEFAULT_CONVERSATION, validate_id
from ..core.types import Agent, Block
from ..errors import ProxyError, bad_request
from ..portable.rows import checked_blocks
from ..turn.preview import next_request
from ..turn.report import context_report
from .rest import (
    MAX_PAGE,
    Scope,
    endpoint,
    forget,
    load_agent,
    ok,
    query_int,
    read_model,
)
from .schemas import AgentCreate, AgentPatch


async def agent_view(scope: Scope, agent: Agent, *, with_blocks: bool = True
                     ) -> dict[str, Any]:
    """The agent object with its stats (and blocks)."""
    store = scope.state.store
    stats = (await store.agent_stats([agent.pk])).get(agent.pk)
    blocks = await store.get_blocks(agent.pk) if with_blocks else None
    return views.agent_object(agent, stats, blocks)


def _cursor(scope: Scope, after: str | None) -> tuple[str, str] | None:
    """`?after=`: an agent id within one tenant; `TENANT/AGENT_ID` across tenants."""
    if not after:
        return None
    if scope.list_tenant is not None:
        return scope.list_tenant, after
    tenant, slash, agent_id = after.rpartition("/")
    if not slash:
        raise bad_request("after must be TENANT/AGENT_ID when listing every tenant",
                          param="after", code="invalid_parameter")
    return tenant, agent_id


@endpoint
async def list_agents(request: Request, scope: Scope) -> Response:
    limit = query_int(request, "limit", 100, 1, MAX_PAGE)
    cursor = _cursor(scope, request.query_params.get("after"))
    store = scope.state.store
    agents = await store.list_agents_page(scope.list_tenant, after=cursor, limit=limit + 1)
    page, has_more = agents[:limit], len(agents) > limit
    stats = await store.agent_stats([a.pk for a in page])
    next_after = None
    if has_more:
        last = page[-1]
        next_after = last.agent_id if scope.list_tenant is not None else (
            f"{last.tenant}/{last.agent_id}")
    return ok(views.list_object([views.agent_object(a, stats.get(a.pk)) for a in page],
                                has_more, next_after=next_after))


def block_too_long(label: str, length: int, limit: int, param: str = "value") -> ProxyError:
    return bad_request(f"block {label!r} would have {length} characters, over its limit of"
                       f" {limit}", param=param, code="block_too_long")


@endpoint
async def create_agent(request: Request, scope: Scope) -> Response:
    body = await read_model(request, scope, AgentCreate)
    agent_id = validate_id(body.id, "id")
    service = scope.state.service
    blocks = service.default_blocks if body.blocks is None else checked_blocks(
        [Block(b.label, b.value, b.description, b.limit, b.read_only) for b in body.blocks])
    agent = await scope.state.store.create_agent(
        scope.tenant, agent_id, blocks, body.settings,
        max_agents=scope.state.settings.limits.agents_per_tenant)
    if agent is None:
        raise ProxyError(409, f"agent {agent_id!r} already exists", code="conflict",
                         param="id")
    forget(scope, agent_id)
    return ok(await agent_view(scope, agent), 201)


@endpoint
async def get_agent(request: Request, scope: Scope) -> Response:
    return ok(await agent_view(scope, await load_agent(request, scope)))


@endpoint
async def patch_agent(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    body = await read_model(request, scope, AgentPatch)
    settings = await scope.state.store.merge_agent_settings(agent.pk, body.settings)
    if settings is None:  # deleted meanwhile
        raise ProxyError(404, f"no agent {agent.agent_id!r}", code="not_found")
    agent.settings = settings
    forget(scope, agent.agent_id)  # the chat service caches settings (resends_history)
    return ok(await agent_view(scope, agent))


@endpoint
async def delete_agent(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    await scope.state.store.delete_agent(agent.pk)
    forget(scope, agent.agent_id)
    return ok({"object": "agent.deleted", "id": agent.agent_id, "deleted": True})


@endpoint
async def agent_context(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    conversation = request.query_params.get("conversation")
    if conversation is not None:
        validate_id(conversation, "conversation")
    fmt = request.query_params.get("format") or "report"
    if fmt not in ("report", "raw"):
        raise bad_request("format must be report or raw", param="format",
                          code="invalid_parameter")
    state = scope.state
    args = (state.service, agent.tenant, agent.agent_id, conversation,
            request.query_params.get("model"),
            state.upstream.resolve_key(request.headers.get("authorization")))
    message = request.query_params.get("message")
    if fmt == "raw":  # the next turn's own code path, its effects captured (turn/preview.py)
        raw = await next_request(*args, message=message)
        return ok({"object": "context.request", "agent_id": agent.agent_id,
                   "conversation_id": conversation or DEFAULT_CONVERSATION, **raw})
    return ok(await context_report(*args, message=message))
