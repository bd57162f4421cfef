"""Upstream failures as one exception type, in the OpenAI error shape, plus the retry policy.

Whatever went wrong upstream (an HTTP error status, a refused connection, a timeout, a broken
stream), the API layer gets an `UpstreamError` (defined with the rest of the tree in proxy/errors.py) whose
`.status` and `.body` it can return as they are: docs/design.md §3.4 says upstream errors keep their
status and message, and every error body must validate against the OpenAI `ErrorResponse`
schema (message/type strings, param/code string or null). Keys are never put into messages;
`redact` removes them from upstream text too.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ..errors import RETRYABLE_STATUSES, UpstreamError
from ..fastjson import dumps, loads  # request bodies and answers are on the hot path
from ..models.tool_support import says_no_tools

__all__ = [
    "RETRYABLE_STATUSES",
    "UpstreamError",
    "backoff_delay",
    "bad_json_body",
    "dumps",
    "error_from_body",
    "error_from_payload",
    "error_from_response",
    "error_from_transport",
    "loads",
    "parse_retry_after",
    "redact",
    "response_too_large",
    "stream_interrupted",
]

BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 8.0
RETRY_AFTER_CAP_S = 30.0
MAX_TEXT = 500

# Headers worth handing back to the client with the error; everything else (cookies, ...) stays.
_KEPT_HEADERS = ("retry-after", "retry-after-ms", "x-request-id")
_KEPT_PREFIXES = ("x-ratelimit-",)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret that occurs verbatim in `text`."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _str_or_none(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def _status_hint(error: Mapping[str, Any]) -> int | None:
    """An HTTP status carried inside an error object (vLLM and OpenRouter use numeric codes)."""
    for key in ("status", "status_code", "code"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            return value
    return None


def _error_object(payload: Any) -> Mapping[str, Any] | None:
    """The error object of an OpenAI body, or of the near-misses other servers send."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # {"error": "text"}
        return {"message": error}
    if isinstance(payload.get("message"), str) and (
        payload.get("object") == "error" or "type" in payload  # vLLM's older ErrorResponse
    ):
        return payload
    if isinstance(payload.get("detail"), str):  # FastAPI default errors
        return {"message": payload["detail"]}
    return None


def error_from_payload(
    status: int | None,
    payload: Any,
    *,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str | None] = (),
) -> UpstreamError | None:
    """Build the error for a decoded body, or None when the body carries no error object.

    Fields that already fit the schema are kept exactly; others are coerced to strings. With
    `status=None` (a mid-stream error event) the status comes from the error object, else 502.
    """
    error = _error_object(payload)
    if error is None:
        return None
    if status is None:
        status = _status_hint(error) or 502
    message = error.get("message")
    message = redact(message if isinstance(message, str) else str(message or ""), secrets)
    if not message:
        message = f"upstream returned HTTP {status}"
    kind = error.get("type")
    return UpstreamError(
        status,
        message,
        type=kind if isinstance(kind, str) and kind else "upstream_error",
        param=_str_or_none(error.get("param")),
        code=_str_or_none(error.get("code")),
        headers=_kept_headers(headers),
    )


def error_from_response(
    status: int,
    content: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    secrets: Iterable[str | None] = (),
) -> UpstreamError:
    """The error for a non-2xx upstream response (or a 2xx one whose body is unusable)."""
    secrets = tuple(secrets)
    try:
        payload = loads(content) if content else None
    except ValueError:
        payload = None
    error = error_from_payload(status, payload, headers=headers, secrets=secrets)
    if error is None:
        text = content[: MAX_TEXT * 4].decode("utf-8", "replace").strip()
        text = redact(text, secrets)[:MAX_TEXT]
        message = f"upstream returned HTTP {status}" + (f": {text}" if text else "")
        error = UpstreamError(status, message, headers=_kept_headers(headers))
    if error.retryable and says_no_tools(error.message):
        # llama.cpp refuses tools with a 500: the same request again is refused again, and
        # the turn's fallback to no tools (turn/tool_fallback.py) should not wait for retries
        error.retryable = False
    return error


def error_from_body(
    content: bytes, headers: Mapping[str, str], *, secrets: Iterable[str | None] = ()
) -> UpstreamError:
    """The error for a 2xx body that is not what was asked for: status from the body, else 502.

    OpenRouter, for one, reports some failures with status 200 and an `error` body.
    """
    try:
        payload = loads(content)
    except ValueError:
        payload = None
    error = error_from_payload(None, payload, headers=headers, secrets=secrets)
    if error is None:
        error = error_from_response(502, content, headers, secrets=secrets)
    error.retryable = False
    return error


def stream_interrupted(message: str) -> UpstreamError:
    return UpstreamError(502, message, code="stream_interrupted", retryable=False)


def response_too_large(limit: int) -> UpstreamError:
    """An answer over `[limits] max_upstream_response_bytes`, cut off while reading. Not
    retried and not sent to a fallback: the same request would most likely bring the same
    answer, and reading it again costs the same memory."""
    return UpstreamError(
        502,
        f"the upstream's answer is larger than this server accepts ({limit} bytes,"
        " [limits] max_upstream_response_bytes)",
        code="upstream_response_too_large",
        retryable=False,
        fallback=False,
    )


def bad_json_body(status: int, size: int) -> UpstreamError:
    """A 2xx answer whose body is not a JSON object. Its text is not quoted: it may be model
    output, which never goes into errors or logs."""
    return UpstreamError(
        502,
        f"the upstream answered HTTP {status} with a body that is not a JSON object ({size} bytes)",
        code="bad_upstream_response",
        retryable=False,
    )


def _kept_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _KEPT_HEADERS or lower.startswith(_KEPT_PREFIXES):
            kept[lower] = value
    return kept


def error_from_transport(exc: httpx.HTTPError, *, host: str) -> UpstreamError:
    """Map an httpx exception raised before or while reading a response.

    Refused/DNS/other network failures → 502 `upstream_unreachable` (or `upstream_disconnected`
    when an open connection broke); timeouts → 504 `upstream_timeout`. Only failures where the
    upstream cannot have done the work yet, or where retrying is what every SDK does (a dropped
    keep-alive connection), are `retryable`: a read timeout is not, the model may have answered.
    """
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        error = UpstreamError(
            504,
            f"timed out connecting to the upstream at {host}",
            code="upstream_timeout",
            retryable=True,
        )
    elif isinstance(exc, httpx.PoolTimeout):
        error = UpstreamError(
            504,
            "timed out waiting for a free upstream connection",
            code="upstream_timeout",
            retryable=False,
        )
    elif isinstance(exc, httpx.TimeoutException):
        error = UpstreamError(
            504, f"the upstream at {host} timed out", code="upstream_timeout", retryable=False
        )
    elif isinstance(exc, httpx.ConnectError):
        error = UpstreamError(
            502,
            f"could not connect to the upstream at {host}: {reason}",
            code="upstream_unreachable",
            retryable=True,
        )
    elif isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)):
        error = UpstreamError(
            502,
            f"the connection to the upstream at {host} broke: {reason}",
            code="upstream_disconnected",
            retryable=True,
        )
    elif isinstance(exc, httpx.DecodingError):
        error = UpstreamError(
            502,
            f"could not decode the upstream response: {reason}",
            code="bad_upstream_response",
            retryable=False,
        )
    else:
        error = UpstreamError(
            502,
            f"upstream request to {host} failed: {reason}",
            code="upstream_unreachable",
            retryable=False,
        )
    error.__cause__ = exc
    return error


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds asked for by `retry-after-ms` or `Retry-After` (seconds or HTTP date), or None."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff for retry number `attempt` (0-based): half fixed, half random."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2.0**attempt))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


def json_answer(status: int, content: bytes, headers: Mapping[str, str],
                secrets: tuple) -> dict[str, Any]:
    """A JSON call's answer as a dict, or the `UpstreamError` it stands for."""
    if not 200 <= status < 300:
        raise error_from_response(status, content, headers, secrets=secrets)
    try:
        payload = loads(content)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise bad_json_body(status, len(content))
    # Some gateways (OpenRouter) report failures with a 2xx status and an error body.
    if "error" in payload and "choices" not in payload and "data" not in payload:
        raise error_from_body(content, headers, secrets=secrets)
    return payload
