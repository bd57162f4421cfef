"""The agent loop: call the model, run memory tools, repeat until it answers (DESIGN §2, §3.5).

One loop serves streaming and non-streaming clients. It is an async generator of events: text
and client-tool-call deltas (forwarded live to streaming clients) and a final `TurnDone` with the
messages to store, the client-visible reply and the summed usage.

Rules:
- plain text (no tool calls) ends the turn; so does any call of a tool the *client* supplied,
  which is returned to the client; memory tool calls are executed and the loop continues;
- the last allowed step is sent with `tool_choice: "none"` so the model must answer in text;
- text the model writes alongside memory tool calls is shown to the client and moves into the
  final reply, so the stored visible reply is exactly what the client saw, in both modes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .messages import visible_hash
from .tools import (
    MEMORY_TOOL_NAMES,
    MemoryState,
    ToolContext,
    execute_memory_tool,
    memory_tools_for,
)
from .types import Message, NewMessage

TEXT_SEPARATOR = "\n\n"


class Upstream(Protocol):
    async def chat(self, body: dict[str, Any], *, api_key: str | None) -> dict[str, Any]: ...

    def chat_stream(
        self, body: dict[str, Any], *, api_key: str | None
    ) -> AsyncIterator[dict[str, Any]]: ...


class ContextGuard(Protocol):
    """Keeps the prompt inside the model's window (implemented by `proxy.compaction`)."""

    async def guard(self, base: list[Message], extra: list[Message]) -> list[Message] | None:
        """Before a call: a new base prompt if it had to shrink, else None."""

    async def shrink(self, extra: list[Message], attempt: int) -> list[Message] | None:
        """After "context length exceeded": a smaller base prompt, or None to give up."""

    def observe(self, extra: list[Message], usage: dict[str, Any] | None) -> None:
        """Learn from the upstream's reported usage for the prompt just sent."""


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCallDelta:
    """A fragment of a client tool call, re-indexed among the client's calls only."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass
class StepStarted:
    """Sent before each upstream call after the first (a chance to keep connections alive)."""

    step: int


@dataclass
class TurnDone:
    reply: Message  # what the client receives as choices[0].message
    finish_reason: str
    messages: list[NewMessage]  # what the turn appends to the transcript, in order
    usage: dict[str, int]
    steps: int
    response_id: str
    model: str
    created: int
    system_fingerprint: str | None = None
    tool_calls: dict[str, int] = field(default_factory=dict)  # name -> count, for metrics


Event = TextDelta | ToolCallDelta | StepStarted | TurnDone


def add_usage(total: dict[str, int], usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value


def visible_projection(message: Message, memory_names: frozenset[str]) -> Message:
    """The assistant message as the client sees it: memory tool calls removed."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    shown = [c for c in calls if (c.get("function") or {}).get("name") not in memory_names]
    projected = {k: v for k, v in message.items() if k != "tool_calls"}
    if shown:
        projected["tool_calls"] = shown
    return projected


@dataclass
class _Step:
    content: str = ""
    refusal: str | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    fingerprint: str | None = None


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
    ) -> None:
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
        self.tools = memory_tools_for(body.get("tools") or [])
        names = {t["function"]["name"] for t in self.tools if t.get("function")}
        client_names = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
        self.memory_names = frozenset((MEMORY_TOOL_NAMES & names) - client_names)
        self.upstream_seconds = 0.0
        self._last_usage: dict[str, Any] | None = None
        self.first_token_upstream_seconds: float | None = None

    @property
    def prompt(self) -> list[Message]:
        return self.base + self.extra

    def _request(self, step: int) -> dict[str, Any]:
        body = dict(self.base_body)
        body["messages"] = self.prompt
        body["tools"] = self.tools
        body["stream"] = self.stream
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream_options", None)
        if step == self.max_steps - 1:
            body["tool_choice"] = "none"
        return body

    async def _call(self, body: dict[str, Any]) -> _Step:
        start = time.perf_counter()
        try:
            response = await self.upstream.chat(body, api_key=self.api_key)
        finally:
            self.upstream_seconds += time.perf_counter() - start
        self._last_usage = response.get("usage")
        choice = (response.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        return _Step(
            content=message.get("content") or "",
            refusal=message.get("refusal"),
            calls=list(message.get("tool_calls") or []),
            finish_reason=choice.get("finish_reason"),
            response_id=response.get("id"),
            model=response.get("model"),
            created=response.get("created"),
            fingerprint=response.get("system_fingerprint"),
        )

    async def run(self) -> AsyncIterator[Event]:
        usage: dict[str, int] = {}
        stored: list[NewMessage] = []
        texts: list[str] = []
        tool_counts: dict[str, int] = {}
        first: _Step | None = None
        step = _Step()
        steps = 0
        for index in range(self.max_steps):
            if index:
                yield StepStarted(index)
            steps += 1
            attempt = 0
            while True:
                if self.guard is not None:
                    smaller = await self.guard.guard(self.base, self.extra)
                    if smaller is not None:
                        self.base = smaller
                body = self._request(index)
                self._last_usage = None
                emitted = False
                try:
                    if self.stream:
                        step = _Step()
                        async for event in self._stream_step(body, step, bool(texts)):
                            emitted = True
                            yield event
                    else:
                        step = await self._call(body)
                    break
                except Exception as exc:
                    if (getattr(exc, "code", None) != "context_length_exceeded"
                            or self.guard is None or emitted):
                        raise
                    smaller = await self.guard.shrink(self.extra, attempt)
                    attempt += 1
                    if smaller is None:
                        raise
                    self.base = smaller
            if self.guard is not None:
                self.guard.observe(self.extra, self._last_usage)
            add_usage(usage, self._last_usage)
            first = first or step
            if step.content:
                texts.append(step.content)
            memory_calls = [c for c in step.calls if _name(c) in self.memory_names]
            client_calls = [c for c in step.calls if _name(c) not in self.memory_names]
            last_step = index == self.max_steps - 1
            if memory_calls and last_step:
                memory_calls = []  # the model ignored tool_choice: none; do not run more
                step.calls = client_calls
            assistant: Message = {"role": "assistant", "content": None}
            if step.calls:
                assistant["tool_calls"] = step.calls
            if not memory_calls or client_calls:
                # The final message of the turn carries all visible text.
                assistant["content"] = TEXT_SEPARATOR.join(texts) if texts or not step.calls else None
                if step.refusal:
                    assistant["refusal"] = step.refusal
                projection = visible_projection(assistant, self.memory_names)
                stored.append(
                    NewMessage(assistant, visible=True, visible_hash=visible_hash(projection))
                )
                results = await self._run_memory_calls(memory_calls, tool_counts)
                stored.extend(results)
                finish = "tool_calls" if client_calls else (step.finish_reason or "stop")
                if finish == "tool_calls" and not client_calls:
                    finish = "stop"
                reply = {"role": "assistant", "content": projection.get("content")}
                if projection.get("tool_calls"):
                    reply["tool_calls"] = projection["tool_calls"]
                if step.refusal:
                    reply["refusal"] = step.refusal
                assert first is not None
                yield TurnDone(
                    reply=reply,
                    finish_reason=finish,
                    messages=stored,
                    usage=usage,
                    steps=steps,
                    response_id=first.response_id or "chatcmpl-memproxy",
                    model=step.model or first.model or str(self.base_body.get("model", "")),
                    created=first.created or int(time.time()),
                    system_fingerprint=step.fingerprint,
                    tool_calls=tool_counts,
                )
                return
            stored.append(NewMessage(assistant, visible=False))
            self.extra.append(assistant)
            results = await self._run_memory_calls(memory_calls, tool_counts)
            stored.extend(results)
            self.extra.extend(dict(r.data) for r in results)
        raise AssertionError("unreachable: the last step always ends the turn")

    async def _run_memory_calls(
        self, calls: list[dict[str, Any]], counts: dict[str, int]
    ) -> list[NewMessage]:
        results: list[NewMessage] = []
        for call in calls:
            fn = call.get("function") or {}
            name = fn.get("name", "")
            text, ok = await execute_memory_tool(
                name, fn.get("arguments"), self.memory, self.tool_context
            )
            key = f"{name}:{'ok' if ok else 'error'}"
            counts[key] = counts.get(key, 0) + 1
            message = {"role": "tool", "tool_call_id": call.get("id", ""), "content": text}
            results.append(NewMessage(message, visible=False))
        return results

    async def _stream_step(
        self, body: dict[str, Any], step: _Step, had_text: bool
    ) -> AsyncIterator[Event]:
        """Consume one streamed upstream response, forwarding what the client may see."""
        by_index: dict[int, dict[str, Any]] = {}
        client_index: dict[int, int] = {}
        next_client_index = 0
        separated = not had_text
        stream = self.upstream.chat_stream(body, api_key=self.api_key)
        clock = time.perf_counter()
        try:
            async for chunk in stream:
                now = time.perf_counter()
                self.upstream_seconds += now - clock
                if self.first_token_upstream_seconds is None:
                    self.first_token_upstream_seconds = self.upstream_seconds
                step.response_id = step.response_id or chunk.get("id")
                step.model = step.model or chunk.get("model")
                step.created = step.created or chunk.get("created")
                step.fingerprint = chunk.get("system_fingerprint") or step.fingerprint
                if chunk.get("usage"):
                    self._last_usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    if text:
                        if not separated:
                            separated = True
                            yield TextDelta(TEXT_SEPARATOR)
                        step.content += text
                        yield TextDelta(text)
                    if delta.get("refusal"):
                        step.refusal = (step.refusal or "") + delta["refusal"]
                    for part in delta.get("tool_calls") or []:
                        idx = int(part.get("index", 0))
                        call = by_index.get(idx)
                        fn = part.get("function") or {}
                        if call is None:
                            call = {"id": "", "type": "function",
                                    "function": {"name": "", "arguments": ""}}
                            by_index[idx] = call
                        if part.get("id"):
                            call["id"] = part["id"]
                        if fn.get("name"):
                            call["function"]["name"] += fn["name"]
                        args = fn.get("arguments") or ""
                        call["function"]["arguments"] += args
                        name = call["function"]["name"]
                        if not name:
                            continue
                        if name in self.memory_names:
                            continue
                        if idx not in client_index:
                            client_index[idx] = next_client_index
                            next_client_index += 1
                            yield ToolCallDelta(
                                client_index[idx], call["id"] or None, name,
                                call["function"]["arguments"],
                            )
                        elif args:
                            yield ToolCallDelta(client_index[idx], None, None, args)
                    if choice.get("finish_reason"):
                        step.finish_reason = choice["finish_reason"]
                clock = time.perf_counter()
        finally:
            self.upstream_seconds += time.perf_counter() - clock
            await _aclose(stream)
        step.calls = [by_index[i] for i in sorted(by_index)]


def _name(call: dict[str, Any]) -> str:
    return str((call.get("function") or {}).get("name", ""))


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
