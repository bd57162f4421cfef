"""Keys never reach a client through a relayed response (pass-through, streamed or not).

An upstream, or a gateway in front of it, may quote the key it received in an error ("Incorrect
API key provided: sk-…"). Relayed byte for byte, that hands memproxy's upstream key (or a
fallback's) to whoever holds any tenant key. So every key memproxy may send upstream is masked
in what a pass-through relays: header values and body bytes.

A mask has the secret's own length (`sk-` then asterisks), so a `Content-Length` stays true and
everything else stays byte-for-byte what the upstream sent. A stream is masked as it flows: a
chunk is held back only by the few bytes at its end that could begin a secret, so an SSE event
(which ends in a blank line) is never delayed.

Compressed bodies cannot be masked as bytes; the caller decodes error bodies (the ones that
quote keys) before masking them (`api/passthrough.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

MIN_SECRET_LENGTH = 8  # shorter values would mask ordinary text; real keys are far longer
KEPT_PREFIX = 3  # "sk-": says what was masked without revealing the key


def _mask_of(secret: bytes) -> bytes:
    kept = KEPT_PREFIX if len(secret) > 4 * KEPT_PREFIX else 0
    return secret[:kept] + b"*" * (len(secret) - kept)


class Masker:
    """Replaces each of `secrets` by a mask of the same length."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        unique = {s.encode() for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        # Longest first: a key that contains another is masked whole.
        self._secrets = sorted(unique, key=len, reverse=True)
        self._masks = [_mask_of(s) for s in self._secrets]

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def mask(self, data: bytes) -> bytes:
        for secret, mask in zip(self._secrets, self._masks, strict=True):
            if secret in data:
                data = data.replace(secret, mask)
        return data

    def mask_text(self, text: str) -> str:
        encoded = text.encode("utf-8", "surrogateescape")
        masked = self.mask(encoded)
        return text if masked is encoded else masked.decode("utf-8", "surrogateescape")

    def mask_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {name: self.mask_text(value) for name, value in headers.items()}

    def _partial(self, data: bytes) -> int:
        """How many bytes at the end of `data` could be the beginning of a secret (a whole
        shorter secret too, when it begins a longer one). Only the places in the tail where a
        secret's first byte stands are tried: most chunks (an SSE event ends in a blank line)
        have none, so this costs a `find` or two per chunk."""
        longest = 0
        for secret in self._secrets:
            tail_start = max(0, len(data) - len(secret) + 1)
            start = data.find(secret[:1], tail_start)
            while start != -1 and len(data) - start > longest:
                if secret.startswith(data[start:]):
                    longest = len(data) - start
                    break
                start = data.find(secret[:1], start + 1)
        return longest

    def _safe_cut(self, data: bytes) -> int:
        """Where `data` may be split: before any tail that could begin a secret, and never
        inside a secret (masks are applied to what comes before the cut on its own)."""
        cut = len(data) - self._partial(data)
        moved = True
        while moved:
            moved = False
            for secret in self._secrets:
                start = data.find(secret, max(0, cut - len(secret) + 1))
                if start != -1 and start < cut:  # this occurrence spans the cut
                    cut, moved = start, True
        return cut

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks` masked, secrets split across chunk boundaries included."""
        held = b""
        async for chunk in chunks:
            data = held + chunk
            cut = self._safe_cut(data)
            held = data[cut:]
            if cut:
                yield self.mask(data[:cut])
        if held:
            yield self.mask(held)
