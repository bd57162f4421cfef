"""The Starlette application: routes, and a lifespan that owns the store and upstream client."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import tokens
from .api.auth import Authenticator
from .api.chat import chat_completions
from .api.connections import STATE_KEY, policy_from
from .api.errors import EXCEPTION_HANDLERS
from .api.health import liveliness, readiness
from .api.middleware import InFlight, build_middleware, tag_upstream_requests
from .api.openai_routes import completions, embeddings, list_models
from .api.responses.expiry import expire_responses_every
from .api.responses.routes import responses_routes
from .api.routes import agent_routes
from .api.state import AppState
from .config import Settings
from .obs.gc_tuning import tune_gc
from .obs.logs import cap_content_loggers
from .obs.metrics import Metrics
from .store import open_store
from .turn import StatefulService
from .turn.retention import Retention
from .ui import ui_routes
from .upstream import UpstreamClient
from .upstream.http11.transport import lean_transport

log = logging.getLogger("memproxy")
SHUTDOWN_UNWIND_S = 5.0

CHAT_PATHS = [
    "/v1/chat/completions",
    "/chat/completions",
    "/agents/{agent}/v1/chat/completions",
    "/agents/{agent}/conversations/{conversation}/v1/chat/completions",
]
# The other paths of one OpenAI base URL, at each base memproxy serves (`/v1`, the bare root,
# an agent's, an agent conversation's): a client configured with an agent's base URL lists
# models, embeds and completes there too. No memory on these (docs/api.md).
BASES = ["/v1", "", "/agents/{agent}/v1", "/agents/{agent}/conversations/{conversation}/v1"]


async def metrics_endpoint(request: Request) -> Response:
    state = request.app.state.memproxy
    metrics = state.service.metrics
    try:
        metrics.set_tenant_usage(await state.store.usage_by_tenant())
    except Exception:  # the store down must not take the other series with it
        log.exception("metrics: could not read usage per tenant")
    return Response(metrics.render(), media_type=metrics.content_type)


def create_app(settings: Settings) -> Starlette:
    inflight = InFlight()  # requests being handled, for the shutdown below

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        cap_content_loggers(settings)  # no SQL arguments or headers at DEBUG (obs/logs.py)
        store = open_store(settings.database.url,
                           sqlite_synchronous=settings.database.sqlite_synchronous,
                           postgres_input_commit=settings.database.postgres_input_commit)
        await store.open()
        upstream = UpstreamClient(
            settings.upstream,
            transport=lean_transport() if settings.upstream.lean_transport else None,
            max_response_bytes=settings.limits.max_upstream_response_bytes)
        tag_upstream_requests(upstream)  # X-Request-Id on every upstream call
        auth = Authenticator(settings.auth, store)
        await auth.refresh()
        tokens.warm_up()
        service = StatefulService(settings, store, upstream, Metrics())
        await service.embeddings.start()  # hybrid search + background embedding, if enabled
        await service.summaries.start()  # summaries of paged-out messages (docs/paging.md)
        await service.storage.start()  # [limits] storage_mb_per_tenant, if set
        app.state.memproxy = state = AppState(settings, store, upstream, auth, service)
        expiry = expire_responses_every(store, settings.responses.ttl_days)
        retention = Retention(store, settings.retention)  # docs/forgetting.md
        retention.start()
        tune_gc()  # after start-up: see gc_tuning.py
        if upstream.resolve_key(None) is None and not settings.upstream.forward_client_key:
            log.warning(
                "no upstream API key configured and forward_client_key is off: upstream"
                " requests will be sent without credentials"
            )
        try:
            # the lifespan state is uvicorn's `app_state`: the HTTP protocol reads its
            # head/body deadlines there (api/connections.py)
            yield {STATE_KEY: policy_from(settings.server, service.metrics.connections_dropped)}
        finally:
            # requests cancelled past [server] shutdown_timeout_s still mark their turns and
            # release their leases: let them unwind before the store closes
            await inflight.wait_idle(SHUTDOWN_UNWIND_S)
            await state.background_responses.aclose()
            await expiry.aclose()
            await retention.aclose()
            await service.storage.aclose()
            await service.catalog.flush(force=True)
            await service.extractor.drain()  # fact extractions still running (docs/memory.md)
            await service.summaries.aclose()  # a summary still running stays queued
            await service.embeddings.aclose()
            await upstream.aclose()
            await store.close()

    routes = [Route(path, chat_completions, methods=["POST"]) for path in CHAT_PATHS]
    routes += [
        route
        for base in BASES
        for route in (Route(f"{base}/models", list_models, methods=["GET"]),
                      Route(f"{base}/embeddings", embeddings, methods=["POST"]),
                      Route(f"{base}/completions", completions, methods=["POST"]))
    ]
    routes += [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/health/liveliness", liveliness, methods=["GET"]),
        Route("/health/readiness", readiness, methods=["GET"]),
    ]
    routes += responses_routes()  # the Responses and Conversations APIs (docs/responses.md)
    routes += agent_routes()  # the agents REST API and /openapi.json (docs/api.md)
    routes += ui_routes()  # the web inspector (/ui): static files, no data
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,  # MemproxyError → its OpenAI-shaped response
        middleware=build_middleware(settings, inflight),  # request ids, logs, CORS, limits
    )
