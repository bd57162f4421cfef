"""Dates as people and models write them, and as the model reads them back.

Searches take a date window (`start_date`/`end_date` of `conversation_search`, of the REST
search and of `memproxy messages search`) and every caller must read the same text the same
way, so one parser: an ISO date or date-time (no zone means UTC), a month `2024-05` or a year
`2024` (the whole of it), or epoch seconds. An end that names a day, month or year includes
all of it: "until 2024-05" means up to the last moment of May.

What the model reads: every date it is shown (search results, automatically recalled
snippets) goes through `stamp`, one format with the weekday, because questions are asked in
those terms ("what did we do last Saturday?") and a model should not have to work out the
weekday of an ISO date itself.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from datetime import UTC, datetime

_YEAR = re.compile(r"\d{4}")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
END_OF = 0.001  # an end date's last included instant: the next period's start minus this


def stamp(ts: float) -> str:
    """`Sat 2025-12-06 05:46 UTC`: how every date is shown to the model."""
    return time.strftime("%a %Y-%m-%d %H:%M UTC", time.gmtime(ts))


def parse_date(value: str, *, end: bool) -> float:
    """Epoch seconds for `value`; with `end`, the last instant of the day, month or year it
    names. ValueError for anything else (the message says what is accepted)."""
    text = value.strip()
    try:
        if _YEAR.fullmatch(text):
            year = int(text)
            days = 366 if calendar.isleap(year) else 365
            return datetime(year, 1, 1, tzinfo=UTC).timestamp() + (
                days * 86400 - END_OF if end else 0)
        month = _MONTH.fullmatch(text)
        if month:
            year, number = int(month[1]), int(month[2])
            first = datetime(year, number, 1, tzinfo=UTC)
            days = calendar.monthrange(year, number)[1]
            return first.timestamp() + (days * 86400 - END_OF if end else 0)
        if _NUMBER.fullmatch(text):
            seconds = float(text)
            if not math.isfinite(seconds) or abs(seconds) > 253402300799:  # 9999-12-31
                raise ValueError
            return seconds
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(
            f"{shown!r} is not a date: use YYYY-MM-DD, an ISO date-time, YYYY-MM, YYYY or"
            " epoch seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ts = parsed.timestamp()
    if end and _DAY.fullmatch(text):  # a bare date includes the whole day
        ts += 86400 - END_OF
    return ts

