"""CEL as the language definition says, in the subset a lifetime policy uses.

Cases are written from cel-spec's ``doc/langdef.md`` (sections named in each group), not copied
from its conformance files. Each runs on the native backend's closures and again as a boolean
condition -- ``(EXPR) == EXPECTED`` -- which goes through the generated-code path, so both
answer the same. Where cel-python (the reference parser's interpreter) answers differently,
its answer is recorded in ``CELPY_DIFFERS`` and checked, so the record cannot go stale.

The rule that matters most in a security policy: never a value where CEL requires an error.
"""

from __future__ import annotations

import datetime
from typing import Any, NamedTuple

import pytest
from celpy.celparser import CELParser

from ttlpolicy.cel.native import CELEvalError, UnsupportedExpression, compile_expression
from ttlpolicy.cel.reference import compile_reference

UTC = datetime.timezone.utc


class Err(NamedTuple):
    """An evaluation error whose message contains ``needle``."""

    needle: str


def _run(text: str) -> Any:
    return compile_expression(CELParser().parse(text))({})


# ---------------------------------------------------------------------------------- Overflow
# langdef "Overflow": arithmetic beyond int64/uint64 is an error; double -> int conversions are
# limited to the OPEN range (minInt, maxInt); the same for every arithmetic result, not only
# literals.
OVERFLOW: list[tuple[str, Any]] = [
    ("9223372036854775807 + 1", Err("overflow")),
    ("-9223372036854775808 - 1", Err("overflow")),
    ("-9223372036854775808", -(2**63)),
    ("-(-9223372036854775808)", Err("overflow")),
    ("9223372036854775807 * 2", Err("overflow")),
    ("-9223372036854775808 / -1", Err("overflow")),
    ("-9223372036854775808 % -1", Err("overflow")),
    ("9223372036854775808", Err("invalid literal")),
    ("0u - 1u", Err("overflow")),
    ("18446744073709551615u + 1u", Err("overflow")),
    ("int(-9223372036854775808.0)", Err("overflow")),
    ("int(9223372036854775807.0)", Err("overflow")),
    ("int(-9223372036854774784.0)", -9223372036854774784),
    ("int(9223372036854774784.0)", 9223372036854774784),
    ("int(1e19)", Err("overflow")),
    ("int(-1.9)", -1),
    ("uint(-1.0)", Err("overflow")),
    ("uint(-0.5)", 0),
    ("uint(18446744073709551615.0)", Err("overflow")),
    ("int(\"9223372036854775808\")", Err("overflow")),
    ("int(\"-9223372036854775808\")", -(2**63)),
    ("uint(\"18446744073709551616\")", Err("overflow")),
    ("uint(-1)", Err("overflow")),
    ("1 / 0", Err("division by zero")),
    ("1 % 0", Err("modulus by zero")),
]

# ------------------------------------------------------------------- Timestamps and durations
# langdef "Overflow" and "Timestamp and Duration": durations are int64 nanoseconds (about +-292
# years), timestamps run from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, both with
# nanosecond precision; every result outside is an error.
TIME: list[tuple[str, Any]] = [
    ("timestamp(\"9999-12-31T23:59:59.999999999Z\") + duration(\"1ns\")", Err("out of range")),
    ("timestamp(\"0001-01-01T00:00:00Z\") - duration(\"1ns\")", Err("out of range")),
    ("timestamp(\"0001-01-01T00:00:00Z\") + duration(\"-1ns\")", Err("out of range")),
    ("duration(\"1ns\") + timestamp(\"9999-12-31T23:59:59.999999999Z\")", Err("out of range")),
    ("timestamp(\"9999-12-31T23:59:59Z\") + duration(\"1s\")", Err("out of range")),
    ("timestamp(\"0000-01-01T00:00:00Z\")", Err("out of range")),
    ("timestamp(\"10000-01-01T00:00:00Z\")", Err("out of range")),
    ("timestamp(\"0001-01-01T00:30:00+01:00\")", Err("out of range")),
    ("timestamp(-62135596801)", Err("out of range")),
    ("timestamp(253402300800)", Err("out of range")),
    ("timestamp(253402300799) == timestamp(\"9999-12-31T23:59:59Z\")", True),
    ("timestamp(0) == timestamp(\"1970-01-01T00:00:00Z\")", True),
    ("timestamp(\"9999-12-31T23:59:59Z\") - timestamp(\"0001-01-01T00:00:00Z\")", Err("out of range")),
    ("timestamp(\"2262-04-11T23:47:16.854775807Z\") - timestamp(\"1970-01-01T00:00:00Z\")"
     " == duration(\"9223372036.854775807s\")", True),
    ("timestamp(\"2262-04-11T23:47:16.854775808Z\") - timestamp(\"1970-01-01T00:00:00Z\")",
     Err("out of range")),
    ("duration(\"9223372036.854775807s\") + duration(\"1ns\")", Err("out of range")),
    ("duration(\"-9223372036.854775808s\") - duration(\"1ns\")", Err("out of range")),
    ("-duration(\"-9223372036.854775808s\")", Err("out of range")),
    ("duration(\"320000000000s\")", Err("out of range")),
    ("duration(\"2562047h\") + duration(\"1h\")", Err("out of range")),
    # nanosecond precision
    ("timestamp(\"2024-01-01T00:00:00.000000001Z\") > timestamp(\"2024-01-01T00:00:00Z\")", True),
    ("timestamp(\"2024-01-01T00:00:00.000000001Z\") == timestamp(\"2024-01-01T00:00:00Z\")", False),
    ("timestamp(\"2024-01-01T00:00:00Z\") + duration(\"1ns\") - timestamp(\"2024-01-01T00:00:00Z\")"
     " == duration(\"1ns\")", True),
    ("duration(\"1ns\") > duration(\"0s\")", True),
    ("string(timestamp(\"2023-01-01T00:00:00.123456789Z\"))", "2023-01-01T00:00:00.123456789Z"),
    ("string(timestamp(\"2023-01-01T00:00:00.500Z\"))", "2023-01-01T00:00:00.5Z"),
    ("string(timestamp(\"2023-01-01T01:00:00+01:00\"))", "2023-01-01T00:00:00Z"),
    ("string(timestamp(\"9999-12-31T23:59:59.999999999Z\"))", "9999-12-31T23:59:59.999999999Z"),
    ("string(duration(\"1ns\"))", "0.000000001s"),
    ("string(duration(\"-1.5s\"))", "-1.5s"),
    ("string(duration(\"1h1m\"))", "3660s"),
    ("timestamp(\"2009-02-13T23:31:20.123456789Z\").getMilliseconds()", 123),
    ("duration(\"123.321456789s\").getMilliseconds()", 321),
    ("duration(\"-1.5s\").getMilliseconds()", -500),
    ("duration(\"3730s\").getMinutes()", 62),
    ("duration(\"-3730s\").getMinutes()", -62),
    ("duration(\"10000s\").getHours()", 2),
    ("int(timestamp(\"1969-12-31T23:59:59.5Z\"))", -1),
    ("int(timestamp(\"2004-09-16T23:59:59Z\"))", 1095379199),
    # RFC 3339, exactly
    ("timestamp(\"2020-01-01\")", Err("RFC 3339")),
    ("timestamp(\"2020-01-01T00:00:00\")", Err("RFC 3339")),
    ("timestamp(\"2020-02-30T00:00:00Z\")", Err("no such date")),
    ("timestamp(\"2020-01-01T24:00:00Z\")", Err("time of day")),
    ("timestamp(\"2020-01-01t00:00:00z\") == timestamp(\"2020-01-01T00:00:00Z\")", True),
    # Go duration syntax: no days
    ("duration(\"1d\")", Err("conversion")),
    ("duration(\"1.5h\") == duration(\"90m\")", True),
    ("duration(\"1h30m15.5s\") == duration(\"5415500ms\")", True),
    ("duration(\"-1m\") < duration(\"0\")", True),
    ("duration(\"\")", Err("conversion")),
    ("duration(\"h\")", Err("conversion")),
]

# -------------------------------------------------------------------------- String literals
# langdef "String and Bytes Values": every escape the definition lists, and nothing else.
STRINGS: list[tuple[str, Any]] = [
    ("\"\\?\"", "?"),
    ("\"\\`\"", "`"),
    ("\"\\\"\\'\\\\\"", "\"'\\"),
    ("\"\\a\\b\\f\\n\\r\\t\\v\"", "\a\b\f\n\r\t\v"),
    ("\"\\x4a\\x4B\\X4c\\X4D\"", "JKLM"),
    ("\"\\u01aB\\U0001F600\"", "\u01ab\U0001f600"),
    ("\"\\101\\377\"", "A\u00ff"),
    ("\"\"\"two\nlines\"\"\"", "two\nlines"),
    ("'''two\nlines'''", "two\nlines"),
    ("r\"\\n\\x41\"", "\\n\\x41"),
    ("R'''a\\\nb'''", "a\\\nb"),
    ("b\"\\303\\277\" == b\"\u00ff\"", True),
    ("size(b\"\\xff\\X00\")", 2),
    ("size(\"\\xff\")", 1),
]

# Escapes the definition does not allow are refused when the policy is compiled (lint), with
# the position of the backslash.
BAD_LITERALS: list[tuple[str, int, int, str]] = [
    ("\"\\q\"", 1, 2, "unknown escape \\q"),
    ("\"ok\" + \"\\x4\"", 1, 9, "exactly 2 hexadecimal"),
    ("\"\\uD800\"", 1, 2, "not a Unicode scalar value"),
    ("\"\\U00110000\"", 1, 2, "not a Unicode scalar value"),
    ("\"\\400\"", 1, 2, "octal"),
    ("\"\\08\"", 1, 2, "octal"),
    ("b\"\\u0041\"", 1, 3, "bytes literal"),
    ("'''line one\nand \\z'''", 2, 5, "unknown escape \\z"),
]

# ------------------------------------------------------------------------------ Conversions
# langdef "Standard Definitions" (bool, timestamp) and the conversion tests' vocabulary.
CONVERSIONS: list[tuple[str, Any]] = [
    ("bool(\"1\")", True), ("bool(\"0\")", False), ("bool(\"t\")", True), ("bool(\"f\")", False),
    ("bool(\"TRUE\")", True), ("bool(\"False\")", False), ("bool(\"TrUe\")", Err("conversion")),
    ("bool(\"yes\")", Err("conversion")), ("bool(1)", Err("no such overload")),
    ("timestamp(1000000000) == timestamp(\"2001-09-09T01:46:40Z\")", True),
    ("timestamp(timestamp(1)) == timestamp(1)", True),
    ("timestamp(1.0)", Err("no such overload")),
    ("double(\"1e400\")", Err("out of range")), ("double(\"-1e400\")", Err("out of range")),
    ("double(\"1e-400\")", 0.0), ("double(\"1.7976931348623157e308\")", 1.7976931348623157e308),
    ("string(true)", "true"),
]

# --------------------------------------------------------------------------------- Equality
# langdef "Equality": heterogeneous at run time -- numbers on one number line, values of other
# kinds unequal rather than an error -- inside lists and maps too.
EQUALITY: list[tuple[str, Any]] = [
    ("[1] == [1.0]", True),
    ("[1, 2] == [1.0, 2u]", True),
    ("[1] == [1.5]", False),
    ("[1, \"a\"] == [1.0, \"a\"]", True),
    ("{\"a\": 1, \"b\": \"x\"} == {\"a\": 1.0, \"b\": \"x\"}", True),
    ("{\"a\": 1, \"b\": \"x\"} == {\"a\": 1.0, \"b\": 2}", False),
    ("{1: \"x\"} == {1u: \"x\"}", True),
    ("{true: 1} == {1: 1}", False),
    ("1 == 1.0", True),
    ("2u == 2.0", True),
    ("true == 1", False),
    ("null == 0", False),
    ("\"1\" == 1", False),
    ("[1] == [\"1\"]", False),
    ("1.0 in [1, 2]", True),
    ("2u in [1, 2]", True),
    ("\"1\" in [1, 2]", False),
    ("1 < 1.5", True),
    ("2u > 1.5", True),
    ("-1 < 0u", True),
    ("1 < \"a\"", Err("no such overload")),
    ("true < 1", Err("no such overload")),
]

# ------------------------------------------------------------------------------ Arithmetic
# langdef "Overflow" and the operator table: int and uint results are range-checked at both ends
# (the ends themselves are values), integer division truncates toward zero and the remainder
# takes the dividend's sign (as Go); double division follows IEEE 754; no mixing of kinds.
ARITHMETIC: list[tuple[str, Any]] = [
    ("-9223372036854775807 - 1", -(2**63)),
    ("9223372036854775806 - (-1)", 2**63 - 1),
    ("4611686018427387904 * -2", -(2**63)),
    ("18446744073709551614u + 1u", 2**64 - 1),
    ("1u - 1u", 0),
    ("2u * 3u", 6),
    ("4294967296u * 4294967296u", Err("uint64 overflow")),
    ("18446744073709551615u / 1u", 2**64 - 1),
    ("7u % 3u", 1),
    ("5u / 0u", Err("division by zero")),
    ("5u % 0u", Err("modulus by zero")),
    ("7 / -2", -3),
    ("-7 / -2", 3),
    ("-8 / 2", -4),
    ("1 / 2", 0),
    ("-1 / 2", 0),
    ("0 / -5", 0),
    ("7 % -2", 1),
    ("-7 % -2", -1),
    ("7 % -1", 0),
    ("-9223372036854775808 % 2", 0),
    ("-9223372036854775808 / 2", -(2**62)),
    ("1.5 * 2.0", 3.0),
    ("1.5 - 0.25", 1.25),
    ("-(0.5 + 1.0)", -1.5),
    ("1.0 / 0.0 == double(\"inf\")", True),
    ("-1.0 / 0.0 == double(\"-inf\")", True),
    ("1.0 / -0.0 == double(\"-inf\")", True),
    ("-1.0 / -0.0 == double(\"inf\")", True),
    ("0.0 / 0.0 != 0.0 / 0.0", True),  # NaN: unequal to itself
    ("double(\"nan\") / 0.0 != 0.0", True),
    ("1 * 1.0", Err("no such overload")),
    ("1 - duration(\"1s\")", Err("no such overload")),
    ("duration(\"1s\") - timestamp(0)", Err("no such overload")),
]

# -------------------------------------------------------------------------------- Ordering
# langdef "Ordering": <, <=, >, >= on numbers (across int, uint and double at run time), strings,
# bytes, bools, timestamps and durations; NaN is ordered with nothing; anything else is an error.
ORDERING: list[tuple[str, Any]] = [
    ("1 <= 1.0", True),
    ("2 <= 1.5", False),
    ("1u >= 1", True),
    ("2 >= 1.5", True),
    ("1 >= 2u", False),
    ("2 > 1u", True),
    ("1.5 > 2", False),
    ("1 < double(\"nan\")", False),
    ("1 <= double(\"nan\")", False),
    ("double(\"nan\") >= 1", False),
    ("double(\"nan\") > 1", False),
    ("1 == double(\"nan\")", False),
    ("duration(\"1s\") <= duration(\"1s\")", True),
    ("duration(\"2s\") <= duration(\"1s\")", False),
    ("timestamp(2) >= timestamp(2)", True),
    ("timestamp(1) >= timestamp(2)", False),
    ("b\"a\" <= b\"b\"", True),
    ("true >= false", True),
    ("1 != 1.0", False),
    ("[1] != [1.0]", False),
    ("[1, 2] == [1]", False),
    ("{\"a\": 1} == {\"b\": 1}", False),
    ("\"a\" <= 1", Err("no such overload")),
    ("[1] >= [1]", Err("no such overload")),
]

# ------------------------------------------------------------------------------ Membership
# langdef "in": list membership and map KEY membership, with run-time heterogeneous equality.
MEMBERSHIP: list[tuple[str, Any]] = [
    ("\"b\" in {\"a\": 1}", False),
    ("\"a\" in {\"a\": 1}", True),
    ("1.0 in {1: \"x\"}", True),
    ("1u in {1: \"x\"}", True),
    ("true in {1: \"x\"}", False),
    ("[1] in {\"a\": 1}", False),
    ("\"x\" in {1: \"x\"}", False),
    ("1 in \"1\"", Err("no such overload")),
    # ... and indexing finds what membership finds: a key or a position by the number it equals
    ("{1u: 1.0, 2: 2.0, 3u: 3.0}[3.0]", 3.0),
    ("{1u: 1.0, 2: 2.0, 3u: 3.0}[2u]", 2.0),
    ("{1u: 1.0, 2: 2.0, 3u: 3.0}[3.1]", Err("no such key")),
    ("{true: 1}[1.0]", Err("no such key")),
    ("[7, 8, 9][0.0]", 7),
    ("[7, 8, 9][2u]", 9),
    ("[7, 8, 9][0.1]", Err("not a whole number")),
    ("[7, 8, 9][3.0]", Err("index out of range")),
    ("[7, 8, 9][-1.0]", Err("index out of range")),
    ("[7, 8, 9][1e300]", Err("index out of range")),
    ("[7, 8, 9][0.0 / 0.0]", Err("not a whole number")),
]

# -------------------------------------------------------------------- Timestamp accessors
# langdef "List of Standard Definitions" and "Timezones": getFullYear ... getMilliseconds of a
# timestamp in UTC or in a zone (an IANA name or a fixed offset +HH:MM / -HH:MM), zero-based
# except getDate; of a duration (without a zone): the whole duration in the unit, truncated,
# except getMilliseconds (the milliseconds part). 2023-12-31 is a Sunday.
_T = "timestamp(\"2023-12-31T23:30:45.678901234Z\")"
_END = "timestamp(\"9999-12-31T23:59:59.999999999Z\")"
_START = "timestamp(\"0001-01-01T00:00:00Z\")"
ACCESSORS: list[tuple[str, Any]] = [
    (f"{_T}.getFullYear()", 2023),
    (f"{_T}.getFullYear(\"+01:00\")", 2024),
    (f"{_T}.getMonth()", 11),
    (f"{_T}.getMonth(\"+01:00\")", 0),
    (f"{_T}.getDayOfYear()", 364),
    (f"{_T}.getDayOfYear(\"+01:00\")", 0),
    (f"{_T}.getDayOfMonth()", 30),
    (f"{_T}.getDate()", 31),
    (f"{_T}.getDate(\"+01:00\")", 1),
    (f"{_T}.getDayOfWeek()", 0),
    (f"{_T}.getDayOfWeek(\"Europe/Paris\")", 1),
    (f"{_T}.getHours()", 23),
    (f"{_T}.getHours(\"Europe/Paris\")", 0),
    (f"{_T}.getHours(\"-05:30\")", 18),
    (f"{_T}.getHours(\"America/St_Johns\")", 20),
    (f"{_T}.getMinutes()", 30),
    (f"{_T}.getMinutes(\"+05:45\")", 15),
    (f"{_T}.getMinutes(\"-00:15\")", 15),
    (f"{_T}.getSeconds()", 45),
    (f"{_T}.getMilliseconds()", 678),
    (f"{_T}.getMilliseconds(\"Asia/Kathmandu\")", 678),
    (f"getHours({_T}, \"UTC\")", 23),
    # the local date may leave the timestamp range (Go answers year 10000 and year 0)
    (f"{_END}.getFullYear(\"+01:00\")", 10000),
    (f"{_END}.getDayOfWeek(\"+01:00\")", 6),
    (f"{_END}.getHours(\"Asia/Tokyo\")", 8),
    (f"{_END}.getMilliseconds(\"+01:00\")", 999),
    (f"{_START}.getFullYear(\"-01:00\")", 0),
    (f"{_START}.getDayOfYear(\"-01:00\")", 365),
    (f"{_START}.getDayOfWeek(\"-01:00\")", 0),
    # zones: the grammar, and nothing else
    (f"{_T}.getHours(\"+24:00\")", Err("unknown time zone")),
    (f"{_T}.getHours(\"+01:60\")", Err("unknown time zone")),
    (f"{_T}.getHours(\"1:30\")", Err("unknown time zone")),
    (f"{_T}.getHours(\"02:00\") == {_T}.getHours(\"+02:00\")", True),  # no sign: east of UTC
    (f"{_T}.getHours(\"24:00\")", Err("unknown time zone")),
    (f"{_T}.getHours(\"+01:00 \")", Err("unknown time zone")),
    (f"{_T}.getHours(\"Mars/Olympus_Mons\")", Err("unknown time zone")),
    (f"{_T}.getMilliseconds(\"Mars/Olympus_Mons\")", Err("unknown time zone")),
    (f"{_T}.getHours(null)", Err("no such overload")),
    (f"{_T}.getHours(1)", Err("no such overload")),
    # durations
    ("duration(\"-3730s\").getHours()", -1),
    ("duration(\"-59m\").getHours()", 0),
    ("duration(\"-1.5s\").getSeconds()", -1),
    ("duration(\"1.999s\").getMilliseconds()", 999),
    ("duration(\"-0.0015s\").getMilliseconds()", -1),
    ("duration(\"1s\").getHours(\"UTC\")", Err("no such overload")),
    ("duration(\"1s\").getFullYear()", Err("no such overload")),
    ("\"2023\".getFullYear()", Err("no such overload")),
]

# ------------------------------------------------------------------ Conversions from text
# int(), uint() and double() of a string read a number and nothing else (no spaces, no digit
# separators, no other scripts' digits -- which Python's int() and float() would take);
# timestamp() reads an RFC 3339 date-time: a UTC offset below 24 hours, no second 60.
TEXT: list[tuple[str, Any]] = [
    ("int(\"-0x10\")", Err("conversion error")),  # base 10 only, as Go's ParseInt(s, 10, 64)
    ("int(\"0X1F\")", Err("conversion error")),
    ("int(\"-9223372036854775808\")", -2**63),
    ("int(\"+12\")", 12),
    ("int(\" 12\")", Err("conversion error")),
    ("int(\"1_000\")", Err("conversion error")),
    ("int(\"\\u0663\")", Err("conversion error")),  # ARABIC-INDIC DIGIT THREE
    ("int(\"0x\")", Err("conversion error")),
    ("int(\"0x-1f\")", Err("conversion error")),
    ("int(\"1" + "0" * 4400 + "\")", Err("too many digits")),
    ("uint(\"0x1F\")", Err("conversion error")),
    ("uint(\"+7\")", Err("conversion error")),  # ParseUint: no sign
    ("uint(\"-1\")", Err("conversion error")),
    ("uint(\"007\")", 7),
    ("uint(\"18446744073709551615\")", 2**64 - 1), ("uint(\"18446744073709551616\")", Err("uint64 overflow")),
    ("uint(\"0x1_f\")", Err("conversion error")),
    ("uint(\"-0x1\")", Err("conversion error")),
    ("double(\"-9.5e-1\")", -0.95),
    ("double(\".5\")", 0.5),
    ("double(\"-Infinity\") == double(\"-inf\")", True),
    ("double(\"NaN\") != double(\"NaN\")", True),
    ("double(\" 1.5\")", Err("conversion error")),
    ("double(\"1_0\")", Err("conversion error")),
    ("double(\"0x1p-2\")", Err("conversion error")),
    ("timestamp(\"0001-01-01T00:00:00Z\") == timestamp(-62135596800)", True),
    ("string(timestamp(\"0001-01-01T00:00:00Z\"))", "0001-01-01T00:00:00Z"),
    ("timestamp(\"2020-01-01T05:30:00+05:30\") == timestamp(\"2020-01-01T00:00:00Z\")", True),
    ("timestamp(\"2019-12-31T18:30:00-05:30\") == timestamp(\"2020-01-01T00:00:00Z\")", True),
    ("timestamp(\"2020-01-01T00:00:00+23:59\") == timestamp(\"2019-12-31T00:01:00Z\")", True),
    ("string(timestamp(\"2020-01-01T01:00:00.000000001+01:00\"))", "2020-01-01T00:00:00.000000001Z"),
    ("timestamp(\"2020-01-01T00:00:00+24:00\")", Err("bad UTC offset")),
    ("timestamp(\"2020-01-01T00:00:00+00:60\")", Err("bad UTC offset")),
    ("timestamp(\"2020-01-01T00:60:00Z\")", Err("time of day")),
    ("timestamp(\"2020-01-01T00:00:60Z\")", Err("time of day")),
    ("timestamp(\"2020-01-01T23:59:59Z\") == timestamp(86399 + 1577836800)", True),
    ("timestamp(-62135596801)", Err("out of range")),
    ("timestamp(9223372036854775807)", Err("out of range")),
]

# ------------------------------------------------------------------- Values and conversions
# What each conversion keeps, and where it stops (langdef "List of Standard Definitions").
VALUES: list[tuple[str, Any]] = [
    ("int(5)", 5),
    ("uint(5u)", 5),
    ("uint(5)", 5),
    ("uint(-1)", Err("uint64 overflow")),
    ("uint(18446744073709549568.0)", 18446744073709549568),
    ("uint(timestamp(0))", Err("no such overload")),
    ("int(true)", Err("no such overload")),
    ("double(1.5)", 1.5),
    ("double(2u)", 2.0),
    ("double(true)", Err("no such overload")),
    ("string(\"a\")", "a"),
    ("string(false)", "false"),
    ("string(18446744073709551615u)", "18446744073709551615"),
    ("string(b\"\\xff\")", Err("invalid UTF-8")),
    ("string(duration(\"0s\"))", "0s"),
    ("string(duration(\"-9223372036.854775808s\"))", "-9223372036.854775808s"),
    ("bool(true)", True),
    ("bool(false)", False),
    ("duration(duration(\"1s\")) == duration(\"1s\")", True),
    ("duration(\".5s\") == duration(\"500ms\")", True),
    ("duration(1)", Err("no such overload")),
    ("timestamp(true)", Err("no such overload")),
]

# -------------------------------------------------------- What the policy language leaves out
LEFT_OUT: list[tuple[str, str]] = [
    ("int", "'int' is a CEL type name"),
    ("string == list", "'string' is a CEL type name"),
    ("dyn(1) == 1", "dyn() is not part of the policy language"),
    ("type(1) == int", "type() is not part of the policy language"),
]

GROUPS = {"overflow": OVERFLOW, "time": TIME, "strings": STRINGS, "conversions": CONVERSIONS,
          "equality": EQUALITY, "arithmetic": ARITHMETIC, "ordering": ORDERING, "membership": MEMBERSHIP,
          "accessors": ACCESSORS, "text": TEXT, "values": VALUES}
CASES = [(group, text, expected) for group, cases in GROUPS.items() for text, expected in cases]

# cel-python's answers where they differ from the definition ("error" or the value it returns).
CELPY_DIFFERS: dict[str, Any] = {
    "-9223372036854775808 % -1": 0,
    "int(-9223372036854775808.0)": -(2**63),
    "timestamp(\"0001-01-01T00:00:00Z\") - duration(\"1ns\")": "value",
    "duration(\"1d\")": "value",
    "string(duration(\"1ns\"))": "0s",
    "string(timestamp(\"2023-01-01T00:00:00.123456789Z\"))": "2023-01-01T00:00:00Z",
    "duration(\"123.321456789s\").getMilliseconds()": 123321,
    "\"\\?\"": "\\?",
    "\"\"\"two\nlines\"\"\"": "twolines",
    "timestamp(1000000000) == timestamp(\"2001-09-09T01:46:40Z\")": "error",
    "[1] == [1.0]": "error",
    "1 == 1.0": "error",
    "timestamp(\"2020-01-01\")": "value",
    "double(\"1e400\")": float("inf"),
    "double(\"-1e400\")": float("-inf"),
    "int(\"-0x10\")": -16,
    "int(\"0X1F\")": 31,
    "uint(\"0x1F\")": 31,
    "uint(\"+7\")": 7,
}


def _literal(value: Any) -> str | None:
    """``value`` as a CEL expression, for the generated-code check (None when it has none)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value >= 2**63:  # only a uint can hold it (uint results leave CEL as plain ints)
            return f"{value}u"
        return str(value) if value != -(2**63) else "-9223372036854775808"
    if isinstance(value, float):
        return f'double("{value!r}")'
    if isinstance(value, str):
        return '"' + "".join(f"\\U{ord(c):08x}" for c in value) + '"'
    return None


@pytest.mark.parametrize(("group", "text", "expected"), CASES, ids=[f"{g}: {t[:50]}" for g, t, _ in CASES])
def test_native(group: str, text: str, expected: Any) -> None:
    if isinstance(expected, Err):
        with pytest.raises(CELEvalError, match=expected.needle.replace("\\", "\\\\")):
            _run(text)
    else:
        result = _run(text)
        assert type(result) is type(expected) and result == expected, result


@pytest.mark.parametrize(("group", "text", "expected"), CASES, ids=[f"{g}: {t[:50]}" for g, t, _ in CASES])
def test_generated_condition(group: str, text: str, expected: Any) -> None:
    """The same case as a boolean condition, which runs as generated code."""
    literal = "true" if isinstance(expected, Err) else _literal(expected)
    assert literal is not None
    condition = compile_expression(CELParser().parse(f"({text}) == {literal}"))
    if isinstance(expected, Err):
        with pytest.raises(CELEvalError):
            condition({})
    else:
        assert condition({}) is True


@pytest.mark.parametrize(("text", "line", "column", "needle"), BAD_LITERALS, ids=[b[0] for b in BAD_LITERALS])
def test_bad_literals_refused_at_their_position(text: str, line: int, column: int, needle: str) -> None:
    with pytest.raises(UnsupportedExpression) as info:
        compile_expression(CELParser().parse(text))
    assert (info.value.line, info.value.column) == (line, column)
    assert needle in info.value.message


@pytest.mark.parametrize(("text", "needle"), LEFT_OUT)
def test_left_out_of_the_language(text: str, needle: str) -> None:
    with pytest.raises(UnsupportedExpression, match=needle.replace("(", r"\(").replace(")", r"\)")):
        compile_expression(CELParser().parse(text))


@pytest.mark.parametrize("text", sorted(CELPY_DIFFERS))
def test_celpy_answers_are_recorded_truly(text: str) -> None:
    recorded = CELPY_DIFFERS[text]
    try:
        answer: Any = compile_reference(CELParser().parse(text))({})
    except CELEvalError:
        answer = "error"
    if recorded == "value":
        assert answer != "error"
    else:
        assert answer == recorded
    expected = dict((t, e) for _, t, e in CASES)[text]
    assert isinstance(expected, Err) or answer != expected  # it really differs from the definition


def test_every_group_has_error_and_value_cases() -> None:
    for name, cases in GROUPS.items():
        kinds = {isinstance(expected, Err) for _, expected in cases}
        assert kinds == {True, False} or name in ("strings",), name


def test_results_leave_cel_as_plain_python() -> None:
    assert _run("timestamp(\"2024-01-01T00:00:00.123456789Z\")") == \
        datetime.datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert _run("duration(\"1.5s\")") == datetime.timedelta(seconds=1.5)
    assert _run("duration(\"-1ns\")") == datetime.timedelta(microseconds=-1)  # toward -infinity
