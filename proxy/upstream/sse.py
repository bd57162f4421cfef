"""Incremental Server-Sent Events parser (the WHATWG `text/event-stream` rules).

Network reads split an SSE stream anywhere: inside a line, between `\\r` and `\\n`, inside a
multi-byte UTF-8 sequence. `SSEDecoder.feed` accepts such arbitrary byte chunks and returns the
events completed so far.

Why bytes and not `httpx.Response.aiter_lines()`: httpx splits lines with `str.splitlines`, which
also breaks on U+2028, U+0085, form feed and friends. Those may appear raw inside JSON strings,
so a line-based reader would corrupt chunks that contain them. SSE only knows `\\r\\n`, `\\n` and
`\\r`. `feed_line` is still offered for callers that already have correctly split lines.

This is the streaming hot path, so the work per chunk is a handful of C-level calls (`rfind`,
one `decode`, one `split`) rather than a per-byte Python loop, and a chunk without any line
terminator is only appended to a list (no quadratic re-scanning of long partial lines).

`decode_events` then turns events into OpenAI chat-completion chunks: `[DONE]`, error events and
the quirks of servers that do not quite follow the format.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from proxy.upstream.errors import UpstreamError, error_from_payload, loads, stream_interrupted

__all__ = ["SSEDecoder", "SSEEvent", "aiter_sse", "decode_events"]


@dataclass(slots=True, frozen=True)
class SSEEvent:
    """One dispatched event. `event` is None when the stream gave no `event:` field."""

    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Turns byte chunks into `SSEEvent`s; keep one instance per stream.

    Comments (`: keep-alive`), `retry:` and unknown fields are ignored; `event:` and `id:` are
    recorded on the event. An event is dispatched at a blank line, as the spec says, and only
    when it has at least one `data:` line.
    """

    __slots__ = ("_parts", "_skip_lf", "_data", "_event", "_last_id", "_started", "buffered")

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # bytes of the current, unterminated line
        self._skip_lf = False  # previous chunk ended with "\r": a leading "\n" belongs to it
        self._data: list[str] = []
        self._event: str | None = None
        self._last_id: str | None = None
        self._started = False  # the leading BOM, if any, has been handled
        # Bytes of the unfinished line plus characters of the unfinished event's data: what
        # the decoder holds, for callers that bound it (an event may never end).
        self.buffered = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume the next piece of the stream; return the events it completed (often [])."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if end < 0:
            if chunk:
                self._parts.append(chunk)
                self.buffered += len(chunk)
            return []
        if self._parts:
            self._parts.append(chunk[: end + 1])
            complete = b"".join(self._parts)
            self._parts.clear()
        else:
            complete = chunk[: end + 1] if end + 1 < len(chunk) else chunk
        if end + 1 < len(chunk):
            self._parts.append(chunk[end + 1 :])
        elif complete[-1:] == b"\r":
            self._skip_lf = True
        # Terminators are ASCII, and UTF-8 continuation bytes never are, so `complete` always
        # ends on a character boundary and decodes on its own.
        text = complete.decode("utf-8", "replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # `text` ends with a terminator: the last element is ""
        events: list[SSEEvent] = []
        for line in lines:
            event = self.feed_line(line)
            if event is not None:
                events.append(event)
        self.buffered = sum(map(len, self._parts)) + sum(map(len, self._data))
        return events

    def feed_line(self, line: str) -> SSEEvent | None:
        """Process one line without its terminator; return an event at a blank line."""
        if not self._started:
            self._started = True
            if line.startswith("\ufeff"):
                line = line[1:]
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        colon = line.find(":")
        if colon < 0:
            field, value = line, ""
        else:
            field = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == " " else line[colon + 1 :]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        return None

    def flush(self) -> list[SSEEvent]:
        """End of stream: finish a last unterminated line and a last event without blank line.

        The spec would drop such an incomplete event; servers that end with `data: [DONE]` and
        no blank line are common enough that being lenient is the better trade. A truncated
        JSON payload dispatched here still fails to parse, so the caller notices the cut.
        """
        events: list[SSEEvent] = []
        if self._parts:
            tail = b"".join(self._parts)
            self._parts.clear()
            event = self.feed_line(tail.decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
        self._skip_lf = False
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = None
            return None
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = SSEEvent(data, self._event, self._last_id)
        self._data = []
        self._event = None
        return event


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Events of a byte stream such as `response.aiter_bytes()`, including a lenient flush."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event


# -- OpenAI chat-completion chunks ----------------------------------------------------------


def _bad_chunk(message: str) -> UpstreamError:
    return UpstreamError(502, message, code="bad_upstream_response", retryable=False)


def decode_events(
    events: Iterable[SSEEvent], *, final: bool, secrets: Iterable[str | None] = ()
) -> tuple[list[dict[str, Any]], bool, UpstreamError | None]:
    """Decode a batch of SSE events: (chunks, saw [DONE], error to raise after the chunks).

    The error is returned rather than raised so that chunks decoded before it in the same
    batch still reach the consumer first. Servers that end events with a single newline
    produce one event whose data is several JSON lines (maybe ending in [DONE]); those are
    accepted one per line. Undecodable data in the event flushed at the end of the stream
    (`final`) means the stream was cut inside a chunk.
    """
    chunks: list[dict[str, Any]] = []
    for event in events:
        data = event.data
        if data == "[DONE]":
            return chunks, True, None
        try:
            chunks.append(_object(loads(data), secrets))
            continue
        except UpstreamError as error:
            return chunks, False, error
        except ValueError:
            pass
        for line in data.split("\n"):
            if not line:
                continue
            if line == "[DONE]":
                return chunks, True, None
            try:
                chunks.append(_object(loads(line), secrets))
            except UpstreamError as error:
                return chunks, False, error
            except ValueError:
                if final:
                    return chunks, False, stream_interrupted("the upstream stream ended mid-chunk")
                return (
                    chunks,
                    False,
                    _bad_chunk("the upstream sent a stream chunk that is not JSON"),
                )
    return chunks, False, None


def _object(payload: Any, secrets: Iterable[str | None]) -> dict[str, Any]:
    """`payload` if it is an ordinary chunk; raise the error a chunk carries (an error event)."""
    if not isinstance(payload, dict):
        raise _bad_chunk("the upstream sent a stream chunk that is not a JSON object")
    if payload.get("error") is not None:
        error = error_from_payload(None, payload, secrets=secrets)
        if error is not None:
            error.retryable = False
            raise error
    return payload
