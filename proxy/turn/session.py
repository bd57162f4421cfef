"""A running stateful turn: it streams the loop's events, stores the outcome and releases the
conversation's lock.

`StatefulService.start` (service.py) builds a `TurnSession` under the conversation's lock; the
session owns the rest of the turn's effects, through a narrow `TurnEffects` rather than the
whole service: the result in one transaction when the loop is done, then the observers
(observers.py); or the failure (input kept, or discarded when the upstream rejected the
request); and the lock's release either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio

from .. import tokens
from ..core.completions import chat_completion
from ..core.loop import Event, TurnDone, TurnLoop, add_usage
from ..core.reconcile import Decision
from ..core.tools import MemoryState
from ..core.tree import hang
from ..core.types import Agent, Conversation, TurnResult
from ..errors import MemproxyError
from ..obs.metrics import Metrics
from ..store.base import TurnStore
from .observers import FinishedTurn, TurnObserver
from .request import TurnRequest
from .window import TurnWindow

log = logging.getLogger("memproxy.turns")


@dataclass(frozen=True)
class TurnEffects:
    """What a running turn may do besides calling the model."""

    store: TurnStore
    observers: Sequence[TurnObserver]
    metrics: Metrics  # for the HTTP layer's request and overhead figures


def rejected_by_upstream(exc: BaseException) -> bool:
    """The upstream judged the request itself invalid (a 4xx other than timeout, conflict and
    rate limit): resending the same request cannot succeed."""
    return (isinstance(exc, MemproxyError) and 400 <= exc.status < 500
            and exc.status not in (408, 409, 429))


@dataclass
class TurnSession:
    """A running turn. Iterate `events()` exactly once; it stores the outcome and releases the
    lock."""

    effects: TurnEffects
    request: TurnRequest
    agent: Agent
    conversation: Conversation
    turn_id: str
    loop: TurnLoop
    memory: MemoryState
    window: TurnWindow
    decision: Decision
    exit_stack: AsyncExitStack
    reply_hash: str = ""  # the path hash the turn's messages follow (core/tree.py)
    request_hash: str = ""
    input_tip_seq: int | None = None  # the newest message of the context it started with
    done: TurnDone | None = None
    response: dict[str, Any] | None = None
    _finished: bool = field(default=False, repr=False)

    @property
    def metrics(self) -> Metrics:
        return self.effects.metrics

    @property
    def upstream_seconds(self) -> float:
        return self.loop.upstream_seconds + self.window.summary_seconds

    def overhead_ms(self) -> float:
        elapsed = time.perf_counter() - self.request.started
        return max(0.0, (elapsed - self.upstream_seconds) * 1000)

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
                    await self._finish(event)
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

    async def _finish(self, done: TurnDone) -> None:
        """Store the result in one transaction, then tell the observers."""
        self.response = chat_completion(
            completion_id=f"chatcmpl-{self.turn_id}",
            created=done.created,
            model=done.model,
            message=done.reply,
            finish_reason=done.finish_reason,
            usage=done.usage,
            system_fingerprint=done.system_fingerprint,
            logprobs=done.logprobs,
            envelope=done.envelope,
        )
        add_usage(done.usage, self.window.summary_usage)
        model = self.request.model
        for message in done.messages:
            message.tokens = tokens.count_message(message.data, model)
        hang(done.messages, self.reply_hash)  # the steps and the reply follow the input
        result = TurnResult(
            messages=done.messages,
            blocks=self.memory.changed_blocks(),
            passages=self.memory.new_passages,
            response=self.response,
            revisions=self.memory.revisions,
            max_passages=self.memory.passage_cap,
        )
        stored = await self.effects.store.finish_turn(
            self.turn_id, self.conversation.pk, self.agent.pk, result
        )
        if stored < len(result.passages):
            log.warning("archival passages not stored: the agent reached [limits]"
                        " passages_per_agent = %d while turn %s ran (%d of %d kept)",
                        result.max_passages, self.turn_id, stored, len(result.passages))
        self._finished = True
        finished = FinishedTurn(
            agent=self.agent, conversation=self.conversation, turn_id=self.turn_id, done=done,
            upstream_seconds=self.upstream_seconds, compactions=self.window.compactions,
            request_hash=self.request_hash, input_tip_seq=self.input_tip_seq,
        )
        for observer in self.effects.observers:
            await observer.turn_finished(finished)

    async def _fail(self, exc: BaseException) -> None:
        """Record the failure. The input stays (unanswered) so that a retry continues the turn,
        unless the upstream rejected the request as invalid: then the conversation is left as
        it was before, because resending the same request cannot succeed."""
        self._finished = True
        status = exc.status if isinstance(exc, MemproxyError) else None
        error = {"type": type(exc).__name__, "status": status}
        try:
            if rejected_by_upstream(exc):
                await self.effects.store.discard_turn(self.turn_id, error)
            else:
                await self.effects.store.fail_turn(self.turn_id, error)
        except Exception:  # the original error matters more; the turn stays 'open'
            log.exception("could not mark turn %s failed", self.turn_id)
