"""Durations written for people (``90s``, ``15m``, ``1h30m``, ``14d``) and ISO 8601 (``PT15M``).

Everything inside ttlpolicy counts whole seconds; these helpers are the only place that
reads or writes the human forms.
"""

from __future__ import annotations

import re

# The longest duration a policy may hold: 100 years. Longer is never a token lifetime, and the bound
# keeps every `instant + duration` the evaluator computes inside the calendar (see
# context.MAX_EPOCH).
MAX_DURATION = 36_500 * 86_400
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_HUMAN = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ISO = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")

# Shared with the JSON Schema so that editors and the loader agree on what a duration is.
# The lookaheads refuse the empty string, "P" and "PT", whose parts are all optional.
DURATION_PATTERN = (r"^(?:\d+|(?=\d)(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?"
                    r"|P(?=\d|T\d)(?:\d+W)?(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+S)?)?)$")

# A rate limit's rate, "20 per 1h": a count, "per", and a duration (rate_limits in the schema).
RATE_PATTERN = r"^\s*[0-9]+\s+per\s+" + DURATION_PATTERN[1:-1] + r"\s*$"


def parse_duration(value: str | int) -> int:
    """Return the number of seconds in ``value``.

    >>> parse_duration("1h30m"), parse_duration("PT15M"), parse_duration(90)
    (5400, 900, 90)

    Raises ``ValueError`` for anything else (negative numbers, fractions, ``P1M`` months,
    which have no fixed length).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        return _bounded(value, value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    text = value.strip()
    if text.isdecimal():
        return _bounded(_count(text, value), value)
    match = _HUMAN.match(text) if text[:1] != "P" else _ISO.match(text)
    if not match or not any(match.groups()):
        raise ValueError(f"not a duration: {value!r} (write e.g. 90s, 15m, 1h30m, 14d or PT15M)")
    weeks, days, hours, minutes, seconds = (_count(g, value) if g else 0 for g in match.groups())
    return _bounded(weeks * 604800 + days * 86400 + hours * 3600 + minutes * 60 + seconds, value)


def _count(digits: str, written: object) -> int:
    """A count of units as written, leading zeros and all. A count with more significant digits
    than MAX_DURATION is longer than it in any unit, and int() of thousands of digits is slow."""
    significant = digits.lstrip("0")
    if len(significant) > len(str(MAX_DURATION)):
        raise _too_long(written)
    return int(significant or "0")


def _bounded(seconds: int, written: object) -> int:
    if seconds > MAX_DURATION:
        raise _too_long(written)
    return seconds


def _too_long(written: object) -> ValueError:
    shown = written if not isinstance(written, str) or len(written) <= 32 else written[:32] + "..."
    return ValueError(f"duration {shown!r} is longer than 100 years (36500d)")


def format_duration(seconds: int) -> str:
    """The shortest human form: ``format_duration(5400) == "1h30m"``; ``0`` is ``"0s"``."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        if unit == "w":
            continue  # "14d" reads better than "2w" for token lifetimes
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
