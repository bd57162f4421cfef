"""Dates as people and models write them, and as the model reads them back.

Searches take a date window (`start_date`/`end_date` of `conversation_search`, of the REST
search and of `memproxy messages search`) and every caller must read the same text the same
way, so one parser: an ISO date or date-time (no zone means UTC), a month `2024-05` or a year
`2024` (the whole of it), or epoch seconds. An end that names a day, month or year includes
all of it: "until 2024-05" means up to the last moment of May.

Dates named in a search query (`named_periods`): "What did Maria donate in December 2023?"
asks about what was said in that month, so the search ranks the messages of that period higher
(core/ranking.py `in_periods`; docs/search.md, "Dates"). Only unambiguous dates are read: a day
with its year ("May 3, 2023", "3 May 2023", "2023-05-03") or a month with its year ("December
2023", "2023-12"), in English month names; a bare month ("in June") or a bare year names too
much or too little to rank by.

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

_MONTHS = {name.lower(): number for names in (calendar.month_name, calendar.month_abbr)
           for number, name in enumerate(names) if name}
_MONTHS["sept"] = 9
_MONTH_NAME = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_ORDINAL = r"(\d{1,2})(?:st|nd|rd|th)?"
_NAMED_DAY = (
    re.compile(rf"\b{_MONTH_NAME}\s+{_ORDINAL},?\s+(\d{{4}})\b", re.I),  # May 3, 2023
    re.compile(rf"\b{_ORDINAL}\s+(?:of\s+)?{_MONTH_NAME},?\s+(\d{{4}})\b", re.I),  # 3 May 2023
)
_NAMED_MONTH = re.compile(rf"\b{_MONTH_NAME},?\s+(\d{{4}})\b", re.I)  # May 2023
_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_ISO_MONTH = re.compile(r"\b(\d{4})-(\d{2})\b(?!-\d)")

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



def named_periods(text: str) -> list[tuple[float, float]]:
    """The days and months `text` names with their year, as [start, end) epoch seconds in UTC,
    in the order found; impossible dates (February 30) are skipped. A month named as part of a
    day ("May 3, 2023") is that day only."""
    found: list[tuple[int, int, int, int]] = []  # (position, year, month, day or 0)
    days: list[tuple[int, int]] = []
    for match in _NAMED_DAY[0].finditer(text):
        found.append((match.start(), int(match[3]), _MONTHS[match[1].lower()], int(match[2])))
        days.append(match.span())
    for match in _NAMED_DAY[1].finditer(text):
        found.append((match.start(), int(match[3]), _MONTHS[match[2].lower()], int(match[1])))
        days.append(match.span())
    for match in _ISO_DAY.finditer(text):
        found.append((match.start(), int(match[1]), int(match[2]), int(match[3])))
    for match in _NAMED_MONTH.finditer(text):
        if not any(a <= match.start() < b for a, b in days):
            found.append((match.start(), int(match[2]), _MONTHS[match[1].lower()], 0))
    for match in _ISO_MONTH.finditer(text):
        found.append((match.start(), int(match[1]), int(match[2]), 0))
    periods: list[tuple[float, float]] = []
    for _, year, month, day in sorted(found):
        try:
            start = datetime(year, month, day or 1, tzinfo=UTC).timestamp()
            length = 1 if day else calendar.monthrange(year, month)[1]
        except ValueError:
            continue
        if (period := (start, start + length * 86400)) not in periods:
            periods.append(period)
    return periods
