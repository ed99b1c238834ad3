"""Durations as people write them in policies (``90s``, ``1h30m``, ``14d``, ``PT15M``): read to the
exact second, never longer than written, never past the 100-year bound, and printed back in the
shortest form. A duration read too long lengthens every lifetime that uses it."""

from __future__ import annotations

import pytest

from ttlpolicy.durations import MAX_DURATION, format_duration, parse_duration

ZEROS = "0" * 40


@pytest.mark.parametrize("text, seconds", [
    ("0", 0), ("0s", 0), ("1", 1), ("90", 90), ("1s", 1), ("1m", 60), ("1h", 3600), ("1d", 86400),
    ("1w", 604800), ("2w3d4h5m6s", 2 * 604800 + 3 * 86400 + 4 * 3600 + 5 * 60 + 6), ("1h30m", 5400),
    ("PT1S", 1), ("PT1M", 60), ("PT1H", 3600), ("P1D", 86400), ("P1W", 604800),
    ("P2W3DT4H5M6S", 2 * 604800 + 3 * 86400 + 4 * 3600 + 5 * 60 + 6), ("P1DT12H", 129600),
    (" 15m ", 900), ("\t90\n", 90),
    # leading zeros are only zeros, however many (the schema's \d+ accepts them too)
    (ZEROS + "90", 90), (ZEROS + "90s", 90), (f"{ZEROS}1h{ZEROS}30m", 5400), (f"PT{ZEROS}15M", 900),
    (ZEROS, 0),
])
def test_a_duration_is_read_to_the_exact_second(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", [
    str(MAX_DURATION), f"{MAX_DURATION}s", f"{MAX_DURATION // 60}m", "36500d", "P36500D", "5214w2d",
    MAX_DURATION, ZEROS + str(MAX_DURATION),
])
def test_exactly_one_hundred_years_is_allowed(text: str | int) -> None:
    assert parse_duration(text) == MAX_DURATION


@pytest.mark.parametrize("text", [
    str(MAX_DURATION + 1), f"{MAX_DURATION + 1}s", "36501d", "P36501D", "5214w3d", "36500d1s", MAX_DURATION + 1,
    "1" + "0" * 10, "1" + "0" * 10 + "s", "1" + "0" * 30 + "d", "1" + "0" * 31 + "d", "9" * 5000 + "s", "9" * 5000,
])
def test_longer_than_one_hundred_years_is_refused(text: str | int) -> None:
    shown = repr(text) if isinstance(text, int) or len(text) <= 32 else repr(text[:32] + "...")
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f"duration {shown} is longer than 100 years (36500d)"


@pytest.mark.parametrize("value", [
    "", " ", "P", "PT", "P1DT", "PT1H1D", "1h2d", "15 m", "1.5h", "-5m", "P1M", "P1Y", "1M", "1H", "pt15m", "x",
    "15m30", "²", 1.5, None, [90],
])
def test_anything_else_is_not_a_duration(value: object) -> None:
    with pytest.raises(ValueError, match="^not a duration: "):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_number_of_seconds(value: bool) -> None:
    with pytest.raises(ValueError, match=f"^not a duration: {value}$"):
        parse_duration(value)


def test_a_negative_number_is_refused_and_zero_is_not() -> None:
    assert parse_duration(0) == 0
    with pytest.raises(ValueError, match="^a duration cannot be negative: -1$"):
        parse_duration(-1)


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (-5, "0s"), (1, "1s"), (59, "59s"), (60, "1m"), (61, "1m1s"), (3600, "1h"), (5400, "1h30m"),
    (86400, "1d"), (14 * 86400, "14d"), (90061, "1d1h1m1s"), (MAX_DURATION, "36500d"),
])
def test_format_is_the_shortest_human_form_in_days_at_most(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    if seconds >= 0:
        assert parse_duration(text) == seconds
