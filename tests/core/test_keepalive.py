"""Ollama's keep_alive values: seconds, Go durations, negative for forever."""

from __future__ import annotations

import math

import pytest

from corral.core.keepalive import parse_keep_alive


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (300, 300.0),
        (2.5, 2.5),
        (0, 0.0),
        ("0", 0.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("45s", 45.0),
        (" 5m ", 300.0),
    ],
)
def test_numbers_are_seconds_and_strings_go_durations(value: str | float, seconds: float) -> None:
    assert parse_keep_alive(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [-1, -0.5, "-1m", "-1h"])
def test_a_negative_keep_alive_means_forever(value: str | float) -> None:
    assert parse_keep_alive(value) == math.inf


@pytest.mark.parametrize("value", ["", "10", "ten minutes", "5 m", "1d", "m5", "--5m"])
def test_a_string_that_is_not_a_duration_is_refused_with_the_value_named(value: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_keep_alive(value)


def test_a_boolean_or_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_keep_alive(True)
    with pytest.raises(ValueError, match="NaN"):
        parse_keep_alive(float("nan"))
