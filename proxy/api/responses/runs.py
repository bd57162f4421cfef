"""The two ways a Responses request is answered, behind one event stream.

- `TurnRun`: an agent is named. The translated Chat Completions body is one stateful turn
  (`StatefulService.start`): memory blocks, memory tools run internally, paging, the
  conversation tree placing the expanded history (docs/responses.md).
- `PlainRun`: no agent. The body goes straight to the upstream (`UpstreamClient.chat` or
  `chat_stream`); the chain or conversation is all the state there is.

Both yield the loop's own event types (`TextDelta`, `ToolCallDelta`, `StepStarted`) and end
with one `Finished`, so the HTTP layer turns either into a Response object or Responses events
the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from ...core.answers import Answer, AnswerBuilder, CallPiece, TextPiece, answer_of
from ...core.loop import StepStarted, TextDelta, ToolCallDelta, TurnDone
from ...turn import Replay, TurnSession
from ...upstream import Route, UpstreamClient


@dataclass
class Finished:
    """The answer: the assistant message as Chat Completions shapes it, and its usage."""

    reply: dict[str, Any]
    finish_reason: str
    usage: dict[str, Any]
    model: str


RunEvent = TextDelta | ToolCallDelta | StepStarted | Finished


class Run(Protocol):
    """An answer being produced. Iterate `events()` once."""

    def events(self) -> AsyncIterator[RunEvent]: ...

    def headers_now(self) -> dict[str, str]:
        """The `x-memproxy-*` headers as they stand (the overhead so far, the steps)."""

    def upstream_seconds(self) -> float: ...


def _reply_of(answer: Answer) -> dict[str, Any]:
    reply: dict[str, Any] = {"role": "assistant", "content": answer.content or None}
    if answer.refusal:
        reply["refusal"] = answer.refusal
    if answer.calls:
        reply["tool_calls"] = answer.calls
    return reply


@dataclass
class TurnRun:
    """A stateful turn (or the replay of one that already finished)."""

    outcome: TurnSession | Replay

    def headers_now(self) -> dict[str, str]:
        if isinstance(self.outcome, Replay):
            return self.outcome.headers()
        headers = self.outcome.headers()
        route = self.outcome.request.route
        if route is not None and route.answered_by is not None:
            headers["x-memproxy-upstream"] = str(route.answered_by)
        return headers

    def upstream_seconds(self) -> float:
        return self.outcome.upstream_seconds if isinstance(self.outcome, TurnSession) else 0.0

    async def events(self) -> AsyncIterator[RunEvent]:
        if isinstance(self.outcome, Replay):
            answer = answer_of(self.outcome.response)
            yield Finished(_reply_of(answer), answer.finish_reason or "stop",
                           dict(self.outcome.response.get("usage") or {}), answer.model or "")
            return
        events = self.outcome.events()
        try:
            async for event in events:
                if isinstance(event, TurnDone):
                    yield Finished(event.reply, event.finish_reason, dict(event.usage),
                                   event.model)
                else:
                    yield event
        finally:
            await events.aclose()


@dataclass
class PlainRun:
    """One upstream call, nothing of memproxy's own in the prompt."""

    upstream: UpstreamClient
    body: dict[str, Any]
    api_key: str | None
    route: Route
    _upstream_seconds: float = 0.0

    def headers_now(self) -> dict[str, str]:
        if self.route.answered_by is None:
            return {}
        return {"x-memproxy-upstream": str(self.route.answered_by)}

    def upstream_seconds(self) -> float:
        return self._upstream_seconds

    async def events(self) -> AsyncIterator[RunEvent]:
        started = time.perf_counter()
        if not self.body.get("stream"):
            completion = await self.upstream.chat(self.body, api_key=self.api_key,
                                                  route=self.route)
            self._upstream_seconds = time.perf_counter() - started
            answer = answer_of(completion)
            yield Finished(_reply_of(answer), answer.finish_reason or "stop",
                           dict(answer.usage or {}), answer.model or str(self.body["model"]))
            return
        builder = AnswerBuilder()
        seen: set[int] = set()
        stream = self.upstream.chat_stream(self.body, api_key=self.api_key, route=self.route)
        try:
            async for chunk in stream:
                for piece in builder.feed(chunk):
                    if isinstance(piece, TextPiece):
                        yield TextDelta(piece.text)
                    elif isinstance(piece, CallPiece):
                        call = builder.call(piece.index)
                        if piece.index not in seen:
                            seen.add(piece.index)
                            yield ToolCallDelta(piece.index, call["id"] or None,
                                                call["function"]["name"] or None,
                                                call["function"]["arguments"])
                        elif piece.arguments:
                            yield ToolCallDelta(piece.index, None, None, piece.arguments)
        finally:
            self._upstream_seconds = time.perf_counter() - started
            await stream.aclose()
        answer = builder.finish()
        yield Finished(_reply_of(answer), answer.finish_reason or "stop",
                       dict(answer.usage or {}), answer.model or str(self.body["model"]))
