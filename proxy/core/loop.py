"""The agent loop: call the model, run memory tools, repeat until it answers
(docs/design.md §2, §3.5).

One loop serves streaming and non-streaming clients. It is an async generator of events: text
and client-tool-call deltas (forwarded live to streaming clients) and a final `TurnDone` with the
messages to store, the client-visible reply and the summed usage.

Rules:
- plain text (no tool calls) ends the turn; so does any call of a tool the *client* supplied,
  which is returned to the client; memory tool calls are executed and the loop continues;
- a call of a tool nobody offered (a made-up name) is answered with an error tool result, like
  a memory tool call with bad arguments, so the model can correct itself (docs/resilience.md);
- the client's `tool_choice` applies to the client's tools (core/choice.py): without a
  requirement the last allowed step is sent with `tool_choice: "none"` so the model must answer
  in text (a model that still calls memory tools there gets its calls dropped, and when nothing
  else is left the reply is `STEPS_EXHAUSTED`); with `required` or a forced function the turn
  ends only with a call of the client's tool, else `tool_choice_not_satisfied`;
- an empty step (no text, no tool call, no refusal; not cut by `length` or `content_filter`)
  is sent once more; empty again, the turn ends with the text of earlier steps or, when there
  is none, with 502 `empty_response`;
- the turn's `Route` carries its deadline into every upstream call; it is also checked before
  each step and bounds the context guard;
- only the final step is the answer (issue #17): text the model writes beside memory tool
  calls is an internal step, stored as such, never part of the reply. A streaming client gets
  text live (low time to first token), so side text it already received cannot be unsent; with
  `response_format` (JSON that must parse) each step's text is held until the step is known to
  be final (docs/memory.md "What the client receives");
- everything else the upstream put on the final step passes through: the message's other
  fields, the choice's `logprobs`, top-level fields such as `service_tier`; `usage` is the sum
  of every step's, detail objects included.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from ..errors import MemproxyError
from .answers import Answer, AnswerBuilder, FieldsPiece, TextPiece, answer_of
from .choice import ToolChoice, legacy_reply, legacy_to_tools, not_satisfied
from .loop_events import (
    ContextGuard,
    Deadline,
    Event,
    NoDeadline,
    StepStarted,
    TextDelta,
    ToolCallDelta,
    TurnDone,
    Upstream,
    add_usage,
    empty_response,
)
from .messages import visible_hash
from .tools import (
    MEMORY_TOOL_NAMES,
    MemoryState,
    ToolContext,
    execute_memory_tool,
    memory_tools_for,
    unknown_tool_result,
)
from .types import Message, NewMessage

__all__ = [
    "STEPS_EXHAUSTED", "TEXT_SEPARATOR", "ContextGuard", "Deadline", "Event", "NoDeadline",
    "StepStarted", "TextDelta", "ToolCallDelta", "TurnDone", "TurnLoop", "Upstream",
    "add_usage", "empty_response", "visible_projection",
]

TEXT_SEPARATOR = "\n\n"
STEPS_EXHAUSTED = (
    "I could not finish this within the number of steps I am allowed. Please ask again,"
    " perhaps in smaller parts."
)


def _json_mode(body: dict[str, Any]) -> bool:
    """The client asked for JSON (`response_format` other than text): its content must be
    exactly the final step's, so a streamed step's text is held until the step is final."""
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") not in (None, "text")


def visible_projection(message: Message, client_names: frozenset[str]) -> Message:
    """The assistant message as the client sees it: only calls of the client's own tools."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    shown = [c for c in calls if (c.get("function") or {}).get("name") in client_names]
    projected = {k: v for k, v in message.items() if k != "tool_calls"}
    if shown:
        projected["tool_calls"] = shown
    return projected


class TurnLoop:
    """Runs one turn. Construct, then iterate `run()`; the last event is `TurnDone`."""

    def __init__(
        self,
        *,
        upstream: Upstream,
        api_key: str | None,
        body: dict[str, Any],
        prompt: list[Message],
        memory: MemoryState,
        tool_context: ToolContext,
        max_steps: int,
        stream: bool,
        guard: ContextGuard | None = None,
        route: Deadline | None = None,
        read_only_memory: bool = False,  # offer only the memory searches (a temporary chat)
    ) -> None:
        body, self.legacy = legacy_to_tools(body)
        self.upstream = upstream
        self.api_key = api_key
        self.base_body = body
        self.base = list(prompt)  # system, summary and stored context: may shrink
        self.extra: list[Message] = []  # this turn's memory steps, appended as they happen
        self.guard = guard
        self.memory = memory
        self.tool_context = tool_context
        self.max_steps = max(1, max_steps)
        self.stream = stream
        # A client tool that happens to share a memory tool's name stays the client's.
        self.tools = memory_tools_for(body.get("tools") or [], read_only=read_only_memory)
        names = [t["function"]["name"] for t in self.tools if t.get("function")]
        self.client_names = frozenset(
            name for t in body.get("tools") or [] if isinstance(t, dict)
            if isinstance(name := (t.get("function") or {}).get("name"), str)
        )
        self.memory_names = frozenset((MEMORY_TOOL_NAMES & set(names)) - self.client_names)
        self.tool_names = names  # offered, in order: named in the error for an unknown tool
        self.choice = ToolChoice.of(body.get("tool_choice"))
        self.hold_text = stream and _json_mode(body)
        self.route = route  # handed to the upstream, which records who answered on it
        self.deadline: Deadline = route if route is not None else NoDeadline()
        self.upstream_seconds = 0.0
        self._answer = Answer()  # the latest upstream call's answer
        self._held: list[TextDelta] = []  # a step's text not yet known to be the answer
        self._streamed = False  # some text reached the streaming client
        self.first_token_upstream_seconds: float | None = None
        # The turn's `created` (every Letta message's date) as soon as it is known: the first
        # streamed chunk's, else the first answer's, else the clock's then; TurnDone repeats it.
        self.created: int | None = None

    @property
    def prompt(self) -> list[Message]:
        return self.base + self.extra

    def _request(self, step: int) -> dict[str, Any]:
        body = dict(self.base_body)
        body["messages"] = self.prompt
        tools, choice = self.choice.step(self.tools, self.client_names,
                                         last=step == self.max_steps - 1)
        body["tools"] = tools
        if choice is None:
            body.pop("tool_choice", None)
        else:
            body["tool_choice"] = choice
        body["stream"] = self.stream
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream_options", None)
        return body

    async def _call(self, body: dict[str, Any]) -> Answer:
        start = time.perf_counter()
        try:
            response = await self.upstream.chat(body, api_key=self.api_key, route=self.route)
        finally:
            self.upstream_seconds += time.perf_counter() - start
        return answer_of(response)

    async def run(self) -> AsyncIterator[Event]:
        usage: dict[str, Any] = {}
        stored: list[NewMessage] = []
        side_text = ""  # the latest text written beside memory calls (an internal step's)
        tool_counts: dict[str, int] = {}
        first: Answer | None = None
        step = Answer()
        calls = 0
        for index in range(self.max_steps):
            if index:
                yield StepStarted(index, [dict(m.data) for m in stored], self.created or 0)
            last_step = index == self.max_steps - 1
            for _attempt in range(2):  # an empty answer is asked for once more
                self.deadline.check()
                async for event in self._step(index):
                    yield event
                step = self._answer
                calls += 1
                if self.guard is not None:
                    self.guard.observe(self.extra, step.usage)
                add_usage(usage, step.usage)
                if not step.empty:
                    break
            if step.empty and not side_text:
                raise empty_response()
            if first is None:
                first = step
                self.created = self.created or step.created or int(time.time())
            internal = [c for c in step.calls if _name(c) not in self.client_names]
            client_calls = [c for c in step.calls if _name(c) in self.client_names]
            for number, call in enumerate(internal):
                if not call.get("id"):  # a result must name the call it answers
                    call["id"] = f"call_memproxy_{index}_{number}"
            dropped = bool(internal and last_step)
            if dropped:
                internal = []  # the model ignored tool_choice: none; do not run more
                step.calls = client_calls
            final = not internal or bool(client_calls)
            if final and not self.choice.satisfied(client_calls):
                if last_step:
                    raise not_satisfied(self.max_steps, self.choice)
                final = False  # text where the client required a call: asked again
            if not final:
                if step.content:
                    side_text = step.content
                self._held = []  # side text: never the answer
                if not (step.content or step.calls):
                    continue  # nothing at all where a call was required: asked again
                assistant: Message = {"role": "assistant", "content": step.content or None}
                if step.calls:
                    assistant["tool_calls"] = step.calls
                stored.append(NewMessage(dict(assistant), visible=False))
                if "reasoning_content" in step.fields:  # sent back within the turn only
                    assistant["reasoning_content"] = step.fields["reasoning_content"]
                self.extra.append(assistant)
                results = await self._run_internal_calls(internal, tool_counts)
                stored.extend(results)
                self.extra.extend(dict(r.data) for r in results)
                continue
            content = self._final_content(step, side_text, dropped and not client_calls)
            for event in self._release(step, content):
                yield event
            reply, kept = self._reply(step, content)
            projection = visible_projection(kept, self.client_names)
            if self.legacy:
                projection = legacy_reply(projection)
                kept = legacy_reply(kept) if not internal else kept
            stored.append(NewMessage(kept, visible=True, visible_hash=visible_hash(projection)))
            stored.extend(await self._run_internal_calls(internal, tool_counts))
            finish = "tool_calls" if client_calls else (step.finish_reason or "stop")
            if finish == "tool_calls" and not client_calls:
                finish = "stop"
            if self.legacy:
                reply = legacy_reply(reply)
                finish = "function_call" if finish == "tool_calls" else finish
            assert first is not None
            yield TurnDone(
                reply=reply,
                finish_reason=finish,
                messages=stored,
                usage=usage,
                steps=calls,
                response_id=first.response_id or "chatcmpl-memproxy",
                model=step.model or first.model or str(self.base_body.get("model", "")),
                created=self.created or int(time.time()),
                system_fingerprint=step.fingerprint,
                tool_calls=tool_counts,
                logprobs=step.logprobs,
                envelope=dict(step.envelope),
                legacy_functions=self.legacy,
            )
            return
        raise AssertionError("unreachable: the last step always ends the turn")

    @staticmethod
    def _final_content(step: Answer, side_text: str, exhausted: bool) -> str | None:
        """The reply's content: the final step's own text (never earlier steps')."""
        if exhausted and not step.content:
            return STEPS_EXHAUSTED
        if step.content:
            return step.content
        if step.empty and side_text:
            return side_text  # empty twice after side text: the only answer there is
        return None if step.calls else ""

    def _release(self, step: Answer, content: str | None) -> list[TextDelta]:
        """The final step's text for a streaming client: what was held, or a stand-in content
        that never streamed (`STEPS_EXHAUSTED`; held side text when the step was empty)."""
        if not self.stream:
            return []
        held, self._held = self._held, []
        if step.content:
            return held  # streamed already, unless held
        if not content:
            return []
        if self.hold_text:
            return [TextDelta(content)]
        if content == STEPS_EXHAUSTED:
            return [TextDelta(TEXT_SEPARATOR + content if self._streamed else content)]
        return []  # side text the client already has

    def _reply(self, step: Answer, content: str | None) -> tuple[Message, Message]:
        """The client's message (every field of the final step) and the stored one (what the
        next prompt needs: content, calls, refusal)."""
        kept: Message = {"role": "assistant", "content": content}
        if step.calls:
            kept["tool_calls"] = step.calls
        if step.refusal:
            kept["refusal"] = step.refusal
        reply = visible_projection(kept, self.client_names)
        reply = {**{k: v for k, v in step.fields.items() if k not in reply}, **reply}
        reply = {"role": "assistant", **{k: v for k, v in reply.items() if k != "role"}}
        return reply, kept

    async def _step(self, index: int) -> AsyncIterator[Event]:
        """One upstream call, its answer left in `self._answer`; on "context length exceeded"
        the prompt shrinks and the call is made again (only before anything was streamed)."""
        attempt = 0
        while True:
            if self.guard is not None and not self.guard.fits(self.extra):
                # Making room may call the summarizer: within the deadline.
                smaller = await self.deadline.bound(self.guard.guard(self.base, self.extra))
                if smaller is not None:
                    self.base = smaller
            body = self._request(index)
            emitted = False
            try:
                if self.stream:
                    async for event in self._stream_step(body):
                        emitted = True
                        yield event
                else:
                    self._answer = await self._call(body)
                return
            except Exception as exc:
                if (not isinstance(exc, MemproxyError) or exc.code != "context_length_exceeded"
                        or self.guard is None or emitted):
                    raise
                smaller = await self.deadline.bound(self.guard.shrink(self.extra, attempt))
                attempt += 1
                if smaller is None:
                    raise
                self.base = smaller

    async def _run_internal_calls(
        self, calls: list[dict[str, Any]], counts: dict[str, int]
    ) -> list[NewMessage]:
        """Memory tool calls run; calls of tools nobody offered get an error result."""
        results: list[NewMessage] = []
        for call in calls:
            fn = call.get("function") or {}
            name = _name(call)
            if name in self.memory_names:
                text, ok = await execute_memory_tool(
                    name, fn.get("arguments"), self.memory, self.tool_context
                )
            else:
                text, ok = unknown_tool_result(name, self.tool_names), False
                name = "unknown"  # metrics labels stay bounded whatever the model invents
            key = f"{name}:{'ok' if ok else 'error'}"
            counts[key] = counts.get(key, 0) + 1
            message = {"role": "tool", "tool_call_id": call.get("id", ""), "content": text}
            results.append(NewMessage(message, visible=False))
        return results

    def _text(self, delta: TextDelta, separated: bool) -> list[TextDelta]:
        """A step's text delta: held (JSON mode, until the step is known to be final) or sent
        at once, after a separator when earlier steps' text already reached the client."""
        if self.hold_text:
            self._held.append(delta)
            return []
        out = []
        if delta.text and self._streamed and not separated:
            out.append(TextDelta(TEXT_SEPARATOR))
        if delta.text:
            self._streamed = True
        out.append(delta)
        return out

    async def _stream_step(self, body: dict[str, Any]) -> AsyncIterator[Event]:
        """Consume one streamed upstream response, forwarding what the client may see."""
        builder = AnswerBuilder()
        client_index: dict[int, int] = {}
        self._held = []
        separated = False  # this step's first text was sent (after a separator if needed)
        stream = self.upstream.chat_stream(body, api_key=self.api_key, route=self.route)
        clock = time.perf_counter()
        try:
            async for chunk in stream:
                self.upstream_seconds += time.perf_counter() - clock
                if self.first_token_upstream_seconds is None:
                    self.first_token_upstream_seconds = self.upstream_seconds
                text: TextDelta | None = None
                pieces = builder.feed(chunk)
                if self.created is None:
                    self.created = builder.answer.created or int(time.time())
                for piece in pieces:
                    if isinstance(piece, TextPiece):
                        text = text or TextDelta("")
                        text.text += piece.text
                        continue
                    if isinstance(piece, FieldsPiece):
                        text = text or TextDelta("")
                        text.fields = piece.fields or None
                        text.logprobs = piece.logprobs
                        continue
                    if text is not None:
                        for event in self._text(text, separated):
                            separated = separated or bool(event.text)
                            yield event
                        text = None
                    call = builder.call(piece.index)
                    name = call["function"]["name"]
                    if name not in self.client_names:
                        continue  # a memory tool, a made-up one, or a name still arriving
                    if self._held:  # a client call: this step is the answer
                        for held in self._held:
                            yield held
                        self._held = []
                    if piece.index not in client_index:
                        client_index[piece.index] = len(client_index)
                        yield ToolCallDelta(client_index[piece.index], call["id"] or None, name,
                                            call["function"]["arguments"])
                    elif piece.arguments:
                        yield ToolCallDelta(client_index[piece.index], None, None,
                                            piece.arguments)
                if text is not None:
                    for event in self._text(text, separated):
                        separated = separated or bool(event.text)
                        yield event
                clock = time.perf_counter()
        finally:
            self.upstream_seconds += time.perf_counter() - clock
            await _aclose(stream)
        self._answer = builder.finish()


def _name(call: dict[str, Any]) -> str:
    fn = call.get("function")
    return str(fn.get("name") or "") if isinstance(fn, dict) else ""


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
