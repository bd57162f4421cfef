"""A small client for an OpenAI-compatible `POST {base_url}/embeddings`.

Its own module (not proxy/upstream/) because its needs differ: no streaming, no retries of its
own (the background worker retries later; a search query must answer within a second or two
or do without), and a result that is a matrix, not a message. The conventions are the upstream
client's: one pooled `httpx.AsyncClient`, explicit timeouts, OpenAI-shaped errors mapped to
one exception type whose message never carries a key or any input text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from proxy import __version__

USER_AGENT = f"memproxy/{__version__}"


class EmbeddingError(Exception):
    """A failed embeddings call. `status` is the HTTP status (None for transport failures);
    `code` is machine-readable; the message is safe to log (no key, no input text)."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def bad_input(self) -> bool:
        """The request itself was rejected (e.g. a text too long): sending it again as it is
        cannot succeed, but a smaller batch might."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in (
            401, 403, 404, 408, 409, 429)


def _error_from_response(response: httpx.Response) -> EmbeddingError:
    """The OpenAI error's type and code, not its message: providers quote the input in some
    messages, and the message ends up in logs."""
    kind, code = "", None
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            kind = str(error.get("type") or "")
            code = error.get("code")
        elif isinstance(error, str):
            kind = "error"
    except (ValueError, AttributeError):
        pass
    detail = ", ".join(x for x in (kind, str(code) if code else "") if x)
    return EmbeddingError(
        f"embeddings request failed with HTTP {response.status_code}"
        + (f" ({detail})" if detail else ""),
        status=response.status_code, code=str(code or kind or "http_error"))


def _vector(value: Any, index: int) -> np.ndarray:
    if isinstance(value, str):  # encoding_format "base64": little-endian float32
        try:
            return np.frombuffer(base64.b64decode(value), dtype="<f4").astype(np.float32)
        except ValueError as exc:
            raise EmbeddingError(f"embedding {index} is not valid base64",
                                 code="bad_response") from exc
    if not isinstance(value, list) or not value:
        raise EmbeddingError(f"embedding {index} is not a list of numbers", code="bad_response")
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"embedding {index} is not a list of numbers",
                             code="bad_response") from exc


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so a dot product is a cosine."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return (matrix / norms).astype(np.float32, copy=False)


def parse_embeddings(payload: Any, count: int) -> np.ndarray:
    """The (count, dim) float32 matrix of an embeddings response, rows in input order and
    normalized. Raises EmbeddingError when the response does not have that shape."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise EmbeddingError(f"expected {count} embeddings in the response",
                             code="bad_response")
    rows: list[np.ndarray | None] = [None] * count
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise EmbeddingError("an embedding entry is not an object", code="bad_response")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
            raise EmbeddingError("embedding indexes do not match the input",
                                 code="bad_response")
        rows[index] = _vector(item.get("embedding"), index)
    dims = {r.shape[0] for r in rows if r is not None}
    if len(dims) != 1:
        raise EmbeddingError("embeddings of different lengths in one response",
                             code="bad_response")
    matrix = np.vstack(rows)  # type: ignore[arg-type]
    if not np.isfinite(matrix).all():
        raise EmbeddingError("the response contains non-finite numbers", code="bad_response")
    return normalize_rows(matrix)


class EmbeddingClient:
    """Calls `{base_url}/embeddings`. Create once, `await aclose()` at shutdown."""

    def __init__(self, base_url: str, api_key: str | None, model: str, *,
                 dimensions: int | None = None, timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.dimensions = dimensions
        self._key = api_key
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=10,
                              keepalive_expiry=30.0)
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport,
                                       follow_redirects=False)
        self._http.headers["User-Agent"] = USER_AGENT

    async def aclose(self) -> None:
        await self._http.aclose()

    def _body(self, texts: Sequence[str], input_type: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": list(texts),
                                "encoding_format": "float"}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        if input_type is not None:
            body["input_type"] = input_type
        return body

    async def embed(self, texts: Sequence[str], *, timeout_s: float | None = None,
                    input_type: str | None = None) -> np.ndarray:
        """The normalized (len(texts), dim) float32 matrix of `texts`, in order. `input_type`
        is sent as is when given (providers that embed queries and documents differently)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        try:
            response = await self._http.post(
                self.url, content=json.dumps(self._body(texts, input_type), ensure_ascii=False).encode(),
                headers=headers, **extra)
        except httpx.TimeoutException as exc:
            raise EmbeddingError("the embeddings endpoint timed out", code="timeout") from exc
        except httpx.HTTPError as exc:
            raise EmbeddingError(
                f"could not reach the embeddings endpoint ({type(exc).__name__})",
                code="unreachable") from exc
        if not 200 <= response.status_code < 300:
            raise _error_from_response(response)
        try:
            payload = response.json()
        except ValueError as exc:
            raise EmbeddingError("the embeddings response is not JSON",
                                 status=response.status_code, code="bad_response") from exc
        return parse_embeddings(payload, len(texts))
