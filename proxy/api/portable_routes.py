"""Export and import of a whole agent (docs/api.md, "The agent document").

Export reads the agent in one store snapshot; import validates the whole document first
(memproxy's own, or a Letta Agent File) and writes it in one transaction, so a bad document
stores nothing.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from ..core.identity import validate_id
from ..errors import ProxyError, bad_request
from ..portable.document import export_document, parse_document
from ..store.admin_types import AgentExistsError
from .agents import agent_view
from .rest import Scope, endpoint, forget, load_agent, not_found, ok, query_bool, read_json


@endpoint
async def export_agent(request: Request, scope: Scope) -> Response:
    agent = await load_agent(request, scope)
    dump = await scope.state.store.export_agent(agent.pk)
    if dump is None:  # deleted meanwhile
        raise not_found("agent", agent.agent_id)
    return ok(export_document(dump, time.time()))


@endpoint
async def import_agent(request: Request, scope: Scope) -> Response:
    """`?id=` renames, `?replace=true` overwrites an existing agent of that id."""
    replace = query_bool(request, "replace")
    wanted = request.query_params.get("id")
    if wanted is not None:
        validate_id(wanted, "id")
    document_id, dump = parse_document(await read_json(request, scope), time.time())
    agent_id = wanted or document_id
    if not agent_id:
        raise bad_request("the document names no agent id; pass ?id=", param="id",
                          code="invalid_id")
    validate_id(agent_id, "id")
    limits = scope.state.settings.limits
    scope.state.service.storage.check(scope.tenant)
    try:
        agent = await scope.state.store.import_agent(
            scope.tenant, agent_id, dump, replace=replace, max_agents=limits.agents_per_tenant,
            max_passages=limits.passages_per_agent)
    except AgentExistsError:
        raise ProxyError(409, f"agent {agent_id!r} already exists; pass ?replace=true to"
                         " overwrite it or ?id= to import under another id", code="conflict",
                         param="id") from None
    forget(scope, agent_id)
    scope.state.service.embeddings.notify(agent.pk)  # embed its rows in the background, if on
    return ok(await agent_view(scope, agent), 201)
