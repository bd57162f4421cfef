"""Every Responses and Conversations API answer a client receives, checked against the vendored
OpenAI description (tests/openapi_check.py) on its way to the client.

`SpecLog` makes httpx transports (sync for openai-python, async for the Agents SDK) that sit
under a real client: each answer to a `…/responses…` or `…/conversations…` request is validated
with the schema the OpenAI description gives that operation (`Response`, `ResponseItemList`,
`ConversationResource`, `ConversationItemList`, `ConversationItem`,
`DeletedConversationResource`; `ErrorResponse` for any error status), and each streamed event
(`text/event-stream`) against `ResponseStreamEvent`, as the client reads it. Streams are also
checked for what the schema cannot say: every `event:` line names the type its `data:` carries,
and `sequence_number`s increase strictly. Problems are collected (a client that swallows an
exception must not hide one) and raised by `assert_valid()`; `objects` and `streams` keep what
was checked so a test can assert that validation actually happened.

`validate_node_exchanges` does the same for the bodies a Node program recorded (tests/node).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.openapi_check import validate

# (method, path suffix, schema of a 200 JSON answer); None: the description gives none.
_ROUTES: list[tuple[str, re.Pattern[str], str | None]] = [
    (method, re.compile(pattern + r"$"), schema)
    for method, pattern, schema in [
        ("POST", r"/responses", "Response"),
        ("GET", r"/responses/[^/]+/input_items", "ResponseItemList"),
        ("POST", r"/responses/[^/]+/cancel", "Response"),
        ("GET", r"/responses/[^/]+", "Response"),
        ("DELETE", r"/responses/[^/]+", None),
        ("POST", r"/conversations", "ConversationResource"),
        ("POST", r"/conversations/[^/]+/items", "ConversationItemList"),
        ("GET", r"/conversations/[^/]+/items", "ConversationItemList"),
        ("GET", r"/conversations/[^/]+/items/[^/]+", "ConversationItem"),
        ("DELETE", r"/conversations/[^/]+/items/[^/]+", "ConversationResource"),
        ("GET", r"/conversations/[^/]+", "ConversationResource"),
        ("POST", r"/conversations/[^/]+", "ConversationResource"),
        ("DELETE", r"/conversations/[^/]+", "DeletedConversationResource"),
    ]
]
_WATCHED = re.compile(r"/(responses|conversations)(/|$)")


def schema_for(method: str, path: str) -> tuple[bool, str | None]:
    """(watched, schema): whether the path is a Responses/Conversations operation and the
    schema of its 200 JSON answer."""
    if not _WATCHED.search(path):
        return False, None
    for route_method, pattern, schema in _ROUTES:
        if route_method == method and pattern.search(path):
            return True, schema
    return True, None


@dataclass
class CheckedStream:
    """One event stream as the client received it."""

    method: str
    path: str
    query: str
    events: list[dict] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [e.get("type") for e in self.events]


class _SSE:
    """An incremental SSE parser validating each event of one stream."""

    def __init__(self, log: SpecLog, stream: CheckedStream) -> None:
        self.log = log
        self.stream = stream
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while True:
            match = re.search(rb"\r?\n\r?\n", self.buffer)
            if match is None:
                return
            frame, self.buffer = self.buffer[: match.start()], self.buffer[match.end():]
            self._frame(frame.decode())

    def end(self) -> None:
        if self.buffer.strip():
            self._frame(self.buffer.decode())
        self.buffer = b""

    def _frame(self, frame: str) -> None:
        name = None
        data: list[str] = []
        for line in frame.splitlines():
            if line.startswith(":") or not line:
                continue  # a comment (memproxy's step markers, keep-alives)
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        if not data:
            return
        where = f"{self.stream.method} {self.stream.path}"
        try:
            event = json.loads("\n".join(data))
        except ValueError:
            self.log.problem(f"{where}: a streamed event is not JSON: {data!r}")
            return
        self.log.check("ResponseStreamEvent", event, f"{where} event {len(self.stream.events)}")
        if name is not None and name != event.get("type"):
            self.log.problem(f"{where}: `event: {name}` carries data of type {event.get('type')!r}")
        numbers = [e.get("sequence_number") for e in self.stream.events]
        number = event.get("sequence_number")
        if numbers and isinstance(numbers[-1], int) and (
                not isinstance(number, int) or number <= numbers[-1]):
            self.log.problem(f"{where}: sequence_number {number!r} after {numbers[-1]!r}")
        self.stream.events.append(event)


class SpecLog:
    """Transports that validate Responses/Conversations answers against the description."""

    def __init__(self) -> None:
        self.objects: list[tuple[str, str, Any]] = []  # (schema, where, object)
        self.streams: list[CheckedStream] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()

    # -- recording -----------------------------------------------------------------------------

    def problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)

    def check(self, schema: str, obj: Any, where: str) -> None:
        with self._lock:
            self.objects.append((schema, where, obj))
        try:
            validate(schema, _as_described(schema, obj))
        except AssertionError as exc:
            self.problem(f"{where}: {exc}")

    def check_json(self, method: str, path: str, status: int, raw: bytes) -> None:
        watched, schema = schema_for(method, path)
        if not watched:
            return
        where = f"{method} {path} -> {status}"
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            self.problem(f"{where}: the body is not JSON: {raw[:200]!r}")
            return
        if status >= 400:
            self.check("ErrorResponse", obj, where)
        elif schema is not None:
            self.check(schema, obj, where)

    def open_stream(self, request: httpx.Request) -> _SSE:
        stream = CheckedStream(request.method, request.url.path, request.url.query.decode())
        with self._lock:
            self.streams.append(stream)
        return _SSE(self, stream)

    def assert_valid(self) -> None:
        """Raise if any answer or event did not validate (all problems listed)."""
        if self.problems:
            raise AssertionError(
                f"{len(self.problems)} answers/events do not follow the OpenAI description:\n"
                + "\n".join(self.problems[:20]))

    def checked(self, schema: str) -> list[Any]:
        """The objects validated against `schema` so far."""
        return [obj for name, _, obj in self.objects if name == schema]

    # -- transports ----------------------------------------------------------------------------

    def transport(self, inner: httpx.BaseTransport | None = None) -> httpx.BaseTransport:
        return _Transport(self, inner or httpx.HTTPTransport())

    def async_transport(self, inner: httpx.AsyncBaseTransport | None = None
                        ) -> httpx.AsyncBaseTransport:
        return _AsyncTransport(self, inner or httpx.AsyncHTTPTransport())

    def http_client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(transport=self.transport(), **kw)

    def async_http_client(self, **kw: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.async_transport(), **kw)


_LISTS = ("ConversationItemList", "ResponseItemList")


def _as_described(schema: str, obj: Any) -> Any:
    """`obj`, except that an EMPTY item list's `first_id`/`last_id` of null count as the
    strings the description requires: a list with no items has no first or last id to give,
    and memproxy answers null there; a non-empty list must name its ids."""
    if (schema in _LISTS and isinstance(obj, dict) and obj.get("data") == []
            and obj.get("first_id") is None and obj.get("last_id") is None):
        return {**obj, "first_id": "", "last_id": ""}
    return obj


def _decoded(response: httpx.Response, raw: bytes) -> bytes:
    """`raw` after the content encoding the headers declare."""
    return httpx.Response(response.status_code, headers=response.headers,
                          stream=httpx.ByteStream(raw)).read()


def _is_sse(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


class _CheckedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, parser: _SSE) -> None:
        self.inner = inner
        self.parser = parser

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.parser.feed(chunk)
            yield chunk

    def close(self) -> None:
        self.parser.end()
        self.inner.close()


class _AsyncCheckedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, parser: _SSE) -> None:
        self.inner = inner
        self.parser = parser

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.parser.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        self.parser.end()
        await self.inner.aclose()


class _Transport(httpx.BaseTransport):
    def __init__(self, log: SpecLog, inner: httpx.BaseTransport) -> None:
        self.log = log
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        watched, _ = schema_for(request.method, request.url.path)
        if not watched:
            return response
        if _is_sse(response) and response.status_code == 200:
            stream = _CheckedStream(response.stream, self.log.open_stream(request))  # type: ignore[arg-type]
            return httpx.Response(response.status_code, headers=response.headers,
                                  stream=stream, extensions=response.extensions)
        raw = b"".join(response.stream)  # type: ignore[union-attr]
        response.stream.close()  # type: ignore[union-attr]
        self.log.check_json(request.method, request.url.path, response.status_code,
                            _decoded(response, raw))
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=httpx.ByteStream(raw), extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, log: SpecLog, inner: httpx.AsyncBaseTransport) -> None:
        self.log = log
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        watched, _ = schema_for(request.method, request.url.path)
        if not watched:
            return response
        if _is_sse(response) and response.status_code == 200:
            stream = _AsyncCheckedStream(response.stream, self.log.open_stream(request))  # type: ignore[arg-type]
            return httpx.Response(response.status_code, headers=response.headers,
                                  stream=stream, extensions=response.extensions)
        raw = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        await response.stream.aclose()  # type: ignore[union-attr]
        self.log.check_json(request.method, request.url.path, response.status_code,
                            _decoded(response, raw))
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=httpx.ByteStream(raw), extensions=response.extensions)

    async def aclose(self) -> None:
        await self.inner.aclose()


def validate_node_exchanges(log: SpecLog, exchanges: list[dict[str, Any]]) -> None:
    """Validate what a Node program recorded: each `{method, path, status, contentType,
    body}` (the raw answer text) as the transports above would have."""
    for exchange in exchanges:
        method, path = exchange["method"], exchange["path"]
        status, body = exchange["status"], exchange["body"].encode()
        if exchange.get("contentType", "").startswith("text/event-stream") and status == 200:
            request = httpx.Request(method, f"http://node{path}")
            parser = log.open_stream(request)
            parser.feed(body)
            parser.end()
        else:
            log.check_json(method, path, status, body)
