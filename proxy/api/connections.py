"""Connection hygiene: deadlines for receiving a request's head and body, and a connection cap.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) but not a client that sends
a request slowly: a connection that never completes its head (slowloris) or trickles its body
holds a socket and a file descriptor forever, with no key needed. The ASGI app cannot see a
head that never completes, so the bound lives in the HTTP protocol: `http_protocol()` is
uvicorn's own protocol class (httptools, else h11: both keep the state read here) with
`DeadlineMixin` in front of it.

- **Head**: from the moment a connection opens, or the first byte of a next request on a
  kept-alive connection, the head must be complete within `[server] header_timeout_s`.
- **Body**: from the complete head, the body must be complete within `body_timeout_s`.
  A response being sent is never cut (a long stream is the answer, not the request); the
  response phase is bounded by the upstream deadlines instead. Nor is a body that waits
  because the app has not read it yet (uvicorn pauses reading past 64 KiB): only a client
  that is slow to send is dropped.
- **Connections**: past `max_connections` open connections a new one is closed at once.

A dropped connection is closed without an answer (the client is not reading one anyway), its
reason counted in `memproxy_connections_dropped{reason}`, and logged once at INFO with the
reason and client address, never content. `0` turns each bound off.

The policy reaches the protocol through uvicorn's lifespan state (`app_state`), which the app's
lifespan fills (app.py): every worker process of `--workers N` builds its own from its settings,
and a server without that state (tests serving a bare app) keeps uvicorn's behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("memproxy.connections")

STATE_KEY = "memproxy.connections"  # the lifespan-state key holding the `ConnectionPolicy`


@dataclass(frozen=True)
class ConnectionPolicy:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    dropped: Any = None  # prometheus Counter labelled by reason, or None

    def count(self, reason: str) -> None:
        if self.dropped is not None:
            self.dropped.labels(reason).inc()


class DeadlineMixin:
    """Arms and cancels the two deadlines around a uvicorn HTTP protocol's own callbacks.

    It only reads what both uvicorn protocols share: `self.cycle` (the current request, with
    `more_body`, `response_started`, `response_complete`), `self.connections`,
    `self.transport`, `self.client` and `self.app_state`.
    """

    transport: asyncio.Transport
    cycle: Any
    connections: set[Any]
    client: Any
    app_state: dict[str, Any]

    _policy: ConnectionPolicy | None = None
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _seen_cycle: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        policy = self.app_state.get(STATE_KEY) if isinstance(self.app_state, dict) else None
        self._policy = policy if isinstance(policy, ConnectionPolicy) else None
        if self._policy is None:
            return
        if self._policy.max_connections and len(self.connections) > self._policy.max_connections:
            self._drop("too_many_connections")
            return
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        if self._policy is not None and self._waiting_for_head() and self._head_timer is None:
            self._arm_head()  # the first bytes of a next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        if self._policy is not None:
            self._after_parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)  # type: ignore[misc]

    # -- state ----------------------------------------------------------------------------

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle is self._seen_cycle and self.cycle.response_complete

    def _after_parse(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:  # a head was completed
            self._seen_cycle = cycle
            self._cancel(head=True)
            if cycle.more_body and self._policy and self._policy.body_timeout_s:
                loop = asyncio.get_running_loop()
                self._body_timer = loop.call_later(self._policy.body_timeout_s, self._body_late)
        if cycle is not None and not cycle.more_body:
            self._cancel(body=True)

    def _arm_head(self) -> None:
        if self._policy is None or not self._policy.header_timeout_s:
            return
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._policy.header_timeout_s, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            self._drop("header_timeout")

    def _body_late(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body:
            return
        if cycle.response_started and not cycle.response_complete:
            return  # never cut an answer being sent
        flow = getattr(self, "flow", None)
        if flow is not None and flow.read_paused and self._policy is not None:
            # uvicorn stopped reading because the app has not taken the body yet: the client
            # is not the slow one; look again a deadline later
            loop = asyncio.get_running_loop()
            self._body_timer = loop.call_later(self._policy.body_timeout_s, self._body_late)
            return
        self._drop("body_timeout")

    def _cancel(self, head: bool = False, body: bool = False) -> None:
        if head and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if body and self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel(head=True, body=True)

    def _drop(self, reason: str) -> None:
        self._cancel_timers()
        if self.transport.is_closing():
            return
        if self._policy is not None:
            self._policy.count(reason)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        log.info("dropped a connection from %s: %s", client, reason.replace("_", " "))
        self.transport.close()


def _base_protocol() -> type:
    """uvicorn's `auto` choice: httptools when installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is part of uvicorn[standard]
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    return HttpToolsProtocol


class DeadlineHttpProtocol(DeadlineMixin, _base_protocol()):  # type: ignore[misc]
    """uvicorn's default protocol with the deadlines (the `http` given to uvicorn)."""


def http_protocol() -> type:
    """The protocol class for `uvicorn.run(http=...)` (module level, so workers can import it)."""
    return DeadlineHttpProtocol


def policy_from(server: Any, dropped: Any) -> ConnectionPolicy:
    """The policy of `[server]` settings, counting drops in `dropped`."""
    return ConnectionPolicy(header_timeout_s=server.header_timeout_s,
                            body_timeout_s=server.body_timeout_s,
                            max_connections=server.max_connections, dropped=dropped)
