"""Plain-text tables and small value formatters for terminal output (pure functions).

Tables are for people; scripts use `--json`. Cells are made single-line (newlines and tabs
become spaces) and cut to `max_width` with an ellipsis, so one row is always one line and the
columns line up whatever the data holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

ELLIPSIS = "…"


def one_line(value: object, max_width: int | None = None) -> str:
    """`value` as text on one line, cut to `max_width` characters (ellipsis included)."""
    text = "" if value is None else str(value)
    text = " ".join(text.split()) if any(c in text for c in "\r\n\t\v\f") else text
    if max_width is not None and len(text) > max_width:
        return text[: max(max_width - 1, 0)] + ELLIPSIS if max_width > 0 else ""
    return text


def _numeric(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    max_width: int = 60,
    empty: str = "(none)",
) -> str:
    """Columns padded to their widest cell; numeric columns right-aligned.

    A column is numeric when every non-empty cell in it is an int or a float. Returns the
    header line, then one line per row, or the header and `empty` when there are no rows.
    Lines carry no trailing spaces.
    """
    width = len(headers)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"row {i} has {len(row)} cells, expected {width}")
    cells = [[one_line(c, max_width) for c in row] for row in rows]
    numeric = [
        all(_numeric(row[i]) or row[i] in (None, "") for row in rows) and bool(rows)
        for i in range(width)
    ]
    widths = [
        max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i])
            for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    lines = [line([one_line(h) for h in headers])]
    lines += [line(r) for r in cells]
    if not rows:
        lines.append(empty)
    return "\n".join(lines)


def format_time(timestamp: float | None) -> str:
    """Unix seconds as local `YYYY-MM-DD HH:MM`; empty for None."""
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(timestamp)))


def format_count(value: object) -> str:
    """An integer with thousands separators; other values as text."""
    if _numeric(value):
        return f"{value:,}"
    return "" if value is None else str(value)


def relative_scores(scores: Sequence[float | None]) -> list[str]:
    """Search scores as a share of the best one, `100%` for the best: raw scores have no
    common scale (bm25 on SQLite, ts_rank on Postgres, fused scores with embeddings) and print
    as `1.12e-06`; the share reads the same on every backend. `--json` keeps the raw score.
    Scores that cannot be compared that way (none positive) print with three decimals."""
    known = [float(s) for s in scores if s is not None]
    best = max(known, default=0.0)
    out = []
    for score in scores:
        if score is None:
            out.append("")
        elif best > 0 and score >= 0:
            out.append(f"{round(100 * float(score) / best)}%")
        else:
            out.append(f"{float(score):.3f}")
    return out
