"""Runtime value semantics for the native CEL backend (operators and the function library).

Values are plain Python objects (see :mod:`ttlpolicy.cel.native`) plus three internal types
that exist only while an expression runs: :class:`Uint` keeps CEL ``uint`` distinct from
``int``, and :class:`Timestamp` / :class:`Duration` carry the nanosecond precision and the
ranges of the CEL language definition, which Python's ``datetime`` (microseconds, other
limits) cannot. :func:`to_plain` turns all three back into ``int`` / ``datetime`` /
``timedelta`` for callers.

The semantics are the CEL language definition's (``doc/langdef.md`` of cel-spec), in the
subset a lifetime policy uses:

* Arithmetic is strictly typed (no int/uint/double mixing, no bool-as-number); every result
  is range-checked -- int64 and uint64, durations as int64 nanoseconds (about +-292 years),
  timestamps from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z -- and a result out
  of range is an error, never a wrapped or clamped value.
* Equality is heterogeneous at run time: numbers compare by value across int, uint and
  double (``[1] == [1.0]``), values of different kinds are unequal rather than an error.
  Ordering works across numeric kinds too. (The type checker still refuses mixed operands in
  a policy, so these only matter for data whose type is not declared.)
* Conversions fail where the definition says so: ``int(double)`` only inside the open range
  (minInt, maxInt), ``bool("1")``/``bool("0")``, ``timestamp(int)`` in range.

Where cel-python answers differently, ``tests/test_cel_native.py`` (``KNOWN_DIFFERENCES``) and
``tests/test_cel_conformance.py`` record its answer next to ours.
"""

from __future__ import annotations

import datetime
import functools
import math
import re
import zoneinfo
from typing import Any, Callable

import re2  # google-re2

__all__ = ["CELEvalError", "Duration", "Timestamp", "Uint"]


class CELEvalError(Exception):
    """A CEL runtime error (no such key, type mismatch, overflow, division by zero, bad regex...).

    ``str(e)`` is a short human message, e.g. ``"no such attribute 'user.risk'"``.
    The message never contains the activation.
    """


class Uint(int):
    """A CEL ``uint`` while an expression runs (plain ``int`` subclass, so it hashes like int)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1
_UINT_MAX = 2**64 - 1
_TWO_63, _TWO_64 = 2.0**63, 2.0**64  # the bounds of int() and uint() of a double
_NoneType = type(None)

# ---------------------------------------------------------------------------- time values

_NS = 1_000_000_000
_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()
_TIMESTAMP_MIN = (datetime.date(1, 1, 1).toordinal() - _EPOCH_DAY) * 86400 * _NS
_TIMESTAMP_MAX = (datetime.date(9999, 12, 31).toordinal() - _EPOCH_DAY + 1) * 86400 * _NS - 1


class Duration:
    """A CEL duration: signed int64 nanoseconds. Constructing one out of range is an error."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        if not _INT_MIN <= ns <= _INT_MAX:
            raise CELEvalError("duration out of range")
        self.ns = ns

    def __eq__(self, other: object) -> bool:
        return type(other) is Duration and other.ns == self.ns

    def __hash__(self) -> int:
        return hash((Duration, self.ns))

    def __repr__(self) -> str:
        return f"duration({format_duration(self.ns)!r})"

    def plain(self) -> datetime.timedelta:
        """The nearest ``timedelta`` toward negative infinity (Python stops at microseconds)."""
        return datetime.timedelta(microseconds=self.ns // 1000)


class Timestamp:
    """A CEL timestamp: nanoseconds since the Unix epoch, 0001-01-01 to 9999-12-31 inclusive."""

    __slots__ = ("ns",)

    def __init__(self, ns: int) -> None:
        if not _TIMESTAMP_MIN <= ns <= _TIMESTAMP_MAX:
            raise CELEvalError("timestamp out of range")
        self.ns = ns

    def __eq__(self, other: object) -> bool:
        return type(other) is Timestamp and other.ns == self.ns

    def __hash__(self) -> int:
        return hash((Timestamp, self.ns))

    def __repr__(self) -> str:
        return f"timestamp({format_timestamp(self)!r})"

    def plain(self) -> datetime.datetime:
        """The UTC ``datetime`` of this instant, truncated to microseconds."""
        return _EPOCH + datetime.timedelta(microseconds=self.ns // 1000)


def duration_ns(v: Any) -> int:
    """Nanoseconds of a duration value (:class:`Duration` or ``timedelta`` from a context)."""
    if type(v) is Duration:
        return v.ns
    return (v.days * 86400 + v.seconds) * _NS + v.microseconds * 1000


def timestamp_ns(v: Any) -> int:
    """Nanoseconds since the epoch of a timestamp (:class:`Timestamp` or an aware ``datetime``)."""
    if type(v) is Timestamp:
        return v.ns
    d = (v if v.tzinfo is not None else v.replace(tzinfo=_UTC)) - _EPOCH
    return (d.days * 86400 + d.seconds) * _NS + d.microseconds * 1000


def _time_ns(v: Any, k: str) -> int:
    return timestamp_ns(v) if k == "timestamp" else duration_ns(v)


# Kind names; a dict lookup on type() is the fast path, _kind() falls back to isinstance
# for subclasses (e.g. pendulum.DateTime, OrderedDict).
_KINDS: dict[type, str] = {
    bool: "bool",
    int: "int",
    Uint: "uint",
    float: "double",
    str: "string",
    bytes: "bytes",
    list: "list",
    tuple: "list",
    dict: "map",
    _NoneType: "null_type",
    datetime.datetime: "timestamp",
    datetime.timedelta: "duration",
    Timestamp: "timestamp",
    Duration: "duration",
}
_NUMERIC = frozenset({"int", "uint", "double"})
_ORDERED = frozenset({"bool", "int", "uint", "double", "string", "bytes", "timestamp", "duration"})
_TIME = frozenset({"timestamp", "duration"})
_AGGREGATE = frozenset({"list", "map"})


def kind(v: Any) -> str:
    """CEL type name of a plain Python value (``"int"``, ``"map"``...)."""
    k = _KINDS.get(type(v))
    if k is not None:
        return k
    # Order matters: bool before int, Uint before int, datetime before date.
    for cls, name in (
        (bool, "bool"),
        (Uint, "uint"),
        (int, "int"),
        (float, "double"),
        (str, "string"),
        (bytes, "bytes"),
        (datetime.datetime, "timestamp"),
        (datetime.timedelta, "duration"),
        (list, "list"),
        (tuple, "list"),
        (dict, "map"),
    ):
        if isinstance(v, cls):
            return name
    from collections.abc import Mapping, Sequence

    if isinstance(v, Mapping):
        return "map"
    if isinstance(v, Sequence):
        return "list"
    return type(v).__name__


def no_overload(op: str, *args: Any) -> CELEvalError:
    """Build the standard type-mismatch error; only type names go into the message."""
    return CELEvalError(f"no such overload: {op} applied to ({', '.join(kind(a) for a in args)})")


# ---------------------------------------------------------------------------- equality / ordering


def eq(a: Any, b: Any) -> bool:
    """CEL ``==``: heterogeneous at run time (langdef "Equality"), so it never fails: values of
    different kinds are unequal, lists and maps are equal when their elements are."""
    ta = type(a)
    if ta is type(b) and ta is not list and ta is not dict and ta is not tuple \
            and ta is not datetime.datetime:
        return bool(a == b)
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "list":
            return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
        if ka == "map":
            if len(a) != len(b):
                return False
            for k, v in a.items():
                match = _matching_key(b, k)
                if match is _MISSING or not eq(v, b[match]):
                    return False
            return True
        if ka in _TIME:
            return _time_ns(a, ka) == _time_ns(b, kb)
        return bool(a == b)
    if ka in _NUMERIC and kb in _NUMERIC:
        return _numeric_cmp(a, b) == 0
    return False  # values of different kinds are simply unequal


_MISSING = object()


def _matching_key(m: Any, key: Any) -> Any:
    """The key of ``m`` equal to ``key`` in CEL's sense (``1 == 1u``, but ``true != 1``)."""
    if type(key) is str:
        return key if key in m else _MISSING
    for candidate in m:
        if eq(key, candidate):
            return candidate
    return _MISSING


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def _numeric_cmp(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 comparing numbers on one number line (exact for int vs double); None for NaN."""
    if a < b:
        return -1
    if a > b:
        return 1
    return 0 if a == b else None


def _compare(op: str, a: Any, b: Any) -> int | None:
    # Two ints, doubles or strings never get here: the compiled comparison does those itself.
    ka, kb = kind(a), kind(b)
    if ka == kb and ka in _ORDERED:
        if ka in _TIME:
            a, b = _time_ns(a, ka), _time_ns(b, kb)
        return _numeric_cmp(a, b)
    if ka in _NUMERIC and kb in _NUMERIC:
        return _numeric_cmp(a, b)
    raise no_overload(op, a, b)


def lt(a: Any, b: Any) -> bool:
    return _compare("_<_", a, b) == -1


def le(a: Any, b: Any) -> bool:
    return _compare("_<=_", a, b) in (-1, 0)


def gt(a: Any, b: Any) -> bool:
    return _compare("_>_", a, b) == 1


def ge(a: Any, b: Any) -> bool:
    return _compare("_>=_", a, b) in (0, 1)


def in_(item: Any, container: Any) -> bool:
    """CEL ``in`` on lists and maps (map: key membership), with ``==``'s heterogeneous equality."""
    k = kind(container)
    if k == "map":
        if type(item) is str:  # a string equals only strings: the map's own lookup decides
            return item in container
        elems: Any = container.keys()
    elif k == "list":
        elems = container
    else:
        raise no_overload("@in", item, container)
    return any(eq(e, item) for e in elems)


# ---------------------------------------------------------------------------- arithmetic


def check_int(r: int) -> int:
    if _INT_MIN <= r <= _INT_MAX:
        return r
    raise CELEvalError("int64 overflow")


def check_uint(r: int) -> Uint:
    if 0 <= r <= _UINT_MAX:
        return Uint(r)
    raise CELEvalError("uint64 overflow")


def add(a: Any, b: Any) -> Any:
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "int":
            return check_int(a + b)
        if ka == "uint":
            return check_uint(a + b)
        if ka in ("double", "string", "bytes"):
            return a + b
        if ka == "list":
            return list(a) + list(b)
        if ka == "duration":
            return Duration(duration_ns(a) + duration_ns(b))
    elif ka == "timestamp" and kb == "duration":
        return Timestamp(timestamp_ns(a) + duration_ns(b))
    elif ka == "duration" and kb == "timestamp":
        return Timestamp(duration_ns(a) + timestamp_ns(b))
    raise no_overload("_+_", a, b)


def sub(a: Any, b: Any) -> Any:
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "int":
            return check_int(a - b)
        if ka == "uint":
            return check_uint(a - b)
        if ka == "double":
            return a - b
        if ka == "duration":
            return Duration(duration_ns(a) - duration_ns(b))
        if ka == "timestamp":
            return Duration(timestamp_ns(a) - timestamp_ns(b))
    elif ka == "timestamp" and kb == "duration":
        return Timestamp(timestamp_ns(a) - duration_ns(b))
    raise no_overload("_-_", a, b)


def mul(a: Any, b: Any) -> Any:
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "int":
            return check_int(a * b)
        if ka == "uint":
            return check_uint(a * b)
        if ka == "double":
            return a * b
    raise no_overload("_*_", a, b)


def _quotient(a: int, b: int) -> int:
    """``a / b`` truncated toward zero, as CEL (and Go) divide integers; Python's ``//`` floors."""
    q = a // b
    if q < 0 and q * b != a:
        q += 1
    return q


def div(a: Any, b: Any) -> Any:
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "int":
            if b == 0:
                raise CELEvalError("division by zero")
            return check_int(_quotient(a, b))
        if ka == "uint":
            if b == 0:
                raise CELEvalError("division by zero")
            return Uint(a // b)
        if ka == "double":
            if b == 0.0:
                # IEEE 754. cel-python returns +inf for every x/0.0 (documented difference).
                if a == 0.0 or math.isnan(a):
                    return math.nan
                return math.inf if math.copysign(1.0, a) == math.copysign(1.0, b) else -math.inf
            return a / b
    raise no_overload("_/_", a, b)


def mod(a: Any, b: Any) -> Any:
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "int":
            if b == 0:
                raise CELEvalError("modulus by zero")
            if b == -1 and a == _INT_MIN:
                raise CELEvalError("int64 overflow")  # the quotient overflows, so the remainder does
            return a - b * _quotient(a, b)  # so the sign follows the dividend (Go semantics)
        if ka == "uint":
            if b == 0:
                raise CELEvalError("modulus by zero")
            return Uint(a % b)
    raise no_overload("_%_", a, b)


def neg(a: Any) -> Any:
    k = kind(a)
    if k == "int":
        return check_int(-a)
    if k == "double":
        return -a
    if k == "duration":
        return Duration(-duration_ns(a))
    raise no_overload("-_", a)


def not_(a: Any) -> bool:
    if a is True:
        return False
    if a is False:
        return True
    raise no_overload("!_", a)


# ---------------------------------------------------------------------------- conversions


# The text int() and uint() read: decimal digits, with an optional sign for int() only, as Go's
# CEL reads them (strconv.ParseInt and ParseUint in base 10: "0x1f" is an error, not 31 as
# cel-python reads it, and so is uint("+7")). Python's int() alone would also take spaces,
# underscores and other scripts' digits.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_UINT_TEXT = re.compile(r"[0-9]+")
# What double() reads (Go's strconv.ParseFloat, as CEL): a decimal number with an optional
# exponent, inf, infinity or nan in any case -- again without Python's spaces and underscores.
_DOUBLE_TEXT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|inf(?:inity)?)|nan",
                          re.IGNORECASE)


def _parse_int_text(s: str, conversion: str) -> int:
    if (_INT_TEXT if conversion == "int" else _UINT_TEXT).fullmatch(s) is None:
        raise CELEvalError(f"{conversion}() conversion error")
    try:
        return int(s)
    except ValueError:  # more digits than Python reads (4300): far out of range
        raise CELEvalError(f"{conversion}() conversion error: too many digits") from None


def to_int(v: Any) -> int:
    # CEL converts to int from uint, double, string and timestamp only: int(true) is an error
    # (cel-python answers 1).
    k = kind(v)
    if k == "int":
        return v
    if k == "uint":
        return check_int(int(v))
    if k == "double":
        # The open range (minInt, maxInt): as doubles, -2**63 and 2**63 (maxInt rounds up).
        if not -_TWO_63 < v < _TWO_63:
            raise CELEvalError("int64 overflow: double out of range")
        return math.trunc(v)
    if k == "string":
        return check_int(_parse_int_text(v, "int"))
    if k == "timestamp":
        return timestamp_ns(v) // _NS  # seconds since the epoch, floored like Go's Unix()
    raise no_overload("int", v)


def to_uint(v: Any) -> Uint:
    # From int, double and string only (not bool, not timestamp).
    k = kind(v)
    if k == "uint":
        return v
    if k == "int":
        return check_uint(v)
    if k == "double":
        if not -1.0 < v < _TWO_64:  # maxUint rounds up to 2**64 as a double
            raise CELEvalError("uint64 overflow: double out of range")
        return Uint(math.trunc(v))
    if k == "string":
        return check_uint(_parse_int_text(v, "uint"))
    raise no_overload("uint", v)


def to_double(v: Any) -> float:
    k = kind(v)
    if k in ("double", "int", "uint"):
        return float(v)  # exact, or the nearest double: every int and uint is in range
    if k == "string":
        if _DOUBLE_TEXT.fullmatch(v) is None:
            raise CELEvalError("double() conversion error")
        value = float(v)
        if math.isinf(value) and "n" not in v.lower():  # a number beyond the range ("1e400", not one
            # of the spellings of infinity, which all have an n): Go's ParseFloat reports a range error
            raise CELEvalError("double() conversion error: out of range")
        return value
    raise no_overload("double", v)


def format_timestamp(ts: Any) -> str:
    """RFC 3339 in UTC with as many fractional digits as needed (Go's ``RFC3339Nano``)."""
    ns = timestamp_ns(ts)
    seconds, fraction = divmod(ns, _NS)
    # zfill: strftime drops the leading zeros of years before 1000 on some platforms
    text = (_EPOCH + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S").zfill(19)
    return f"{text}{_fraction(fraction)}Z"


def format_duration(ns: int) -> str:
    """Seconds with as many fractional digits as needed: ``"1.5s"``, ``"-0.000000001s"``."""
    seconds, fraction = divmod(abs(ns), _NS)
    return f"{'-' if ns < 0 else ''}{seconds}{_fraction(fraction)}s"


def _fraction(nanos: int) -> str:
    return f".{nanos:09d}".rstrip("0") if nanos else ""


def to_string(v: Any) -> str:
    k = kind(v)
    if k == "string":
        return v
    if k == "bool":
        return "true" if v else "false"  # cel-python gives "True"/"False" (documented)
    if k in ("int", "uint"):
        return str(int(v))
    if k == "double":
        return str(float(v))
    if k == "bytes":
        try:
            return v.decode()  # UTF-8
        except UnicodeDecodeError:
            raise CELEvalError("invalid UTF-8 in bytes") from None
    if k == "timestamp":
        return format_timestamp(v)
    if k == "duration":
        return format_duration(duration_ns(v))
    raise no_overload("string", v)


_BOOL_TEXT = {"true": True, "True": True, "TRUE": True, "t": True, "1": True,
              "false": False, "False": False, "FALSE": False, "f": False, "0": False}


def to_bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    if kind(v) == "string":
        try:
            return _BOOL_TEXT[v]
        except KeyError:
            raise CELEvalError("bool() conversion error") from None
    raise no_overload("bool", v)


# RFC 3339 (a "date-time"): CEL accepts exactly this, with up to nine fractional digits.
_RFC3339 = re.compile(r"(\d{4,})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))")


def to_timestamp(v: Any) -> Any:
    k = kind(v)
    if k == "timestamp":
        return v
    if k == "int":
        return Timestamp(v * _NS)
    if k == "string":
        return Timestamp(_parse_rfc3339(v))
    raise no_overload("timestamp", v)


def _parse_rfc3339(text: str) -> int:
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise CELEvalError("timestamp() conversion error: not an RFC 3339 date-time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not 1 <= year <= 9999:
        raise CELEvalError("timestamp out of range")
    try:
        days = datetime.date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError:
        raise CELEvalError("timestamp() conversion error: no such date") from None
    if hour > 23 or minute > 59 or second > 59:
        raise CELEvalError("timestamp() conversion error: no such time of day")
    offset = 0
    sign, oh, om = m.group(9, 10, 11)  # None for "Z"
    if sign:
        if int(oh) > 23 or int(om) > 59:
            raise CELEvalError("timestamp() conversion error: bad UTC offset")
        offset = (int(oh) * 3600 + int(om) * 60) * (-1 if sign == "-" else 1)
    nanos = int((m.group(7) or "").ljust(9, "0"))
    return ((days * 86400 + hour * 3600 + minute * 60 + second - offset) * _NS) + nanos


# Go's time.ParseDuration, which CEL's duration() follows: signed sequence of decimal numbers
# with optional fractions, each with a unit; no days.
_DURATION_RE = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|ms|s|m|h))+|[-+]?0")
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": _NS,
                     "m": 60 * _NS, "h": 3600 * _NS}


def to_duration(v: Any) -> Any:
    k = kind(v)
    if k == "duration":
        return v
    if k != "string":
        raise no_overload("duration", v)
    if not _DURATION_RE.fullmatch(v):
        raise CELEvalError("duration() conversion error: expected e.g. \"90s\", \"1h30m\", \"1.5h\"")
    total = 0
    for whole, fraction, unit in _DURATION_PART.findall(v):
        scale = _DURATION_UNIT_NS[unit]
        total += int(whole or "0") * scale
        if fraction:  # exact, truncated toward zero like Go
            total += int(fraction) * scale // 10 ** len(fraction)
    return Duration(-total if v.startswith("-") else total)


# ---------------------------------------------------------------------------- string functions


def size(v: Any) -> int:
    k = kind(v)
    if k in ("string", "bytes", "list", "map"):
        return len(v)
    raise no_overload("size", v)  # cel-python returns 0 for size(null) (documented)


def _str_pair(name: str, s: Any, x: Any) -> None:
    if kind(s) != "string" or kind(x) != "string":
        raise no_overload(name, s, x)


def starts_with(s: Any, x: Any) -> bool:
    _str_pair("startsWith", s, x)
    return s.startswith(x)


def ends_with(s: Any, x: Any) -> bool:
    _str_pair("endsWith", s, x)
    return s.endswith(x)


def contains(s: Any, x: Any) -> bool:
    _str_pair("contains", s, x)
    return x in s


# `matches` is RE2, as CEL defines it: RE2's syntax, and time linear in the input whatever the
# pattern. Python's `re` backtracks: `client.id.matches("^(a+)+$")` took seconds for a 26-byte id,
# so anyone who could send a client id could stall a worker.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is reported at its line, not logged to stderr
_RE2_OPTIONS.never_capture = True  # `matches` only asks whether
# Thread-safe cache: dict get/set of immutable compiled patterns is atomic under the GIL.
_REGEX_CACHE: dict[str, Any] = {}
_REGEX_CACHE_MAX = 512


def regex_problem(pattern: str) -> str | None:
    """Why RE2 refuses `pattern` (a backreference, a lookaround, bad syntax), or None."""
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        reason = e.args[0] if e.args else "invalid"
        return f"invalid regex (RE2 syntax): {reason.decode() if isinstance(reason, bytes) else reason}"
    return None


def compile_regex(pattern: str) -> Any:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        problem = regex_problem(pattern)
        if problem is not None:
            raise CELEvalError(problem)
        rx = re2.compile(pattern, _RE2_OPTIONS)
        if len(_REGEX_CACHE) < _REGEX_CACHE_MAX:
            _REGEX_CACHE[pattern] = rx
    return rx


def matches(s: Any, pattern: Any) -> bool:
    _str_pair("matches", s, pattern)
    return compile_regex(pattern).search(s) is not None


# ---------------------------------------------------------------------------- timestamp accessors

# langdef "Timezones": an IANA name ("UTC", "Europe/Paris") or a fixed offset "+05:30" (less
# than a day, as Python's and Go's fixed zones are); without a sign ("02:00") an offset is east of
# UTC, as cel-spec's conformance tests read it.
_TZ_OFFSET = re.compile(r"([+-]?)([01][0-9]|2[0-3]):([0-5][0-9])")
_CYCLE_YEARS = 400  # the Gregorian calendar, weekdays included, repeats every 400 years


def tz_lookup(name: Any) -> datetime.tzinfo:
    """The zone an accessor's argument names (``zoneinfo`` keeps the zones it has read)."""
    if kind(name) != "string":
        raise no_overload("timezone", name)
    if name[:1] in ("+", "-") or name[:1].isdigit():
        m = _TZ_OFFSET.fullmatch(name)
        if m is None:
            raise CELEvalError("unknown time zone")
        sign, hours, minutes = m.groups()
        offset = datetime.timedelta(hours=int(hours), minutes=int(minutes))
        return datetime.timezone(-offset if sign == "-" else offset)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise CELEvalError("unknown time zone") from None


def _wall_clock(v: Any, zone: datetime.tzinfo) -> tuple[datetime.datetime, int]:
    """The date and time of day in ``zone`` at the timestamp ``v``, and the years to add to its year.

    At the ends of the range the local date can fall in year 0 or 10000, which ``datetime``
    cannot hold (CEL answers 10000 for the year, as Go does); 400 years away the calendar and the
    zone's rules are the same, so the date is taken there and its year moved back."""
    if type(v) is Timestamp:
        v = v.plain()
    elif v.tzinfo is None:  # a naive datetime is UTC, as in timestamp_ns(), not the server's zone
        v = v.replace(tzinfo=_UTC)
    try:
        return v.astimezone(zone), 0
    except OverflowError:
        years = _CYCLE_YEARS if v.year == 1 else -_CYCLE_YEARS
        return v.replace(year=v.year + years).astimezone(zone), -years


def _day_of_year(d: datetime.datetime) -> int:
    return d.toordinal() - datetime.date(d.year, 1, 1).toordinal()


# langdef "List of Standard Definitions": each accessor of a timestamp, in UTC or in a zone ...
_TIMESTAMP_PARTS: dict[str, Callable[[datetime.datetime], int]] = {
    "getFullYear": lambda d: d.year,
    "getMonth": lambda d: d.month - 1,
    "getDayOfYear": _day_of_year,
    "getDayOfMonth": lambda d: d.day - 1,
    "getDate": lambda d: d.day,
    "getDayOfWeek": lambda d: d.isoweekday() % 7,
    "getHours": lambda d: d.hour,
    "getMinutes": lambda d: d.minute,
    "getSeconds": lambda d: d.second,
    "getMilliseconds": lambda d: d.microsecond // 1000,
}
# ... and of a duration (no zone): the whole duration in the unit, truncated toward zero, except
# getMilliseconds, the milliseconds part (langdef; cel-spec's tests).
_DURATION_PARTS: dict[str, Callable[[int], int]] = {
    "getHours": lambda ns: _quotient(ns, 3600 * _NS),
    "getMinutes": lambda ns: _quotient(ns, 60 * _NS),
    "getSeconds": lambda ns: _quotient(ns, _NS),
    "getMilliseconds": lambda ns: _quotient(ns - _quotient(ns, _NS) * _NS, 1_000_000),
}


def time_part(name: str, v: Any, *zone: Any) -> int:
    """``v.getHours()``, ``v.getHours("Europe/Paris")`` and the other accessors named in
    ``_TIMESTAMP_PARTS``. ``zone`` is the optional argument: absent, not ``None``, because
    ``getHours(null)`` is an error, not the hour in UTC."""
    k = kind(v)
    if k == "timestamp":
        wall, years = _wall_clock(v, tz_lookup(zone[0]) if zone else _UTC)
        part = _TIMESTAMP_PARTS[name](wall)
        return part + years if name == "getFullYear" else part
    if k == "duration" and not zone and name in _DURATION_PARTS:
        return _DURATION_PARTS[name](duration_ns(v))
    raise no_overload(name, v, *zone)


# name -> (implementation, allowed argument counts including the receiver)
FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "size": (size, (1,)),
    "startsWith": (starts_with, (2,)),
    "endsWith": (ends_with, (2,)),
    "contains": (contains, (2,)),
    "matches": (matches, (2,)),
    **{name: (functools.partial(time_part, name), (1, 2)) for name in _TIMESTAMP_PARTS},
}
CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "int": to_int,
    "uint": to_uint,
    "double": to_double,
    "string": to_string,
    "bool": to_bool,
    "timestamp": to_timestamp,
    "duration": to_duration,
}


def to_plain(v: Any) -> Any:
    """Replace the internal Uint, Timestamp and Duration values by int, datetime and timedelta
    (recursively) so callers only see plain Python."""
    t = type(v)
    if t is Uint:
        return int(v)
    if t is Timestamp or t is Duration:
        return v.plain()
    if t is list:
        return [to_plain(x) for x in v]
    if t is dict:
        return {to_plain(k): to_plain(x) for k, x in v.items()}
    return v
