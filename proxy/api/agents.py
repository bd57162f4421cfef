"""The agents REST API (DESIGN §3.3). Every route is scoped to the caller's tenant."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.identity import validate_id
from ..errors import ProxyError
from ..inspect_context import context_report
from ..upstream import UpstreamError
from .chat import error_response
from .state import AppState


async def agent_context(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    try:
        caller = await state.auth.authenticate(request.headers.get("authorization"))
        agent_id = validate_id(request.path_params["agent"], "agent_id")
        conversation = request.query_params.get("conversation")
        if conversation is not None:
            validate_id(conversation, "conversation_id")
        report = await context_report(
            state.service,
            caller.tenant,
            agent_id,
            conversation,
            request.query_params.get("model"),
            state.upstream.resolve_key(request.headers.get("authorization")),
        )
    except (ProxyError, UpstreamError) as exc:
        return error_response(exc)
    return JSONResponse(report)
