"""What every agents-REST handler shares: the caller's tenant scope, the agent lookup, body and
query parsing, and OpenAI-shaped errors (docs/api.md, Conventions).

Tenant scoping: a tenant key sees only its tenant, and anything of another tenant is a 404
(never 403, so ids do not leak). An admin key, or any caller on an open server, may name the
tenant with `?tenant=` (default `default`); lists then show every tenant unless `?tenant=`
narrows them. A tenant key's `?tenant=` is ignored.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..core.caller import Caller
from ..core.dates import parse_date
from ..core.identity import validate_id
from ..core.types import Agent, Conversation
from ..errors import InternalError, MemproxyError, ProxyError, bad_request, validation_error
from .auth import OPEN_TENANT, request_caller
from .body import parse_json, read_body
from .state import AppState

log = logging.getLogger("memproxy.api")

M = TypeVar("M", bound=BaseModel)
MAX_PAGE = 1000
MAX_TENANT_LENGTH = 200


def not_found(what: str, value: object, param: str | None = None) -> ProxyError:
    """A 404 naming what the caller asked for (only ever their own words back)."""
    shown = str(value)[:60]
    return ProxyError(404, f"no {what} {shown!r}", code="not_found", param=param)


@dataclass(frozen=True)
class Scope:
    """Who is asking and which tenant they act in."""

    state: AppState
    caller: Caller
    tenant: str  # the tenant an agent is looked up or created in
    list_tenant: str | None  # the tenant lists show; None = every tenant (admins only)


def check_query(request: Request) -> None:
    """No query parameter may hold a NUL character: Postgres text cannot store or compare one,
    and no id, tenant, model or search needs it (both backends refuse it alike)."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise bad_request(f"{name[:40]!r} must not contain NUL characters", param=name[:40],
                              code="invalid_parameter")


async def scope(request: Request) -> Scope:
    state: AppState = request.app.state.memproxy
    caller = request_caller(request)
    check_query(request)
    if not caller.admin:
        return Scope(state, caller, caller.tenant, caller.tenant)
    named = request.query_params.get("tenant")
    if named is not None and (not named or len(named) > MAX_TENANT_LENGTH):
        raise bad_request(f"tenant must be 1-{MAX_TENANT_LENGTH} characters", param="tenant",
                          code="invalid_parameter")
    return Scope(state, caller, named or OPEN_TENANT, named)


def endpoint(fn: Callable[[Request, Scope], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint from `fn(request, scope)`: the caller's scope first; errors are
    raised for the app's exception handler, unexpected ones logged and raised as a bare 500."""

    @functools.wraps(fn)
    async def handle(request: Request) -> Response:
        try:
            return await fn(request, await scope(request))
        except MemproxyError:
            raise
        except Exception as exc:
            error = request.app.state.memproxy.storage.error_for(exc)  # 507 on a full disk
            if isinstance(error, InternalError):
                log.exception("agents API: %s failed", fn.__name__)
            raise error from exc

    return handle


def path_id(request: Request, name: str, what: str) -> str:
    return validate_id(request.path_params[name], what)


async def load_agent(request: Request, scope: Scope) -> Agent:
    """The agent of the path in the caller's tenant, or a 404."""
    agent_id = path_id(request, "agent", "agent_id")
    agent = await scope.state.store.get_agent(scope.tenant, agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    return agent


async def load_conversation(request: Request, scope: Scope, agent: Agent) -> Conversation:
    conversation_id = path_id(request, "conversation", "conversation_id")
    conversation = await scope.state.store.get_conversation(agent.pk, conversation_id)
    if conversation is None:
        raise not_found("conversation", conversation_id)
    return conversation


async def read_json(request: Request, scope: Scope) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` (e.g. an undo of the newest)."""
    raw = await read_body(request, scope.state.settings.limits)
    return parse_json(raw) if raw.strip() else {}


async def read_model(request: Request, scope: Scope, model: type[M]) -> M:
    body = await read_json(request, scope)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer", param=name,
                          code="invalid_parameter") from None
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low} and {high}", param=name,
                          code="invalid_parameter")
    return value


def query_date(request: Request, name: str, *, end: bool) -> float | None:
    """An ISO date or date-time, a month, a year or epoch seconds (core/dates.py), or None
    when absent; an end date includes the whole day, month or year it names."""
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return parse_date(raw, end=end)
    except ValueError as exc:
        raise bad_request(f"{name}: {exc}", param=name, code="invalid_parameter") from None


def query_bool(request: Request, name: str) -> bool:
    raw = (request.query_params.get(name) or "false").lower()
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise bad_request(f"{name} must be true or false", param=name, code="invalid_parameter")


def query_list(request: Request, name: str, allowed: frozenset[str] | None = None
               ) -> list[str] | None:
    """A comma-separated list (`?tags=a,b`), or None when absent or empty."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items):
        raise bad_request(f"{name} has an empty item", param=name, code="invalid_parameter")
    if allowed is not None and not set(items) <= allowed:
        raise bad_request(f"{name} may only contain {', '.join(sorted(allowed))}", param=name,
                          code="invalid_parameter")
    return items


def ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def forget(scope: Scope, agent_id: str) -> None:
    """Drop the service's cached ids of an agent that was deleted or replaced."""
    scope.state.service.forget_agent(scope.tenant, agent_id)
