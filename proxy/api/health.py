"""Liveness and readiness probes (LiteLLM's paths, which orchestrators already know)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .state import AppState

READINESS_TIMEOUT_S = 5.0


async def liveliness(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readiness(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(state.store.ping(), READINESS_TIMEOUT_S)
        checks["database"] = "ok"
    except Exception as exc:  # report the kind of failure, never its details
        checks["database"] = f"error: {type(exc).__name__}"
    if checks["database"] == "ok":
        checks["database"] = state.storage.check()  # a full disk (api/storage_full.py)
    try:
        api_key = state.upstream.resolve_key(None)
        await asyncio.wait_for(state.upstream.list_models(api_key=api_key), READINESS_TIMEOUT_S)
        checks["upstream"] = "ok"
    except Exception as exc:
        checks["upstream"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )
