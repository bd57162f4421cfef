"""`POST /v1/chat/completions` and its aliases: pass-through or a stateful turn.

Errors before the response starts are ordinary OpenAI error responses with their status; once a
stream has started, an error becomes one `data: {"error": ...}` event followed by `[DONE]`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..core.identity import Identity, is_auxiliary, resolve_identity
from ..core.loop import StepStarted, TextDelta, ToolCallDelta, TurnDone
from ..errors import ProxyError, bad_request, internal_error
from ..turns import Replay, TurnRequest, TurnSession
from ..upstream import UpstreamError
from . import sse
from .body import check_limits, parse_json, read_body
from .passthrough import forward
from .state import AppState

log = logging.getLogger("memproxy.chat")

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def error_response(exc: ProxyError | UpstreamError) -> JSONResponse:
    if isinstance(exc, UpstreamError):
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "retry-after"}
        return JSONResponse(exc.body, status_code=exc.status, headers=headers)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def validate_chat_body(body: dict[str, Any]) -> None:
    """The checks a stateful turn needs; anything else is left to the upstream to judge."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad_request(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if role not in _ROLES:
            raise bad_request(
                f"messages[{i}].role must be one of {sorted(_ROLES)}, got {role!r}",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise bad_request(
                f"messages[{i}].content must be a string or an array of content parts",
                param=f"messages[{i}].content",
            )
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise bad_request(
                f"messages[{i}].tool_call_id is required for tool messages",
                param=f"messages[{i}].tool_call_id",
            )
    if body.get("n") not in (None, 1):
        raise bad_request(
            "n > 1 is not supported with memory; send X-Memory: off for several choices",
            param="n",
        )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise bad_request("'stream' must be a boolean", param="stream")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad_request("'tools' must be an array", param="tools")


def _retry_marker(request: Request) -> bool:
    raw = request.headers.get("x-stainless-retry-count", "0")
    try:
        return int(raw) > 0
    except ValueError:
        return False


async def chat_completions(request: Request) -> Response:
    state: AppState = request.app.state.memproxy
    response, mode, stream = await _handle(request, state)
    state.service.metrics.requests.labels(mode, str(stream).lower(),
                                          str(response.status_code)).inc()
    return response


async def _handle(request: Request, state: AppState) -> tuple[Response, str, bool]:
    started = time.perf_counter()
    mode, stream = "stateful", False
    try:
        caller = await state.auth.authenticate(request.headers.get("authorization"))
        raw = await read_body(request, state.settings.limits)
        api_key = state.upstream.resolve_key(request.headers.get("authorization"))
        identity = _identity_without_body(request, state)
        if identity is None and not state.settings.identity.agent_from_user:
            if not state.settings.identity.require_agent:
                return await _passthrough(request, state, raw, api_key), "passthrough", False
        body = parse_json(raw)
        if identity is None:
            identity = resolve_identity(
                request.path_params, request.headers, body, state.settings.identity
            )
        if identity is None:
            return await _passthrough(request, state, raw, api_key), "passthrough", False
        validate_chat_body(body)
        check_limits(body["messages"], state.settings.limits)
        stream = bool(body.get("stream"))
        if is_auxiliary(body["messages"], state.auxiliary_patterns):
            return await _passthrough(request, state, raw, api_key), "auxiliary", stream
        turn_request = TurnRequest(
            caller=caller,
            identity=identity,
            body=body,
            started=started,
            idempotency_key=request.headers.get("idempotency-key"),
            retry=_retry_marker(request),
        )
        outcome = await state.service.start(turn_request, api_key)
        if isinstance(outcome, Replay):
            return _replay(outcome, turn_request, started), "replay", stream
        if turn_request.stream:
            return await _stream(outcome, turn_request), mode, stream
        return await _complete(outcome), mode, stream
    except (ProxyError, UpstreamError) as exc:
        return error_response(exc), mode, stream
    except Exception:
        log.exception("chat completion failed")
        return error_response(internal_error()), mode, stream


def _identity_without_body(request: Request, state: AppState) -> Identity | None:
    """Resolve from path and headers only, so pass-through never has to parse the body."""
    return resolve_identity(request.path_params, request.headers, {}, state.settings.identity)


async def _passthrough(
    request: Request, state: AppState, raw: bytes, api_key: str | None
) -> Response:
    return await forward(request, state.upstream, "/chat/completions", raw, api_key)


def _replay(replay: Replay, turn_request: TurnRequest, started: float) -> Response:
    headers = {
        "x-memproxy-agent-id": replay.agent_id,
        "x-memproxy-conversation-id": replay.conversation_id,
        "x-memproxy-turn-id": replay.turn.turn_id,
        "x-memproxy-steps": "0",
        "x-memproxy-replayed": "true",
        "x-memproxy-overhead-ms": f"{(time.perf_counter() - started) * 1000:.2f}",
    }
    if turn_request.stream:
        chunks = sse.replay_chunks(replay.response, turn_request.include_usage)
        return StreamingResponse(_iterate(chunks), media_type="text/event-stream",
                                 headers=headers)
    return Response(sse.dumps(replay.response), media_type="application/json", headers=headers)


async def _iterate(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _complete(session: TurnSession) -> Response:
    async for _event in session.events():
        pass
    assert session.response is not None
    session.service.metrics.overhead.labels("stateful").observe(session.overhead_ms() / 1000)
    return Response(
        sse.dumps(session.response), media_type="application/json", headers=session.headers()
    )


async def _stream(session: TurnSession, turn_request: TurnRequest) -> Response:
    """Start streaming once the first event is known, so early errors keep their status."""
    events = session.events()
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    writer = sse.ChunkWriter(
        f"chatcmpl-{session.turn_id}", int(time.time()), str(turn_request.body.get("model", ""))
    )
    headers = session.headers()
    return StreamingResponse(
        _stream_body(first, events, writer, turn_request.include_usage, session),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
    )


async def _stream_body(first, events, writer: sse.ChunkWriter, include_usage: bool,
                       session: TurnSession):
    yield writer.chunk({"role": "assistant", "content": ""})
    event = first
    try:
        while True:
            if isinstance(event, TextDelta):
                yield writer.chunk({"content": event.text})
            elif isinstance(event, ToolCallDelta):
                call: dict[str, Any] = {"index": event.index}
                if event.id is not None:
                    call["id"] = event.id
                    call["type"] = "function"
                function: dict[str, Any] = {"arguments": event.arguments}
                if event.name is not None:
                    function["name"] = event.name
                call["function"] = function
                yield writer.chunk({"tool_calls": [call]})
            elif isinstance(event, StepStarted):
                yield sse.comment(f"memproxy step {event.step + 1}")
            elif isinstance(event, TurnDone):
                writer.fingerprint = event.system_fingerprint
                yield writer.chunk({}, event.finish_reason)
                if include_usage:
                    yield writer.usage(sse._full_usage(event.usage))
                break
            event = await anext(events)
    except (ProxyError, UpstreamError) as exc:
        body = exc.body() if isinstance(exc, ProxyError) else exc.body
        yield sse.event(body)
    except Exception:
        log.exception("stream failed")
        yield sse.event(internal_error().body())
    finally:
        await events.aclose()
        session.service.metrics.overhead.labels("stateful_stream").observe(
            session.overhead_ms() / 1000)
    yield sse.DONE
