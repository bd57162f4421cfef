"""A running stateful turn and what it is made of: the request, the session that streams the
loop's events and persists the outcome, and the replay of a turn that already finished.

`StatefulService.start` (turns.py) builds a `TurnSession` under the conversation's lock; the
session owns the rest of the turn's effects: the result in one transaction when the loop is
done, or the failure (input kept, or discarded when the upstream rejected the request), and
the lock's release either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from .. import tokens
from ..core.caller import Caller
from ..core.identity import Identity
from ..core.loop import Event, TurnDone, TurnLoop, add_usage
from ..core.messages import head_hash, visible_hash
from ..core.reconcile import Decision
from ..core.tools import MemoryState
from ..core.types import Agent, Conversation, Message, Turn, TurnResult
from ..upstream import Route
from .window import TurnContext

if TYPE_CHECKING:
    from .service import StatefulService

log = logging.getLogger("memproxy.turns")


@dataclass
class TurnRequest:
    caller: Caller
    identity: Identity
    body: dict[str, Any]
    started: float  # perf_counter() when the request arrived
    idempotency_key: str | None = None
    retry: bool = False
    route: Route | None = None  # the request's deadline in, the upstream that answered out

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return bool(isinstance(options, dict) and options.get("include_usage"))


@dataclass
class Replay:
    """A retried request whose turn already finished: answer from the store."""

    response: dict[str, Any]
    agent_id: str
    conversation_id: str
    turn: Turn


@dataclass
class TurnSession:
    """A running turn. Iterate `events()` exactly once; it persists and releases the lock."""

    service: StatefulService
    request: TurnRequest
    agent: Agent
    conversation: Conversation
    turn_id: str
    loop: TurnLoop
    memory: MemoryState
    window: TurnContext
    decision: Decision
    exit_stack: AsyncExitStack
    done: TurnDone | None = None
    response: dict[str, Any] | None = None
    first_user: Message | None = None  # set when this turn gives the conversation its head
    _finished: bool = field(default=False, repr=False)

    def overhead_ms(self) -> float:
        elapsed = time.perf_counter() - self.request.started
        upstream = self.loop.upstream_seconds + self.window.summary_seconds
        return max(0.0, (elapsed - upstream) * 1000)

    def headers(self) -> dict[str, str]:
        steps = self.done.steps if self.done else 1
        return {
            "x-memproxy-agent-id": self.agent.agent_id,
            "x-memproxy-conversation-id": self.conversation.conversation_id,
            "x-memproxy-turn-id": self.turn_id,
            "x-memproxy-steps": str(steps),
            "x-memproxy-context-tokens": str(self.window.estimate() - self.window.reserve_output),
            "x-memproxy-overhead-ms": f"{self.overhead_ms():.2f}",
        }

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for event in self.loop.run():
                if isinstance(event, TurnDone):
                    self.done = event
                    await self._persist(event)
                yield event
        except BaseException as exc:
            # A client that disconnects cancels us (anyio cancellation is level-triggered), so
            # the bookkeeping runs shielded: the turn is marked and the lock always released.
            with anyio.CancelScope(shield=True):
                if not self._finished:
                    await self._fail(exc)
                await self.close()
            raise
        else:
            await self.close()

    async def close(self) -> None:
        await self.exit_stack.aclose()

    async def _persist(self, done: TurnDone) -> None:
        from ..api.sse import completion

        self.response = completion(
            completion_id=f"chatcmpl-{self.turn_id}",
            created=done.created,
            model=done.model,
            message=done.reply,
            finish_reason=done.finish_reason,
            usage=done.usage,
            system_fingerprint=done.system_fingerprint,
        )
        add_usage(done.usage, self.window.summary_usage)
        model = str(self.request.body.get("model", ""))
        for message in done.messages:
            message.tokens = tokens.count_message(message.data, model)
        result = TurnResult(
            messages=done.messages,
            blocks=self.memory.changed_blocks(),
            passages=self.memory.new_passages,
            response=self.response,
            revisions=self.memory.revisions,
        )
        await self.service.store.finish_turn(
            self.turn_id, self.conversation.pk, self.agent.pk, result
        )
        self.service.embeddings.notify(self.agent.pk)  # embed new messages/passages (background)
        self._finished = True
        self._record_metrics(done)
        await self._record_head(done)
        await self.service.catalog.flush()

    async def _record_head(self, done: TurnDone) -> None:
        """After a conversation's first reply: remember its first exchange, so a client that
        resends the history without naming the conversation finds it again."""
        if self.first_user is None:
            return
        reply = next((m for m in done.messages if m.visible and m.data.get("role") == "assistant"),
                     None)
        if reply is None or reply.visible_hash is None:
            return
        head = head_hash(visible_hash(self.first_user), reply.visible_hash)
        await self.service.store.update_conversation(self.conversation.pk, head_hash=head)

    def _record_metrics(self, done: TurnDone) -> None:
        metrics = self.service.metrics
        metrics.steps.observe(done.steps)
        metrics.upstream.observe(self.loop.upstream_seconds + self.window.summary_seconds)
        for key, count in done.tool_calls.items():
            name, _, outcome = key.partition(":")
            metrics.tool_calls.labels(name, outcome).inc(count)
        for kind in ("prompt_tokens", "completion_tokens"):
            metrics.tokens.labels(kind.removesuffix("_tokens")).inc(done.usage.get(kind, 0))
        if self.window.compactions:
            metrics.compactions.inc(self.window.compactions)

    async def _fail(self, exc: BaseException) -> None:
        """Record the failure. The input stays (unanswered) so that a retry continues the turn,
        unless the upstream rejected the request as invalid: then the conversation is left as
        it was before, because resending the same request cannot succeed."""
        self._finished = True
        status = getattr(exc, "status", None)
        error = {"type": type(exc).__name__, "status": status}
        rejected = isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429)
        try:
            if rejected:
                await self.service.store.discard_turn(self.turn_id, error)
            else:
                await self.service.store.fail_turn(self.turn_id, error)
        except Exception:  # the original error matters more; the turn stays 'open'
            log.exception("could not mark turn %s failed", self.turn_id)
