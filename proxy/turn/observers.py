"""What happens after a turn is stored: observers, like `llm`'s hooks, instead of special
cases in the session.

A finished turn is handed to each observer in order, after its result is committed; none of
them is needed for the answer. The service's default list: embed the new rows (in the
background), record metrics, and flush the model catalog's learned calibration (in the
background too: observers run before the answer is sent, so each must be cheap). (A client
that resends its history without naming the conversation finds it by the history's path:
core/tree.py, nothing to record here.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..core.loop import TurnDone
from ..core.types import Agent, Conversation
from ..obs.metrics import Metrics


@dataclass(frozen=True)
class FinishedTurn:
    """A turn whose result is stored, with what observers may want to know of it."""

    agent: Agent
    conversation: Conversation
    turn_id: str
    done: TurnDone
    upstream_seconds: float  # model calls, the summarizer's included
    compactions: int  # page-outs during the turn
    request_hash: str = ""
    input_tip_seq: int | None = None  # the newest message of its context before its reply


class TurnObserver(Protocol):
    async def turn_finished(self, turn: FinishedTurn) -> None: ...


class Embedder(Protocol):
    def notify(self, agent_pk: int | None = None) -> None: ...


class CatalogFlush(Protocol):
    def flush_soon(self) -> None: ...


@dataclass
class EmbedNewRows:
    """Embed the turn's new messages and passages (background work; no-op when off)."""

    embeddings: Embedder

    async def turn_finished(self, turn: FinishedTurn) -> None:
        self.embeddings.notify(turn.agent.pk)


@dataclass
class RecordMetrics:
    metrics: Metrics

    async def turn_finished(self, turn: FinishedTurn) -> None:
        metrics, done = self.metrics, turn.done
        metrics.steps.observe(done.steps)
        metrics.upstream.observe(turn.upstream_seconds)
        for key, count in done.tool_calls.items():
            name, _, outcome = key.partition(":")
            metrics.tool_calls.labels(name, outcome).inc(count)
        for kind in ("prompt_tokens", "completion_tokens"):
            metrics.tokens.labels(kind.removesuffix("_tokens")).inc(done.usage.get(kind, 0))
        if turn.compactions:
            metrics.compactions.inc(turn.compactions)


@dataclass
class FlushCatalog:
    """Persist what the turn taught the calibration (rate-limited by the catalog), in the
    background: observers run before the answer is sent, and this write is not part of it."""

    catalog: CatalogFlush

    async def turn_finished(self, turn: FinishedTurn) -> None:
        self.catalog.flush_soon()
