"""One streamed chat completion, read in two phases: up to the first token, then the rest.

The split is what makes streams safe to retry and to send to a fallback: until the first token
(a content, tool-call, refusal or reasoning delta; role-only chunks and keep-alive comments do
not count) nothing the client could see has arrived, so the attempt may still be abandoned;
after it, chunks are forwarded as they come and a failure can only end the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from proxy.upstream.errors import UpstreamError, response_too_large, stream_interrupted
from proxy.upstream.routing import Endpoint
from proxy.upstream.sse import SSEDecoder, decode_events

__all__ = ["OpenStream", "has_token", "text_size"]

LINE_SLACK = 64 * 1024  # one event's JSON around its text
_EMPTY: tuple[Any, ...] = (None, "", [], {})


def text_size(chunk: dict[str, Any]) -> int:
    """The characters of model output in a chunk: every string in its deltas (content,
    refusal, reasoning) and its tool calls' names and arguments."""
    size = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        for key, value in delta.items():
            if isinstance(value, str):
                size += len(value)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        for part in function.values():
                            if isinstance(part, str):
                                size += len(part)
    return size


def has_token(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries model output: any delta field but `role` with a value."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            for key, value in delta.items():
                if key != "role" and value not in _EMPTY:
                    return True
    return False


@dataclass
class OpenStream:
    """An upstream stream whose head (and first token, if any) has been read."""

    endpoint: Endpoint
    response: httpx.Response
    secrets: tuple[str | None, ...]
    # [limits] max_upstream_response_bytes: the most text of one answer (and the longest
    # unfinished SSE event) kept; None = no bound.
    limit: int | None = None
    byte_iter: AsyncIterator[bytes] = field(init=False)
    decoder: SSEDecoder = field(default_factory=SSEDecoder)
    chunks: list[dict[str, Any]] = field(default_factory=list)  # read in the first phase
    done: bool = False  # [DONE] already seen
    error: UpstreamError | None = None  # to raise once `chunks` have been delivered
    seen: int = 0
    text: int = 0  # characters of model output so far (content, reasoning, tool arguments)

    def __post_init__(self) -> None:
        self.byte_iter = self.response.aiter_bytes()

    async def aclose(self) -> None:
        try:
            await self.byte_iter.aclose()  # type: ignore[attr-defined]
        finally:
            await self.response.aclose()

    def _decode(self, raw: bytes | None) -> tuple[list[dict[str, Any]], bool, UpstreamError | None]:
        final = raw is None
        events = self.decoder.flush() if raw is None else self.decoder.feed(raw)
        chunks, done, error = decode_events(events, final=final, secrets=self.secrets)
        self.seen += len(chunks)
        if self.limit is not None:
            self.text += sum(map(text_size, chunks))
            # The text is what the turn keeps; a line that never ends is held by the decoder.
            if self.text > self.limit or self.decoder.buffered > self.limit + LINE_SLACK:
                return chunks, done, response_too_large(self.limit)
        if final and not done and error is None:
            error = stream_interrupted(
                f"the upstream stream ended without [DONE] after {self.seen} chunks"
            )
        return chunks, done, error

    async def read_to_first_token(self, drain: Callable[[], Awaitable[None]]) -> None:
        """Phase one: read until a token, [DONE] or the end. An error before any token is
        raised here (the attempt failed); one after it waits in `error` for its turn."""
        while True:
            raw = await anext(self.byte_iter, None)
            chunks, done, error = self._decode(raw)
            self.chunks += chunks
            token = any(has_token(c) for c in chunks)
            if error is not None:
                if not token:
                    raise error
                self.error = error
                return
            if done:
                self.done = True
                await drain()
                return
            if token:
                return

    async def rest(
        self,
        next_bytes: Callable[[], Awaitable[bytes | None]],
        drain: Callable[[], Awaitable[None]],
    ) -> AsyncIterator[dict[str, Any]]:
        """Phase two: the chunks of phase one, then the rest of the stream as it arrives."""
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error
        if self.done:
            return
        while True:
            raw = await next_bytes()
            chunks, done, error = self._decode(raw)
            for chunk in chunks:
                yield chunk
            if error is not None:
                raise error
            if done:
                if raw is not None:
                    await drain()
                return
