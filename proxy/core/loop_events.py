"""What the agent loop (core/loop.py) speaks: the events it yields, the protocols of what it
calls (the model, the context guard, the deadline) and how it adds up usage. Kept apart so
that the loop module holds only the loop's decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..errors import UpstreamError
from .answers import merge_usage
from .types import Message, NewMessage

T = TypeVar("T")


class Deadline(Protocol):
    """A request's deadline, carried into every upstream call (`upstream.Route` implements
    it; the upstream client also records on it which upstream answered)."""

    def check(self) -> None:
        """Raise when the deadline has passed."""

    async def bound(self, work: Awaitable[T]) -> T:
        """Await `work`, cut off at the deadline."""


class NoDeadline:
    """A turn without a deadline."""

    def check(self) -> None:
        return None

    async def bound(self, work: Awaitable[T]) -> T:
        return await work


def empty_response() -> UpstreamError:
    """The upstream answered nothing usable twice in a row (a 502: the model's fault)."""
    return UpstreamError(
        502,
        "the upstream returned an empty answer (no content and no tool call) twice",
        code="empty_response",
        retryable=False,
    )


class Upstream(Protocol):
    """The model, as the loop calls it (`upstream.UpstreamClient` implements it)."""

    async def chat(
        self, body: dict[str, Any], *, api_key: str | None, route: Any = None
    ) -> dict[str, Any]: ...

    def chat_stream(
        self, body: dict[str, Any], *, api_key: str | None, route: Any = None
    ) -> AsyncIterator[dict[str, Any]]: ...


class ContextGuard(Protocol):
    """Keeps the prompt inside the model's window (implemented by `proxy.turn.window`)."""

    def fits(self, extra: list[Message]) -> bool:
        """Whether the prompt fits as it is (no I/O: the common case skips `guard`)."""

    async def guard(self, base: list[Message], extra: list[Message]) -> list[Message] | None:
        """Before a call: a new base prompt if it had to shrink, else None."""

    async def shrink(self, extra: list[Message], attempt: int) -> list[Message] | None:
        """After "context length exceeded": a smaller base prompt, or None to give up."""

    def observe(self, extra: list[Message], usage: dict[str, Any] | None) -> None:
        """Learn from the upstream's reported usage for the prompt just sent."""


@dataclass
class TextDelta:
    """Text of the answer, with the chunk's other delta fields (`reasoning_content`...) and its
    choice's `logprobs` when the upstream sent them (`text` may then be empty)."""

    text: str
    fields: dict[str, Any] | None = None
    logprobs: dict[str, Any] | None = None


@dataclass
class ToolCallDelta:
    """A fragment of a client tool call, re-indexed among the client's calls only."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass
class StepStarted:
    """Sent before each upstream call after the first (a chance to keep connections alive).

    `output` is what the turn has produced so far (the memory steps before this call: each
    assistant message with its calls, then their results), so a client of Letta's step stream
    sees them as they happen; `created` is the turn's `created` (the first answer's), which
    the finished turn's `TurnDone.created` repeats."""

    step: int
    output: list[Message] = field(default_factory=list)
    created: int = 0


@dataclass
class TurnDone:
    reply: Message  # what the client receives as choices[0].message (every upstream field)
    finish_reason: str
    messages: list[NewMessage]  # what the turn appends to the transcript, in order
    usage: dict[str, Any]  # summed over the steps, detail objects included
    steps: int
    response_id: str
    model: str
    created: int
    system_fingerprint: str | None = None
    tool_calls: dict[str, int] = field(default_factory=dict)  # name -> count, for metrics
    logprobs: dict[str, Any] | None = None  # the final step's choice logprobs
    envelope: dict[str, Any] = field(default_factory=dict)  # its other top-level fields
    legacy_functions: bool = False  # the client used `functions`: calls go back as function_call


Event = TextDelta | ToolCallDelta | StepStarted | TurnDone


def add_usage(total: dict[str, Any], usage: dict[str, Any] | None) -> None:
    """Add one call's usage to a turn's, detail objects included."""
    merge_usage(total, usage)
