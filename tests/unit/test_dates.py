"""One reading of dates for every search window, and one way of showing them (core/dates.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.core.dates import END_OF, parse_date, stamp


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
