"""`bench overhead --reply-words` is checked before any process starts (the fake upstream
would otherwise fail to start with a traceback in its log)."""

from __future__ import annotations

import pytest

from bench.overhead import build_parser


@pytest.mark.parametrize("value", ["200-300", "50", "1-1"])
def test_a_words_range_is_passed_on_as_given(value: str) -> None:
    assert build_parser().parse_args(["--reply-words", value]).reply_words == value


@pytest.mark.parametrize("value", ["300-200", "0-5", "a-b", "", "-5"])
def test_a_bad_words_range_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--reply-words", value])
    assert "MIN-MAX words" in capsys.readouterr().err
