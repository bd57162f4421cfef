"""`POST /v1/responses`: the OpenAI Responses API over a Chat Completions upstream.

The request is translated (pure, `proxy/responses/`) into a Chat Completions body whose
messages are the stored history the request points at (`previous_response_id`'s chain or a
Conversations API conversation's items) followed by its own input. With an agent named it runs
as one stateful turn, memory included; without, as one upstream call (`runs.py`). The answer
comes back as a Response object or as Responses events, and is stored (unless `store: false`)
before the client sees its end, so that the next request can chain on it at once, from any
process sharing the database (docs/responses.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ... import tokens
from ...core.caller import Caller
from ...core.identity import Identity, resolve_identity
from ...core.loop import StepStarted, TextDelta, ToolCallDelta
from ...errors import InternalError, MemproxyError, ProxyError, bad_request
from ...fastjson import dumps
from ...obs.logs import annotate
from ...responses import (
    EventWriter,
    chain_items,
    chat_body,
    conversation_id,
    encode,
    finish_status,
    items_to_messages,
    new_id,
    output_items,
    references,
    resolve_references,
    response_object,
    usage_from_chat,
    validate_request,
)
from ...responses.truncation import drop_oldest
from ...store.response_types import IdConflictError, StoredResponse
from ...turn import TurnRequest
from ...turn.window import reserved_output
from ...upstream import Route
from ..auth import request_caller
from ..body import check_limits, parse_json, read_body
from ..chat import ChatMode, counted
from ..passthrough import forward
from ..ratelimit import begin_turn, end_turn
from ..state import AppState
from .background import BackgroundResponses
from .runs import Finished, PlainRun, Run, TurnRun

log = logging.getLogger("memproxy.responses")


@dataclasses.dataclass
class Prepared:
    """A validated request: what it continues, its own input, and the translated body."""

    body: dict[str, Any]
    tenant: str
    response_id: str
    created_at: int
    input_items: list[dict[str, Any]]
    chat: dict[str, Any]
    previous_response_id: str | None
    conversation_id: str | None
    identity: Identity | None
    caller: Caller
    idempotency_key: str | None

    @property
    def store(self) -> bool:
        return self.body.get("store", True) is not False


def live(chain: list[StoredResponse]) -> list[StoredResponse]:
    """The chain after its newest expired response: expiry is swept hourly, but an expired
    response is gone the moment it expires."""
    now = time.time()
    for i in range(len(chain) - 1, -1, -1):
        if chain[i].expires_at is not None and chain[i].expires_at <= now:
            return chain[i + 1:]
    return chain


async def _history(state: AppState, tenant: str, body: dict[str, Any],
                   conversation_id: str | None) -> list[dict[str, Any]]:
    """The items the request continues: a stored chain, a conversation's items, or none."""
    previous = body.get("previous_response_id")
    if previous is not None and conversation_id is not None:
        raise bad_request(
            "'previous_response_id' cannot be used in conjunction with 'conversation'",
            param="previous_response_id", code="mutually_exclusive_parameters")
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise bad_request("'previous_response_id' must be a response id",
                              param="previous_response_id")
        limit = state.settings.responses.max_chain
        chain = live(await state.store.response_chain(tenant, previous, limit=limit + 1))
        if not chain or chain[-1].response_id != previous:
            raise ProxyError(404, f"Previous response with id '{previous}' not found.",
                             param="previous_response_id", code="previous_response_not_found")
        if len(chain) > limit:
            raise bad_request(
                f"the chain of previous responses is longer than [responses] max_chain"
                f" ({limit}); start a new chain or use a conversation",
                param="previous_response_id", code="chain_too_long")
        return chain_items(chain)
    if conversation_id is not None:
        if await state.store.get_api_conversation(tenant, conversation_id) is None:
            raise ProxyError(404, f"Conversation with id '{conversation_id}' not found.",
                             param="conversation", code="conversation_not_found")
        return await state.store.conversation_items(tenant, conversation_id)
    return []


async def prepare(request: Request, state: AppState, body: dict[str, Any]) -> Prepared:
    caller = request_caller(request)
    input_items = validate_request(body)
    conversation = conversation_id(body)
    identity = resolve_identity(request.path_params, request.headers, body,
                                state.settings.identity)
    if identity is not None and conversation and identity.conversation_id is None:
        # the agent's memproxy conversation is the Conversations API conversation
        identity = dataclasses.replace(identity, conversation_id=conversation)
    history = await _history(state, caller.tenant, body, conversation)
    wanted = references(input_items)
    if wanted:  # earlier items named by id (the Vercel AI SDK resends assistant turns so)
        known = {item["id"]: item for item in history if isinstance(item.get("id"), str)}
        missing = [item_id for item_id in wanted if item_id not in known]
        if missing:
            known.update(await state.store.find_items(caller.tenant, missing))
        input_items = resolve_references(input_items, known)
    chat = chat_body(body, history, input_items)
    check_limits(chat["messages"], state.settings.limits)  # as on chat: [limits] max_messages…
    return Prepared(
        body=body, tenant=caller.tenant, response_id=new_id("resp"),
        created_at=int(time.time()), input_items=input_items, chat=chat,
        previous_response_id=body.get("previous_response_id"),
        conversation_id=conversation, identity=identity, caller=caller,
        idempotency_key=request.headers.get("idempotency-key"))


async def start_run(state: AppState, prepared: Prepared, api_key: str | None) -> Run:
    """Begin the answer: a stateful turn with an agent, one upstream call without."""
    route = Route.within(state.settings.upstream.request_deadline_s)
    if prepared.identity is None:
        if prepared.body.get("truncation") == "auto":
            await _truncate(state, prepared, api_key)
        return PlainRun(state.upstream, prepared.chat, api_key, route)
    annotate(agent=prepared.identity.agent_id,
             conversation=prepared.identity.conversation_id)
    turn_request = TurnRequest(
        caller=prepared.caller, identity=prepared.identity, body=prepared.chat,
        started=time.perf_counter(), idempotency_key=prepared.idempotency_key, route=route,
        # an agent's context is paged (nothing is lost: it stays searchable) unless the
        # client asked, explicitly, for OpenAI's refusal instead
        may_page=prepared.body.get("truncation") != "disabled")
    outcome = await state.service.start(turn_request, api_key)
    return TurnRun(outcome)


async def _truncate(state: AppState, prepared: Prepared, api_key: str | None) -> None:
    """No agent to page to: the oldest history items left out until the prompt fits."""
    chat = prepared.chat
    model = str(chat["model"])
    window = await state.service.catalog.window(model, api_key)
    budget = window - reserved_output(chat, state.settings.memory, window) - tokens.count_tools(
        chat.get("tools"), model)
    chat["messages"] = drop_oldest(
        chat["messages"], budget=budget, keep_last=len(items_to_messages(prepared.input_items)),
        count=lambda message: tokens.count_message(message, model))


def build_response(prepared: Prepared, *, status: str, output: list[dict[str, Any]],
                   usage: dict[str, Any] | None, error: dict[str, Any] | None = None,
                   incomplete: dict[str, Any] | None = None) -> dict[str, Any]:
    return response_object(
        prepared.body, response_id=prepared.response_id, created_at=prepared.created_at,
        status=status, output=output, usage=usage, error=error,
        incomplete_details=incomplete, previous_response_id=prepared.previous_response_id,
        conversation_id=prepared.conversation_id,
        completed_at=time.time() if status == "completed" else None)


def finished_response(prepared: Prepared, finished: Finished,
                      output: list[dict[str, Any]]) -> dict[str, Any]:
    status, incomplete = finish_status(finished.finish_reason)
    return build_response(prepared, status=status, output=output,
                          usage=usage_from_chat(finished.usage), incomplete=incomplete)


def failed_response(prepared: Prepared, exc: BaseException,
                    output: list[dict[str, Any]]) -> dict[str, Any]:
    error = exc if isinstance(exc, MemproxyError) else InternalError()
    # the Response object's error codes are a closed list (ResponseErrorCode)
    code = ("rate_limit_exceeded" if error.status == 429
            else "invalid_prompt" if 400 <= error.status < 500 else "server_error")
    return build_response(prepared, status="failed", output=output, usage=None,
                          error={"code": code, "message": error.message})


async def save(state: AppState, prepared: Prepared, response: dict[str, Any]) -> None:
    """Store the response (unless `store: false`) and append its items to its conversation."""
    if prepared.conversation_id is not None and response["status"] != "failed":
        items = prepared.input_items + list(response["output"])
        try:
            await state.store.add_conversation_items(prepared.tenant, prepared.conversation_id,
                                                     items)
        except IdConflictError:
            # the client resent items the conversation holds, ids included: they are new
            # items of this turn all the same, so they get ids of their own
            prepared.input_items = [fresh_id(item) for item in prepared.input_items]
            await state.store.add_conversation_items(
                prepared.tenant, prepared.conversation_id,
                prepared.input_items + list(response["output"]))
    if prepared.store:
        await state.store.put_response(stored_record(state, prepared, response))


def fresh_id(item: dict[str, Any]) -> dict[str, Any]:
    prefix = {"function_call": "fc", "function_call_output": "fco"}.get(item.get("type"), "msg")
    return {**item, "id": new_id(prefix)}


def stored_record(state: AppState, prepared: Prepared,
                  response: dict[str, Any]) -> StoredResponse:
    ttl = state.settings.responses.ttl_days
    return StoredResponse(
        response_id=prepared.response_id, tenant=prepared.tenant, status=response["status"],
        previous_response_id=prepared.previous_response_id,
        conversation_id=prepared.conversation_id,
        agent_id=prepared.identity.agent_id if prepared.identity else None,
        input_items=prepared.input_items, body=response, created_at=float(prepared.created_at),
        expires_at=prepared.created_at + ttl * 86400 if ttl else None)


async def create_response(request: Request) -> Response:
    # counted like a chat completion; mode: responses, responses_plain or passthrough
    return await counted(request, _create, ChatMode(mode="responses"), "response")


async def _create(request: Request, state: AppState, how: ChatMode) -> Response:
    raw = await read_body(request, state.settings.limits)
    body = parse_json(raw)
    api_key = state.upstream.resolve_key(request.headers.get("authorization"))
    if state.settings.responses.passthrough and resolve_identity(
            request.path_params, request.headers, body, state.settings.identity) is None:
        how.mode = "passthrough"
        return await forward(request, state.upstream, "/responses", raw, api_key)
    prepared = await prepare(request, state, body)
    how.mode = "responses" if prepared.identity else "responses_plain"
    how.stream = bool(body.get("stream"))
    if body.get("background"):
        return await background(state, prepared, api_key)
    begin_turn()  # [limits] concurrent_turns
    try:
        run = await start_run(state, prepared, api_key)
    except BaseException:
        end_turn()
        raise
    if body.get("stream"):
        return await _stream(state, prepared, run)
    try:
        finished = await _finish(run)
    except MemproxyError as exc:
        if prepared.store:
            await save(state, prepared, failed_response(prepared, exc, []))
        raise
    finally:
        end_turn()
    response = finished_response(prepared, finished, _output(finished))
    await save(state, prepared, response)
    return Response(dumps(response), media_type="application/json",
                    headers=run.headers_now())


def _output(finished: Finished) -> list[dict[str, Any]]:
    status = "incomplete" if finish_status(finished.finish_reason)[0] == "incomplete" else (
        "completed")
    return output_items(finished.reply, status=status)


async def _finish(run: Run) -> Finished:
    finished: Finished | None = None
    async for event in run.events():
        if isinstance(event, Finished):
            finished = event
    if finished is None:  # pragma: no cover - every run ends with Finished or raises
        raise InternalError()
    return finished


async def _stream(state: AppState, prepared: Prepared, run: Run) -> Response:
    """Start streaming once the first event is known, so early errors keep their status."""
    events = run.events()
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        end_turn()
        raise
    return StreamingResponse(_stream_body(state, prepared, run, first, events),
                             media_type="text/event-stream",
                             headers={**run.headers_now(), "cache-control": "no-cache"})


async def _stream_body(state: AppState, prepared: Prepared, run: Run, first: Any,
                       events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """The events of each step of the run leave in one write: the first text delta goes out
    with `response.created`, `.in_progress` and the item and part it opens, not five writes
    behind them."""
    writer = EventWriter()
    start = build_response(prepared, status="in_progress", output=[], usage=None)
    opening = writer.created(start) + writer.in_progress(start)
    event = first
    try:
        while True:
            if isinstance(event, TextDelta):
                out = writer.text(event.text)
            elif isinstance(event, ToolCallDelta):
                out = writer.tool_call(event.index, event.id, event.name, event.arguments)
            elif isinstance(event, StepStarted):
                yield b"".join(map(encode, opening)) + b": memproxy step %d\n\n" % (
                    event.step + 1)
                opening = []
                event = await anext(events)
                continue
            else:  # Finished
                out = writer.finish(finished_response(prepared, event, []))
                # stored as streamed: the terminal event's response, item ids included
                await save(state, prepared, out[-1]["response"])
                yield b"".join(map(encode, opening + out))
                break
            if opening or out:
                yield b"".join(map(encode, opening + out))
                opening = []
            event = await anext(events)
    except Exception as exc:
        if not isinstance(exc, MemproxyError):
            log.exception("responses stream failed")
        failed = writer.fail(failed_response(prepared, exc, []))
        try:
            await save(state, prepared, failed[-1]["response"])
        except Exception:
            log.exception("could not store failed response %s", prepared.response_id)
        yield b"".join(map(encode, opening + failed))
    finally:
        await events.aclose()
        end_turn()


async def background(state: AppState, prepared: Prepared, api_key: str | None) -> Response:
    """`background: true`: stored at once as `queued`, answered by a task; poll with GET,
    stop with POST …/cancel."""
    if not prepared.store:
        raise bad_request("background responses require 'store' to be true",
                          param="background")
    if prepared.body.get("stream"):
        raise bad_request("streaming a background response is not supported; poll"
                          " GET /v1/responses/{id} instead", param="stream")
    queued = build_response(prepared, status="queued", output=[], usage=None)
    await save(state, prepared, queued)
    runner: BackgroundResponses = state.background_responses

    async def work() -> dict[str, Any]:
        await state.store.put_response(dataclasses.replace(
            stored_record(state, prepared, queued), status="in_progress",
            body={**queued, "status": "in_progress"}))
        run = await start_run(state, prepared, api_key)
        finished = await _finish(run)
        return finished_response(prepared, finished, _output(finished))

    async def failed(exc: BaseException) -> dict[str, Any]:
        return failed_response(prepared, exc, [])

    async def store_result(response: dict[str, Any]) -> None:
        current = await state.store.get_response(prepared.tenant, prepared.response_id)
        if current is None or current.status == "cancelled":
            return  # deleted or cancelled meanwhile, perhaps through another process
        await save(state, prepared, response)

    runner.start(prepared.tenant, prepared.response_id, work, failed, store_result)
    return Response(dumps(queued), media_type="application/json")
