"""A minimal, fast, zero-latency OpenAI-compatible upstream for benchmarks.

A raw ASGI app (no framework, no tiktoken): response bodies are precomputed at import (only the
usage numbers are spliced in per request), so a request costs reading its body and writing a
few bytes. It serves

- `POST /v1/chat/completions` (also `/chat/completions`): a canned `chat.completion` with plain
  assistant text and a usage object (`prompt_tokens` ≈ request bytes / 5, so that memproxy's
  token calibration sees plausible numbers); with `"stream": true`, a few `chat.completion.chunk`
  events, a usage chunk when `stream_options.include_usage` is set, and `data: [DONE]`;
- `GET /v1/models` (also `/models`): one model, `bench-model`, with a context window
  (`--context-window`, default 128,000);
- `GET /stats`: request counters, so a benchmark can report how big the prompts were that a
  proxy sent upstream (`POST /stats/reset` zeroes them).

The body is parsed (orjson) only when it holds `"stream": true` (a substring scan decides),
which keeps a 1,000-message non-streaming prompt cheap. Run it as its own process:

    python -m bench.fake_upstream --port 9000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

MODEL = "bench-model"
CREATED = int(time.time())
REPLY_TEXT = (
    "Sure. Here is a short answer from the benchmark upstream: it does no work at all, so "
    "every millisecond you measure is spent somewhere else."
)
STREAM_PIECES = ["Sure. ", "Here is a short answer ", "from the benchmark upstream: ",
                 "it does no work at all."]
COMPLETION_TOKENS = 30

# The completion with a placeholder for usage, filled per request (see _completion).
_COMPLETION_TEMPLATE = orjson.dumps({
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": CREATED,
    "model": MODEL,
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": REPLY_TEXT, "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 999_999_999, "completion_tokens": COMPLETION_TOKENS,
              "total_tokens": 888_888_888},
    "system_fingerprint": "fp_bench",
})
_HEAD, _REST = _COMPLETION_TEMPLATE.split(b"999999999")
_MIDDLE, _TAIL = _REST.split(b"888888888")


def prompt_tokens(body: bytes) -> int:
    """A plausible `usage.prompt_tokens` without a tokenizer: ~5 bytes of request per token (within a few % of memproxy's own count
    for the benchmark's text, so its token calibration stays near 1)."""
    return max(1, len(body) // 5)


def _completion(tokens: int) -> bytes:
    total = tokens + COMPLETION_TOKENS
    return b"".join((_HEAD, str(tokens).encode(), _MIDDLE, str(total).encode(), _TAIL))


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None,
                     "finish_reason": finish_reason}],
    }) + b"\n\n"


STREAM_HEAD = [_chunk({"role": "assistant", "content": ""})]
STREAM_HEAD += [_chunk({"content": piece}) for piece in STREAM_PIECES]
STREAM_FINISH = _chunk({}, "stop")


def _stream_usage(tokens: int) -> bytes:
    usage = {"prompt_tokens": tokens, "completion_tokens": COMPLETION_TOKENS,
             "total_tokens": tokens + COMPLETION_TOKENS}
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
        "model": MODEL, "system_fingerprint": "fp_bench", "choices": [], "usage": usage,
    }) + b"\n\n"


STREAM_DONE = b"data: [DONE]\n\n"

DEFAULT_CONTEXT_WINDOW = 128_000  # what /v1/models advertises for MODEL (gpt-4o's window)


def models_body(context_window: int) -> bytes:
    return orjson.dumps({"object": "list", "data": [
        {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench",
         "context_window": context_window, "max_model_len": context_window},
    ]})


MODELS = models_body(DEFAULT_CONTEXT_WINDOW)
NOT_FOUND = orjson.dumps({"error": {"message": "not found", "type": "invalid_request_error",
                                    "param": None, "code": "not_found"}})

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Stats:
    requests = 0
    chat_requests = 0
    body_bytes = 0
    max_body_bytes = 0
    last_body_bytes = 0

    @classmethod
    def as_dict(cls) -> dict[str, int]:
        return {k: getattr(cls, k) for k in
                ("requests", "chat_requests", "body_bytes", "max_body_bytes", "last_body_bytes")}

    @classmethod
    def reset(cls) -> None:
        cls.requests = cls.chat_requests = cls.body_bytes = 0
        cls.max_body_bytes = cls.last_body_bytes = 0


async def _read_body(receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _mentions_stream_true(body: bytes) -> bool:
    """True when the JSON text has a `"stream": true` member (cheap scan, no parse).

    A quoted `"stream"` followed by a colon is a key (a string value would be followed by `,`,
    `]` or `}`; quotes inside strings are escaped). Only such bodies are parsed, so a large
    non-streaming prompt costs one substring search instead of a JSON parse.
    """
    start = body.find(b'"stream"')
    while start >= 0:
        rest = body[start + 8:start + 40].lstrip()
        if rest.startswith(b":") and rest[1:].lstrip().startswith(b"true"):
            return True
        start = body.find(b'"stream"', start + 8)
    return False


async def _send_bytes(send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _chat(receive, send) -> None:
    body = await _read_body(receive)
    Stats.chat_requests += 1
    Stats.body_bytes += len(body)
    Stats.last_body_bytes = len(body)
    if len(body) > Stats.max_body_bytes:
        Stats.max_body_bytes = len(body)
    stream = False
    include_usage = False
    if _mentions_stream_true(body):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            stream = parsed.get("stream") is True
            options = parsed.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
    if not stream:
        await _send_bytes(send, 200, _JSON_HEADERS, _completion(prompt_tokens(body)))
        return
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    for chunk in STREAM_HEAD:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    tail = STREAM_FINISH + (_stream_usage(prompt_tokens(body)) if include_usage else b"")
    tail += STREAM_DONE
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    Stats.requests += 1
    path: str = scope["path"]
    method: str = scope["method"]
    if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
        await _chat(receive, send)
    elif method == "GET" and path in ("/v1/models", "/models"):
        await _send_bytes(send, 200, _JSON_HEADERS, MODELS)
    elif path == "/stats":
        if method == "POST":
            Stats.reset()
        await _send_bytes(send, 200, _JSON_HEADERS, orjson.dumps(Stats.as_dict()))
    else:
        await _read_body(receive)
        await _send_bytes(send, 404, _JSON_HEADERS, NOT_FOUND)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream",
                                     description="zero-latency OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--context-window", type=int, default=DEFAULT_CONTEXT_WINDOW,
                        help=f"window /v1/models advertises for {MODEL!r} "
                             f"(default {DEFAULT_CONTEXT_WINDOW:,})")
    args = parser.parse_args(argv)
    global MODELS
    MODELS = models_body(args.context_window)
    uvicorn.run(app, host=args.host, port=args.port, http="httptools", loop="uvloop",
                log_level="warning", access_log=False, lifespan="off")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
