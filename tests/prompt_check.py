"""What the upstream was shown, compared with what the client sent (issue #15's invariant).

The invariant: after every stateful request, the prompt memproxy sends upstream, minus its
system message(s) and minus memproxy's own memory-tool steps (assistant messages calling memory
tools and their `tool` results), is the conversation's path: the stored messages it continues
followed by the client's non-system messages, in order, once each. For a client that resends
its whole history the stored part is empty; an SDK-style client (only the new messages) sees
its earlier turns before them. Messages are compared in a normal form (`normal`): role, text,
tool calls as (id, name, parsed arguments), tool_call_id, so that `null` vs `""` content or
re-serialised JSON arguments do not count as a difference, while a lost or swapped tool result
does.

`ClientLog` records, through httpx event hooks on the client's own HTTP client, every chat
request a framework sends to memproxy and which upstream requests served it, so tests can
check frameworks whose request bodies they do not build themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.fakes import MEMORY_TOOLS, FakeUpstream, message_text

NO_RESULT = "(no result"  # memproxy's stand-in for a tool result the client did not send


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def normal(message: dict[str, Any]) -> tuple:
    """A message's comparable form: (role, text, ((id, name, args), ...), tool_call_id)."""
    calls = tuple(
        (c.get("id"), (c.get("function") or {}).get("name"),
         json.dumps(_arguments((c.get("function") or {}).get("arguments")), sort_keys=True))
        for c in message.get("tool_calls") or []
    )
    return (message.get("role"), message_text(message), calls, message.get("tool_call_id"))


def _memory_call_ids(messages: list[dict[str, Any]]) -> set[str]:
    return {
        c.get("id") for m in messages for c in m.get("tool_calls") or []
        if (c.get("function") or {}).get("name") in MEMORY_TOOLS
    }


def visible(messages: list[dict[str, Any]]) -> list[tuple]:
    """The client-visible part of a message list, normalised: no system/developer messages, no
    memory-tool calls and no results of memory-tool calls."""
    memory_ids = _memory_call_ids(messages)
    out = []
    for m in messages:
        if m.get("role") in ("system", "developer"):
            continue
        calls = m.get("tool_calls") or []
        if calls and all(c.get("id") in memory_ids for c in calls) and m.get("role") == "assistant":
            continue
        if m.get("role") == "tool" and m.get("tool_call_id") in memory_ids:
            continue
        out.append(normal(m))
    return out


def assert_no_stand_in(bodies: list[dict[str, Any]]) -> None:
    """No upstream prompt held memproxy's "(no result: ...)" stand-in for a tool result."""
    for i, body in enumerate(bodies):
        for m in body.get("messages") or []:
            assert NO_RESULT not in message_text(m), (
                f"upstream request {i} was given a stand-in instead of the client's tool "
                f"result: {m!r}")


@dataclass
class Exchange:
    """One chat request the client sent to memproxy and the upstream requests it caused."""

    body: dict[str, Any]
    upstream: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # memproxy's response headers
    sent_headers: dict[str, str] = field(default_factory=dict)  # the client's request headers

    @property
    def client_messages(self) -> list[tuple]:
        return [normal(m) for m in self.body["messages"]
                if m.get("role") not in ("system", "developer")]


class ClientLog:
    """Event hooks for an httpx client (sync or async) that record each chat request."""

    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.exchanges: list[Exchange] = []
        self.on_status: dict[int, Callable[[], None]] = {}  # called when a response has it
        self._start = 0

    def _on_request(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            request.read()
            self._start = len(self.fake.requests)
            self.exchanges.append(Exchange(json.loads(request.content),
                                           sent_headers=dict(request.headers)))

    def _on_response(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions") and self.exchanges:
            # a non-stream answer comes once the turn is over: its upstream calls are done
            last = self.exchanges[-1]
            last.upstream = [r.json for r in self.fake.requests[self._start:]]
            last.status = response.status_code
            last.headers = dict(response.headers)
            if (action := self.on_status.get(response.status_code)) is not None:
                action()

    def sync_client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(event_hooks={"request": [self._on_request],
                                         "response": [self._on_response]}, **kw)

    def async_client(self, **kw: Any) -> httpx.AsyncClient:
        async def on_request(request: httpx.Request) -> None:
            self._on_request(request)

        async def on_response(response: httpx.Response) -> None:
            self._on_response(response)

        return httpx.AsyncClient(event_hooks={"request": [on_request],
                                              "response": [on_response]}, **kw)


def check_exchange(exchange: Exchange, path_before: list[tuple]) -> None:
    """Every upstream prompt of `exchange` shows exactly `path_before` + the client's
    non-system messages (see the module doc)."""
    assert exchange.upstream, f"memproxy made no upstream call for {exchange.body['messages']!r}"
    expected = path_before + exchange.client_messages
    for i, body in enumerate(exchange.upstream):
        got = visible(body["messages"])
        assert got == expected, (
            f"upstream call {i} for the client's request {exchange.client_messages!r}:\n"
            f"  shown   {got!r}\n  expected {expected!r}")
