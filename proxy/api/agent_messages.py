"""`POST /v1/agents/{agent}/messages` (and `/messages/stream`): Letta's agents-as-a-service
interface over one stateful turn (docs/agents-as-a-service.md).

The client sends only its new messages; the turn runs exactly as a chat completion's does
(`StatefulService.start`: lock, replay, input, loop, one transaction), on the agent's
conversation `default` unless the body names another, and the answer is the turn's stored
output in Letta's message shapes (core/letta_messages.py) with a `stop_reason` and `usage`.

An `otid` makes a retry idempotent: the first message's `otid` is the turn's idempotency key,
so a retry of a finished turn is answered from the store (the turn's rows read back, nothing
stored twice, no upstream call) and a retry of a failed one continues it.

The stream variant runs the same turn and sends each step's messages as the step finishes
(Letta's step streaming, `stream_tokens: false`): a memory tool's call and result as soon as
the tool has run, the answer at the end. With `stream_tokens: true` the model is streamed too
and its text goes out as it comes, as `assistant_message` chunks carrying the id the message
will have; a text that turns out to stand beside a memory call is then sent whole as the
`reasoning_message` of that same id (the chunks' text was not the answer). Streaming starts once the first step is done, so an
error in it keeps its HTTP status; a later one is an error event, then `stop_reason: error`.
A replay streams the stored messages at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..core.caller import Caller
from ..core.identity import DEFAULT_CONVERSATION, Identity, validate_id
from ..core.letta_messages import (
    TurnFacts,
    assistant_chunk,
    letta_response,
    only_types,
    to_letta,
)
from ..core.loop import TEXT_SEPARATOR, Event, StepStarted, TextDelta, TurnDone
from ..core.types import Message, Turn
from ..errors import MemproxyError, bad_request
from ..obs.logs import annotate
from ..store.base import TurnStore
from ..turn import Replay, TurnRequest, TurnSession
from ..upstream import Route
from . import sse
from .body import check_limits
from .letta_schemas import LettaMessageCreate, LettaMessagesRequest
from .middleware import annotate_turn
from .ratelimit import end_turn, start_turn
from .rest import Scope, endpoint, path_id, read_model
from .storage_full import stream_failure_body

log = logging.getLogger("memproxy.agent_messages")

MAX_TURN_ROWS = 10_000  # a turn's rows read back for a replay: inputs plus two per step


@dataclass(frozen=True)
class TurnAnswer:
    """What a finished turn (run now, or replayed) answers with."""

    letta: dict[str, Any]
    headers: dict[str, str]


@endpoint
async def send_messages(request: Request, scope: Scope) -> Response:
    """JSON, or server-sent events with Letta's `"streaming": true`."""
    body = await read_model(request, scope, LettaMessagesRequest)
    if body.streaming:
        return await _stream(request, scope, body)
    answer = await _run(request, scope, body)
    return Response(sse.dumps(answer.letta), media_type="application/json",
                    headers=answer.headers)


@endpoint
async def send_messages_stream(request: Request, scope: Scope) -> Response:
    body = await read_model(request, scope, LettaMessagesRequest)
    return await _stream(request, scope, body)


async def _stream(request: Request, scope: Scope, body: LettaMessagesRequest) -> Response:
    started = time.perf_counter()
    outcome = await _start(request, scope, body, started, tokens=bool(body.stream_tokens))
    include = body.include_return_message_types
    if isinstance(outcome, Replay):
        answer = await _replayed(scope.state.store, outcome, include, started)
        return _streaming(_whole(answer.letta), answer.headers)
    session = outcome
    events = session.events()
    try:  # the first step runs before the answer starts: its errors keep their status
        first = await anext(events)
    except BaseException:
        await events.aclose()
        _turn_over(session)
        raise
    return _streaming(_live(session, first, events, include), session.headers())


def _streaming(body: AsyncIterator[bytes], headers: dict[str, str]) -> Response:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={**headers, "cache-control": "no-cache"})


async def _whole(letta: dict[str, Any]) -> AsyncIterator[bytes]:
    for message in letta["messages"]:
        yield sse.event(message)
    yield sse.event(letta["stop_reason"])
    yield sse.event(letta["usage"])
    yield sse.DONE


async def _live(session: TurnSession, event: Event, events: AsyncIterator[Event],
                include: list[str] | None) -> AsyncIterator[bytes]:
    """Each step's messages once the step is done: `to_letta` of the output so far is
    prefix-stable (ids by position), so only the new tail is sent and every message has the
    id and date the stored turn (and its replay) gives it. Text deltas (`stream_tokens`) are
    chunks of the message at the next position; the answer they made is not sent again."""
    sent = 0  # Letta messages of the output sent whole (or, the answer, as chunks)
    chunked: set[int] = set()  # positions whose text went out as chunks
    chunks = include is None or "assistant_message" in include
    try:
        while not isinstance(event, TurnDone):
            if isinstance(event, StepStarted) and event.output:
                letta = to_letta(event.output, TurnFacts(session.turn_id, event.created))
                for message in only_types(letta[sent:], include):
                    yield sse.event(message)
                sent = len(letta)
            elif isinstance(event, TextDelta) and chunks:
                text = event.text if sent in chunked else event.text.removeprefix(
                    TEXT_SEPARATOR)  # the loop's separator from an earlier step's text
                if text:
                    chunked.add(sent)
                    yield sse.event(_chunk(session, sent, text))
            event = await anext(events)
        assert session.response is not None
        facts = TurnFacts(session.turn_id, int(session.response["created"]))
        output = [m.data for m in event.messages]
        whole = letta_response(output, facts, usage=session.response.get("usage") or {})
        for position, message in enumerate(whole["messages"][sent:], start=sent):
            if position in chunked and message["message_type"] == "assistant_message":
                continue  # streamed already, chunk by chunk
            if include is None or message["message_type"] in include:
                yield sse.event(message)
        yield sse.event(whole["stop_reason"])
        yield sse.event(whole["usage"])
        session.metrics.overhead.labels("stateful").observe(session.overhead_ms() / 1000)
    except MemproxyError as exc:
        yield sse.event(exc.body)
        yield sse.event(_STOPPED_BY_ERROR)
    except Exception as exc:
        yield sse.event(stream_failure_body(exc, "agent messages stream"))
        yield sse.event(_STOPPED_BY_ERROR)
    finally:
        await events.aclose()
        _turn_over(session)
    yield sse.DONE


_STOPPED_BY_ERROR = {"message_type": "stop_reason", "stop_reason": "error"}


def _chunk(session: TurnSession, position: int, text: str) -> dict[str, Any]:
    facts = TurnFacts(session.turn_id, session.loop.created or int(time.time()))
    return assistant_chunk(facts, position, text)


def _turn_over(session: TurnSession) -> None:
    annotate_turn(session)
    end_turn()


async def _run(request: Request, scope: Scope, body: LettaMessagesRequest) -> TurnAnswer:
    started = time.perf_counter()
    outcome = await _start(request, scope, body, started)
    include = body.include_return_message_types
    if isinstance(outcome, Replay):
        return await _replayed(scope.state.store, outcome, include, started)
    return await _finished(outcome, include)


async def _start(request: Request, scope: Scope, body: LettaMessagesRequest,
                 started: float, *, tokens: bool = False) -> TurnSession | Replay:
    """The turn started (its first upstream call not yet made), or the replay of a finished
    one; `started` is when the request's handling began (for the overhead figures); `tokens`
    streams the model's answers (Letta's `stream_tokens`)."""
    state = scope.state
    agent_id = path_id(request, "agent", "agent_id")
    conversation_id = validate_id(body.conversation_id or DEFAULT_CONVERSATION,
                                  "conversation_id")
    annotate(agent=agent_id, conversation=conversation_id)
    given = _given_messages(body)
    messages = [_openai_message(m) for m in given]
    if body.override_system:
        messages.insert(0, {"role": "system", "content": body.override_system})
    check_limits(messages, state.settings.limits)
    model = body.model or body.override_model or await _agent_model(state.store, scope.tenant, agent_id,
                                              conversation_id)
    configured = state.settings.agent.max_steps
    max_steps = min(body.max_steps or configured, configured)
    otid = next((m.otid for m in given if m.otid), None)
    turn_request = TurnRequest(
        caller=Caller(scope.tenant, scope.caller.admin, scope.caller.key),
        identity=Identity(agent_id=agent_id, conversation_id=conversation_id, source="path"),
        body={"model": model, "messages": messages, "stream": tokens},
        started=started,
        idempotency_key=f"otid:{otid}" if otid else None,
        route=Route.within(state.settings.upstream.request_deadline_s),
        max_steps=max_steps,
    )
    api_key = state.upstream.resolve_key(request.headers.get("authorization"))
    outcome = await start_turn(state.service, turn_request, api_key)  # [limits] slot
    if isinstance(outcome, Replay):
        end_turn()
        annotate(mode="replay")
    return outcome


def _given_messages(body: LettaMessagesRequest) -> list[LettaMessageCreate]:
    """`messages`, or Letta's `input` shorthand as one user message: exactly one of them."""
    if body.messages is not None and body.input is not None:
        raise bad_request("give either 'messages' or 'input', not both", param="input",
                          code="invalid_body")
    if body.input is not None:
        return [LettaMessageCreate(role="user", content=body.input)]
    if body.messages is None:
        raise bad_request("'messages' is required (or 'input')", param="messages",
                          code="invalid_body")
    return body.messages


def _openai_message(message: LettaMessageCreate) -> Message:
    content: Any = message.content
    if isinstance(content, list):
        content = [{"type": "text", "text": part.text} for part in content]
    out: Message = {"role": message.role, "content": content}
    if message.name:
        out["name"] = message.name
    return out


async def _agent_model(store: Any, tenant: str, agent_id: str, conversation_id: str) -> str:
    """The agent's `settings.model`, else the model its conversation's last turn used; a new
    agent has neither, and the request must name one."""
    agent = await store.get_agent(tenant, agent_id)
    if agent is not None:
        configured = agent.settings.get("model")
        if isinstance(configured, str) and configured:
            return configured
        conversation = await store.get_conversation(agent.pk, conversation_id)
        last = await store.last_turn(conversation.pk) if conversation is not None else None
        used = ((last.response if last else None) or {}).get("model")
        if isinstance(used, str) and used:
            return used
    raise bad_request("'model' is required: this agent has no settings.model and no turn yet",
                      param="model", code="model_required")


async def _finished(session: TurnSession, include: list[str] | None) -> TurnAnswer:
    try:
        async for _event in session.events():
            pass
    finally:
        _turn_over(session)
    assert session.done is not None and session.response is not None
    session.metrics.overhead.labels("stateful").observe(session.overhead_ms() / 1000)
    facts = TurnFacts(session.turn_id, int(session.response["created"]))
    letta = letta_response([m.data for m in session.done.messages], facts,
                           usage=session.response.get("usage") or {}, include=include)
    return TurnAnswer(letta, session.headers())


async def _replayed(store: TurnStore, replay: Replay, include: list[str] | None,
                    started: float) -> TurnAnswer:
    output = await turn_output(store, replay.turn)
    response = replay.response
    facts = TurnFacts(replay.turn.turn_id, int(response.get("created") or 0))
    letta = letta_response(output, facts, usage=response.get("usage") or {}, include=include)
    headers = replay.headers(started)
    return TurnAnswer(letta, headers)


async def turn_output(store: TurnStore, turn: Turn) -> list[Message]:
    """A finished turn's output as stored: its rows after its last user message (its input),
    in order. Read from the store, never recomputed, so a replay answers what the turn said."""
    after = max((turn.first_seq or 1) - 1, 0)
    rows = await store.list_messages(turn.conversation_pk, after_seq=after,
                                     limit=MAX_TURN_ROWS, include_superseded=True)
    mine = [row for row in rows if row.turn_id == turn.turn_id]
    last_user = max((i for i, row in enumerate(mine) if row.role == "user"), default=-1)
    return [row.data for row in mine[last_user + 1:]]
