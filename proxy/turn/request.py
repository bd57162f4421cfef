"""What a stateful turn is asked to do, and what a finished turn hands back when retried.

The HTTP layer builds a `TurnRequest` (caller, identity, the validated body, retry markers,
the deadline); `TurnService.start` answers it with a running `TurnSession` or, for a retry of
a turn that already finished, a `Replay` of the stored response.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..core.caller import Caller
from ..core.identity import Identity
from ..core.types import Turn
from ..upstream import Route


@dataclass
class TurnRequest:
    caller: Caller
    identity: Identity
    body: dict[str, Any]
    started: float  # perf_counter() when the request arrived
    idempotency_key: str | None = None
    retry: bool = False
    route: Route | None = None  # the request's deadline in, the upstream that answered out
    may_page: bool = True  # False (Responses `truncation: "disabled"`): overflow is a 400
    max_steps: int | None = None  # fewer steps than `[agent] max_steps` (never more)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        options = self.body.get("stream_options")
        return bool(isinstance(options, dict) and options.get("include_usage"))

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


@dataclass
class Replay:
    """A retried request whose turn already finished: answer from the store."""

    response: dict[str, Any]
    agent_id: str
    conversation_id: str
    turn: Turn

    def headers(self, started: float | None = None) -> dict[str, str]:
        """The `x-memproxy-*` headers of a replayed turn: no step ran; with `started` (the
        request's perf_counter()), memproxy's time so far."""
        headers = {
            "x-memproxy-agent-id": self.agent_id,
            "x-memproxy-conversation-id": self.conversation_id,
            "x-memproxy-turn-id": self.turn.turn_id,
            "x-memproxy-steps": "0",
            "x-memproxy-replayed": "true",
        }
        if started is not None:
            headers["x-memproxy-overhead-ms"] = f"{(time.perf_counter() - started) * 1000:.2f}"
        return headers
