"""One reading of dates for every search window, and one way of showing them (core/dates.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.core.dates import END_OF, named_periods, parse_date, stamp


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "start", "end"), [
    ("2024-05-31", ts(2024, 5, 31), ts(2024, 6, 1) - END_OF),
    (" 2024-05-31 ", ts(2024, 5, 31), ts(2024, 6, 1) - END_OF),
    ("2024-02", ts(2024, 2, 1), ts(2024, 3, 1) - END_OF),  # a leap February
    ("2023-12", ts(2023, 12, 1), ts(2024, 1, 1) - END_OF),
    ("2024", ts(2024, 1, 1), ts(2025, 1, 1) - END_OF),
    ("2023", ts(2023, 1, 1), ts(2024, 1, 1) - END_OF),
    ("2024-05-31T10:20:30", ts(2024, 5, 31, 10, 20, 30), ts(2024, 5, 31, 10, 20, 30)),
    ("2024-05-31T10:20:30Z", ts(2024, 5, 31, 10, 20, 30), ts(2024, 5, 31, 10, 20, 30)),
    ("2024-05-31 12:00+02:00", ts(2024, 5, 31, 10), ts(2024, 5, 31, 10)),
    ("1717150000", 1717150000.0, 1717150000.0),
    ("1717150000.25", 1717150000.25, 1717150000.25),
])
def test_accepted_forms(text: str, start: float, end: float) -> None:
    assert parse_date(text, end=False) == start
    assert parse_date(text, end=True) == end


@pytest.mark.parametrize("text", ["", "soon", "2024-13", "2024-02-30", "2024-00", "0000",
                                  "nan", "inf", "1e400", "1" * 30, "2024-05-31T25:00",
                                  "x" * 5000])
def test_everything_else_is_a_value_error_saying_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD") as info:
        parse_date(text, end=False)
    assert len(str(info.value)) < 200


def test_the_model_reads_the_weekday() -> None:
    assert stamp(ts(2025, 12, 6, 5, 46, 59)) == "Sat 2025-12-06 05:46 UTC"
    assert stamp(ts(2023, 5, 8, 13, 56)) == "Mon 2023-05-08 13:56 UTC"


DAY = 86400


@pytest.mark.parametrize(("query", "periods"), [
    ("What painting did Melanie show on October 13, 2023?", [(ts(2023, 10, 13), ts(2023, 10, 14))]),
    ("What did Gina find on 1 February, 2023?", [(ts(2023, 2, 1), ts(2023, 2, 2))]),
    ("news shared on the 3rd of June 2023", [(ts(2023, 6, 3), ts(2023, 6, 4))]),
    ("Sept. 2nd 2024 and Jan 2025", [(ts(2024, 9, 2), ts(2024, 9, 3)),
                                      (ts(2025, 1, 1), ts(2025, 2, 1))]),
    ("What setback did Melanie face in October 2023?", [(ts(2023, 10, 1), ts(2023, 11, 1))]),
    ("what happened in february, 2024", [(ts(2024, 2, 1), ts(2024, 3, 1))]),  # leap month
    ("logs of 2024-05-31 and 2024-06", [(ts(2024, 5, 31), ts(2024, 6, 1)),
                                        (ts(2024, 6, 1), ts(2024, 7, 1))]),
    ("May 3, 2023 and again May 3, 2023", [(ts(2023, 5, 3), ts(2023, 5, 4))]),  # once
])
def test_dates_a_query_names(query: str, periods: list) -> None:
    assert named_periods(query) == periods
    assert all(end - start in (DAY, 28 * DAY, 29 * DAY, 30 * DAY, 31 * DAY)
               for start, end in periods)


@pytest.mark.parametrize("query", [
    "When did Melanie go camping in June?",  # no year: which June?
    "How many times has she gone to the beach in 2023?",  # a whole year ranks nothing
    "you may 2 or 3 times", "February 30, 2023", "2023-13", "call me at 555-2023-12-99",
    "", "in the mayonnaise 2023 recipe",
])
def test_no_period_without_a_whole_date(query: str) -> None:
    assert named_periods(query) == []
