"""The misbehaviours the scripted upstream (upstream.py) can be told to show once, and the
OpenAI error bodies it answers with."""

from __future__ import annotations

from dataclasses import dataclass, field

from .scripted_model import Reply


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class Fault:
    """A one-shot misbehaviour for `FakeUpstream.push`. Build it with the class methods.

    Stream-only kinds on a non-stream request: `truncate` drops the connection and
    `stream_error` answers HTTP 500 with the error body.
    """

    # "http" | "non_json" | "drop" | "delay" | "truncate" | "stream_error"
    # | "stall" | "invalid_json" | "no_choices" (the resilience faults, docs/resilience.md)
    kind: str
    status: int = 500
    body: dict | None = None
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    then: Reply | Fault | None = None
    after_chunks: int = 2
    abort: bool = False

    @classmethod
    def http(
        cls,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        return cls(
            "http",
            status=status,
            body=error_body(message, type, code, param),
            headers=dict(headers or {}),
        )

    @classmethod
    def context_length_exceeded(cls, window: int = 8192, requested: int = 9000) -> Fault:
        return cls("http", status=400, body=_context_error(window, requested))

    @classmethod
    def model_not_found(cls, model: str = "gpt-4o-mini") -> Fault:
        return cls("http", status=404, body=_model_error(model))

    @classmethod
    def rate_limited(cls, retry_after: float = 1) -> Fault:
        return cls.http(
            429,
            "Rate limit reached for requests.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": f"{retry_after:g}"},
        )

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls.http(
            status, "The server had an error while processing your request.", type="server_error"
        )

    @classmethod
    def non_json(cls, status: int = 500, text: str = "<html>Internal Server Error</html>") -> Fault:
        return cls("non_json", status=status, text=text)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without a response body (headers may already be sent)."""
        return cls("drop")

    @classmethod
    def delay(cls, seconds: float, then: Reply | Fault | None = None) -> Fault:
        """Wait, then answer `then` (default: the responder's answer)."""
        return cls("delay", delay_s=seconds, then=then)

    @classmethod
    def truncate_stream(cls, after_chunks: int = 2, *, abort: bool = False) -> Fault:
        """Send `after_chunks` chunks, then end the body without `[DONE]` (or abort it)."""
        return cls("truncate", after_chunks=after_chunks, abort=abort)

    @classmethod
    def stream_error(
        cls,
        after_chunks: int = 2,
        message: str = "The model stopped unexpectedly.",
        *,
        type: str = "server_error",
        code: str | None = None,
    ) -> Fault:
        """Send `after_chunks` chunks, then `data: {"error": ...}` and `data: [DONE]`."""
        return cls(
            "stream_error",
            status=500,
            body=error_body(message, type, code),
            after_chunks=after_chunks,
        )

    @classmethod
    def stall(cls, seconds: float, after_chunks: int = 1) -> Fault:
        """Answer 200 at once but bring nothing for `seconds`, keeping the connection busy
        (so no read timeout fires), then the responder's answer. Stream: `after_chunks` chunks
        (1 = only the role chunk), then `: keep-alive` comments. Non-stream: spaces before the
        JSON (valid JSON whitespace, as some gateways send)."""
        return cls("stall", status=200, delay_s=seconds, after_chunks=after_chunks)

    @classmethod
    def invalid_json(cls) -> Fault:
        """HTTP 200 whose body is cut-off JSON (stream: one `data:` event that is not JSON)."""
        return cls("invalid_json", status=200)

    @classmethod
    def huge(cls, size: int, *, tool_call: bool = False) -> Fault:
        """A 200 answer of about `size` bytes of text (or of one tool call's arguments),
        generated as it is sent so the fake itself holds little: a stream of 64 KiB deltas,
        or a chunked JSON completion without Content-Length."""
        return cls("huge", status=200, after_chunks=size, abort=tool_call)

    @classmethod
    def no_choices(cls) -> Fault:
        """A well-formed completion (or stream) with `choices: []`: no answer at all."""
        return cls("no_choices", status=200)


def _context_error(window: int, requested: int) -> dict:
    return error_body(
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {requested} tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )


def _model_error(model: str) -> dict:
    return error_body(
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )
