"""`POST /v1/chat/completions` and its aliases: pass-through or a stateful turn.

Errors before the response starts are raised, and answered by the app's exception handler
(api/errors.py) as ordinary OpenAI error responses with their status; once a stream has
started, an error becomes one `data: {"error": ...}` event (its `.body`) followed by `[DONE]`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..core.completions import full_usage
from ..core.identity import is_auxiliary, memory_model, resolve_identity
from ..core.loop import StepStarted, TextDelta, ToolCallDelta, TurnDone
from ..errors import InternalError, MemproxyError, ProxyError, bad_request
from ..obs.logs import annotate
from ..turn import Replay, TurnRequest, TurnSession
from ..upstream import Route
from . import sse
from .auth import request_caller
from .body import check_limits, parse_json, read_body
from .middleware import annotate_request, annotate_turn
from .passthrough import forward
from .ratelimit import end_turn, start_turn
from .state import AppState
from .storage_full import stream_failure_body

log = logging.getLogger("memproxy.chat")

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


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
        if message.get("tool_calls") is not None:
            _validate_tool_calls(message["tool_calls"], f"messages[{i}].tool_calls")
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
    for i, tool in enumerate(tools or []):
        # memproxy merges its memory tools with these by function name
        if not isinstance(tool, dict) or not isinstance(tool.get("function", {}), dict):
            raise bad_request(f"tools[{i}] must be an object whose function is an object",
                              param=f"tools[{i}]")
    _validate_forced_function(body)


def _validate_forced_function(body: dict[str, Any]) -> None:
    """A forced function must be one of the request's tools (or legacy functions), as OpenAI
    requires: the turn waits for that call (core/choice.py), which could never come."""
    if body.get("tool_choice") == "required" and not body.get("tools"):
        raise bad_request("tool_choice 'required' needs 'tools'", param="tool_choice")
    for key, listed in (("tool_choice", "tools"), ("function_call", "functions")):
        choice = body.get(key)
        if key == "tool_choice" and isinstance(choice, dict):
            choice = choice.get("function")
        name = choice.get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str):
            continue
        names = set()
        for item in body.get(listed) or []:
            fn = item.get("function") if key == "tool_choice" and isinstance(item, dict) else item
            if isinstance(fn, dict):
                names.add(fn.get("name"))
        if name not in names:
            raise bad_request(
                f"{key} names the function {name!r}, which is not in '{listed}'", param=key)


def _validate_tool_calls(calls: Any, param: str) -> None:
    """Tool calls are hashed, stored and searched: each must be an object whose `function`
    is an object with a string `name` (and whose `id`, when given, is a string). Arguments
    may be any JSON value: some OpenAI-compatible clients send objects instead of strings."""
    if not isinstance(calls, list):
        raise bad_request(f"{param} must be an array", param=param)
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if (not isinstance(fn, dict) or not isinstance(fn.get("name"), str)
                or not isinstance(call.get("id", ""), str)):
            raise bad_request(
                f"{param}[{j}] must be an object with a function that has a string name"
                " (and a string id)",
                param=f"{param}[{j}]",
            )


def _retry_marker(request: Request) -> bool:
    raw = request.headers.get("x-stainless-retry-count", "0")
    try:
        return int(raw) > 0
    except ValueError:
        return False


@dataclass
class ChatMode:
    """How a request was handled, for its access-log line and the requests metric: known
    step by step, so that a request that fails is counted with what was known by then."""

    mode: str = "stateful"  # or passthrough, auxiliary, replay, ephemeral
    stream: bool = False


Handler = Callable[[Request, AppState, ChatMode], Awaitable[Response]]


async def counted(request: Request, handle: Handler, how: ChatMode, what: str) -> Response:
    """Run a model endpoint's handler and count it in `memproxy_requests` (and its access
    log line) with the mode it reached, whatever its outcome; an unexpected error is logged
    and becomes a bare 500."""
    state: AppState = request.app.state.memproxy
    try:
        response = await handle(request, state, how)
    except MemproxyError as exc:
        _count(state, how, exc.status)
        raise
    except Exception as exc:
        error = state.storage.error_for(exc)  # 507 on a full disk, else a bare 500
        if isinstance(error, InternalError):
            log.exception("%s failed", what)
        _count(state, how, error.status)
        raise error from exc
    _count(state, how, response.status_code)
    return response


async def chat_completions(request: Request) -> Response:
    return await counted(request, _handle, ChatMode(), "chat completion")


def _count(state: AppState, how: ChatMode, status: int) -> None:
    annotate(mode=how.mode, stream=how.stream)
    state.service.metrics.requests.labels(how.mode, str(how.stream).lower(), str(status)).inc()


async def _handle(request: Request, state: AppState, how: ChatMode) -> Response:
    started = time.perf_counter()
    caller = request_caller(request)
    raw = await read_body(request, state.settings.limits)
    api_key = state.upstream.resolve_key(request.headers.get("authorization"))
    body: dict[str, Any] | None = None
    if state.settings.ab.expose_raw_models:
        body, raw = _memory_alias(raw, state.settings.ab.memory_suffix)
        if body is None:  # A/B mode, a raw model: no memory, even when an agent is named
            return await _passthrough(request, state, raw, api_key, how)
    if body is None and state.settings.identity.agent_from_user:
        body = parse_json(raw)  # its `user` may name the agent
    # else path and headers only, so that a pass-through never has to parse the body
    identity = resolve_identity(request.path_params, request.headers, body or {},
                                state.settings.identity)
    if identity is None:
        return await _passthrough(request, state, raw, api_key, how)
    body = parse_json(raw) if body is None else body
    validate_chat_body(body)
    annotate(agent=identity.agent_id, conversation=identity.conversation_id)
    annotate_request(request, body, state.settings.logging.include_content)
    check_limits(body["messages"], state.settings.limits)
    how.stream = bool(body.get("stream"))
    if is_auxiliary(body["messages"], state.auxiliary_patterns, state.auxiliary_system_patterns):
        return await _passthrough(request, state, raw, api_key, how, mode="auxiliary")
    if identity.ephemeral:
        how.mode = "ephemeral"  # a temporary chat (turn/ephemeral.py)
    turn_request = TurnRequest(
        caller=caller,
        identity=identity,
        body=body,
        started=started,
        idempotency_key=request.headers.get("idempotency-key"),
        retry=_retry_marker(request),
        route=Route.within(state.settings.upstream.request_deadline_s),
    )
    outcome = await start_turn(state.service, turn_request, api_key)  # [limits] slot
    if isinstance(outcome, Replay):
        end_turn()
        how.mode = "replay"
        return _replay(outcome, turn_request, started)
    if turn_request.stream:
        return await _stream(outcome, turn_request)
    return await _complete(outcome, request, state)


def _memory_alias(raw: bytes, suffix: str) -> tuple[dict[str, Any] | None, bytes]:
    """A/B mode (docs/ab.md): for `NAME<suffix>`, the body with the plain NAME and its new
    encoding (so neither a turn nor a pass-through sends the suffix upstream); for any other
    model, or a body that is not a JSON object, `(None, raw)`: forwarded raw as it came."""
    try:
        body = parse_json(raw)
    except ProxyError:
        return None, raw
    model = memory_model(body.get("model"), suffix)
    if model is None:
        return None, raw
    body["model"] = model
    return body, sse.dumps(body)


async def _passthrough(
    request: Request, state: AppState, raw: bytes, api_key: str | None, how: ChatMode,
    mode: str = "passthrough",
) -> Response:
    route = Route.within(state.settings.upstream.request_deadline_s)
    response = await forward(request, state.upstream, "/chat/completions", raw, api_key, route)
    how.mode = mode  # once forwarded: a request failing before counts under the default mode
    return response


def _upstream_header(session: TurnSession) -> dict[str, str]:
    """`x-memproxy-upstream`: which upstream answered (0 = primary, 1.. = fallbacks)."""
    route = session.request.route
    if route is None or route.answered_by is None:
        return {}
    return {"x-memproxy-upstream": str(route.answered_by)}


def _replay(replay: Replay, turn_request: TurnRequest, started: float) -> Response:
    headers = replay.headers(started)
    if turn_request.stream:
        chunks = sse.replay_chunks(replay.response, turn_request.include_usage)
        return StreamingResponse(_iterate(chunks), media_type="text/event-stream",
                                 headers=headers)
    return Response(sse.dumps(replay.response), media_type="application/json", headers=headers)


async def _iterate(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _complete(session: TurnSession, request: Request, state: AppState) -> Response:
    try:
        async for _event in session.events():
            pass
    finally:
        _turn_finished(session)
    assert session.response is not None
    if await request.is_disconnected():
        # The client gave up while the turn went on (its own timeout): the answer is stored
        # but never reached it, so the same request sent again soon is that request retried.
        state.service.undelivered.add(session)
    session.metrics.overhead.labels("stateful").observe(session.overhead_ms() / 1000)
    return Response(
        sse.dumps(session.response), media_type="application/json",
        headers={**session.headers(), **_upstream_header(session)},
    )


def _turn_finished(session: TurnSession) -> None:
    """The turn is over (answered or failed): log its fields, free its concurrency slot."""
    annotate_turn(session)
    end_turn()


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
    headers = {**session.headers(), **_upstream_header(session)}
    return StreamingResponse(
        _stream_body(first, events, writer, turn_request.include_usage, session),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
    )


def _call_delta(event: ToolCallDelta, legacy: bool) -> dict[str, Any]:
    """A client tool-call delta as a chunk's delta (legacy `function_call` for a client that
    sent `functions`: its first call only, the legacy API has one)."""
    function: dict[str, Any] = {"arguments": event.arguments}
    if event.name is not None:
        function["name"] = event.name
    if legacy:
        return {"function_call": function} if event.index == 0 else {}
    call: dict[str, Any] = {"index": event.index}
    if event.id is not None:
        call["id"] = event.id
        call["type"] = "function"
    call["function"] = function
    return {"tool_calls": [call]}


async def _stream_body(first, events, writer: sse.ChunkWriter, include_usage: bool,
                       session: TurnSession):
    yield writer.chunk({"role": "assistant", "content": ""})
    legacy = session.loop.legacy  # the client sent `functions`: calls go as function_call
    event = first
    try:
        while True:
            if isinstance(event, TextDelta):
                delta: dict[str, Any] = dict(event.fields or {})
                if event.text or not delta:
                    delta["content"] = event.text
                yield writer.chunk(delta, logprobs=event.logprobs)
            elif isinstance(event, ToolCallDelta):
                yield writer.chunk(_call_delta(event, legacy))
            elif isinstance(event, StepStarted):
                yield sse.comment(f"memproxy step {event.step + 1}")
            elif isinstance(event, TurnDone):
                writer.fingerprint = event.system_fingerprint
                writer.envelope = event.envelope
                yield writer.chunk({}, event.finish_reason)
                if include_usage:
                    yield writer.usage(full_usage(event.usage))
                break
            event = await anext(events)
    except MemproxyError as exc:
        yield sse.event(exc.body)
    except Exception as exc:
        yield sse.event(stream_failure_body(exc, "stream"))
    finally:
        await events.aclose()
        _turn_finished(session)
        session.metrics.overhead.labels("stateful_stream").observe(
            session.overhead_ms() / 1000)
    yield sse.DONE
