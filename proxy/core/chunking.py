"""Split a document into overlapping passages for archival memory (`memproxy load`).

Pure and deterministic, so its guarantees are checked by property tests:

- **coverage**: every character of the text lies in at least one chunk, and each chunk's text
  is exactly `text[start:end]` (nothing is rewritten or dropped);
- **bounded size**: no chunk is longer than `chunk_chars`;
- **overlap**: consecutive chunks share exactly `overlap` characters
  (`next.start == previous.end - overlap`), so a fact cut by a boundary is whole in one of them.

Where a chunk ends is chosen to keep related text together. Among the positions in the second
half of the window that can hold a chunk, the strongest boundary wins: before a Markdown heading,
then after a blank line (paragraph), after a line break, after the end of a sentence, after
whitespace. Only if the second half has none is the whole window searched, and only if the window
has none at all is the text cut mid-word at the size limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_CHUNK_CHARS = 1500
DEFAULT_OVERLAP = 200

# Each pattern marks a boundary at the END of its match (the position where a chunk may end).
_BOUNDARIES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n(?=#{1,6}[ \t])"),  # before a Markdown heading line
    re.compile(r"\n[ \t]*\n\s*"),  # after a blank line, with the blank run it starts
    re.compile(r"\n"),  # after a line break
    re.compile(r"[.!?。][\"')\]]*\s+"),  # after the end of a sentence and its spaces
    re.compile(r"\s+"),  # after whitespace
)


@dataclass(frozen=True)
class Chunk:
    """`text == document[start:end]`."""

    start: int
    end: int
    text: str


def _best_end(text: str, lo: int, hi: int) -> int | None:
    """The last end position in `[lo, hi]` made by the strongest boundary kind present."""
    if lo > hi:
        return None
    # A few characters past `hi` let the heading look-ahead see a heading that starts at `hi`.
    stop = min(hi + 8, len(text))
    for pattern in _BOUNDARIES:
        best = None
        for match in pattern.finditer(text, max(lo - 64, 0), stop):
            end = match.end()
            if lo <= end <= hi:
                best = end
        if best is not None:
            return best
    return None


def split_text(
    text: str, chunk_chars: int = DEFAULT_CHUNK_CHARS, overlap: int = DEFAULT_OVERLAP
) -> list[Chunk]:
    """Cut `text` into chunks of at most `chunk_chars` characters that overlap by `overlap`.

    Raises ValueError unless `chunk_chars >= 1` and `0 <= overlap < chunk_chars` (a chunk must
    advance past the part it shares with the previous one). An empty text gives no chunks.
    """
    if chunk_chars < 1:
        raise ValueError(f"chunk size must be at least 1 character, got {chunk_chars}")
    if overlap < 0 or overlap >= chunk_chars:
        raise ValueError(
            f"overlap must be at least 0 and less than the chunk size ({chunk_chars}), "
            f"got {overlap}"
        )
    chunks: list[Chunk] = []
    start = 0
    n = len(text)
    while start < n:
        limit = min(start + chunk_chars, n)
        if limit == n:
            end = n
        else:
            earliest = start + overlap + 1  # the next chunk must start after this one does
            half = max(earliest, start + chunk_chars // 2)
            end = _best_end(text, half, limit) or _best_end(text, earliest, limit) or limit
        chunks.append(Chunk(start, end, text[start:end]))
        if end == n:
            break
        start = end - overlap
    return chunks
