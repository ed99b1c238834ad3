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


def _as_datetime(v: Any) -> datetime.datetime:
    return v.plain() if type(v) is Timestamp else v


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
    """CEL ``==``: heterogeneous at run time (langdef "Equality"); only list/map elements err."""
    ta = type(a)
    if ta is type(b) and ta is not list and ta is not dict and ta is not tuple \
            and ta is not datetime.datetime:
        return bool(a == b)
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "list":
            return _fold_eq(len(a) == len(b), zip(a, b))
        if ka == "map":
            if len(a) != len(b):
                return False
            pairs = []
            for k, v in a.items():
                match = _matching_key(b, k)
                if match is _MISSING:
                    return False
                pairs.append((v, b[match]))
            return _fold_eq(True, pairs)
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


def _fold_eq(same_len: bool, pairs: Any) -> bool:
    # Element-wise logical AND: a definite `false` wins over errors (CEL commutative &&).
    if not same_len:
        return False
    err: CELEvalError | None = None
    for x, y in pairs:
        try:
            if not eq(x, y):
                return False
        except CELEvalError as e:
            err = err or e
    if err is not None:
        raise err
    return True


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
    ta = type(a)
    if ta is type(b) and (ta is int or ta is float or ta is str):
        return -1 if a < b else (1 if a > b else (0 if a == b else None))
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
    """CEL ``in`` on lists and maps (map: key membership). True wins over element errors."""
    k = kind(container)
    if k == "map":
        if type(item) is str and item in container:
            return True
        elems: Any = container.keys()
    elif k == "list":
        elems = container
    else:
        raise no_overload("@in", item, container)
    err: CELEvalError | None = None
    for e in elems:
        try:
            if eq(e, item):
                return True
        except CELEvalError as ex:
            err = err or ex
    if err is not None:
        raise err
    return False


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


def div(a: Any, b: Any) -> Any:
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "int":
            if b == 0:
                raise CELEvalError("division by zero")
            q = abs(a) // abs(b)  # CEL truncates toward zero (Go semantics)
            return check_int(-q if (a < 0) != (b < 0) else q)
        if ka == "uint":
            if b == 0:
                raise CELEvalError("division by zero")
            return Uint(a // b)
        if ka == "double":
            if b == 0.0:
                # IEEE 754. cel-python returns +inf for every x/0.0 (documented difference).
                if a == 0.0 or math.isnan(a):
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
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
            r = abs(a) % abs(b)  # sign follows the dividend (Go semantics)
            return -r if a < 0 else r
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


def _parse_int_text(s: str) -> int:
    # Mirrors celpy.celtypes.IntType: optional hex prefix, otherwise Python int().
    if s[:2] in ("0x", "0X"):
        return int(s[2:], 16)
    if s[:3] in ("-0x", "-0X"):
        return -int(s[3:], 16)
    return int(s)


def to_int(v: Any) -> int:
    k = kind(v)
    try:
        if k == "int":
            return v
        if k in ("uint", "bool"):
            return check_int(int(v))
        if k == "double":
            # The open range (minInt, maxInt): float(maxInt) is 2**63, already out of range.
            if not _INT_MIN < v < _INT_MAX:
                raise CELEvalError("int64 overflow: double out of range")
            return math.trunc(v)
        if k == "string":
            return check_int(_parse_int_text(v))
        if k == "timestamp":
            return timestamp_ns(v) // _NS  # seconds since the epoch, floored like Go's Unix()
    except (ValueError, OverflowError):
        raise CELEvalError("int() conversion error") from None
    raise no_overload("int", v)


def to_uint(v: Any) -> Uint:
    k = kind(v)
    try:
        if k == "uint":
            return v
        if k in ("int", "bool"):
            return check_uint(int(v))
        if k == "double":
            if not -1.0 < v < _UINT_MAX:
                raise CELEvalError("uint64 overflow: double out of range")
            return Uint(math.trunc(v))
        if k == "string":
            return check_uint(int(v[2:], 16) if v[:2] in ("0x", "0X") else int(v))
        if k == "timestamp":
            return check_uint(timestamp_ns(v) // _NS)
    except (ValueError, OverflowError):
        raise CELEvalError("uint() conversion error") from None
    raise no_overload("uint", v)


def to_double(v: Any) -> float:
    k = kind(v)
    if k in ("double", "int", "uint", "string"):
        try:
            return float(v)
        except (ValueError, OverflowError):
            raise CELEvalError("double() conversion error") from None
    raise no_overload("double", v)


def format_timestamp(ts: Any) -> str:
    """RFC 3339 in UTC with as many fractional digits as needed (Go's ``RFC3339Nano``)."""
    ns = timestamp_ns(ts)
    seconds, fraction = divmod(ns, _NS)
    text = (_EPOCH + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if len(text) < 19:  # strftime drops leading zeros of years before 1000 on some platforms
        text = text.zfill(19)
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
            return v.decode("utf-8")
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
        seconds = int(v)
        if not _TIMESTAMP_MIN // _NS <= seconds <= _TIMESTAMP_MAX // _NS:
            raise CELEvalError("timestamp out of range")
        return Timestamp(seconds * _NS)
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
    if m.group(9):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise CELEvalError("timestamp() conversion error: bad UTC offset")
        offset = (oh * 3600 + om * 60) * (-1 if m.group(9) == "-" else 1)
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
    if type(s) is not str or type(x) is not str:
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

_TZ_OFFSET = re.compile(r"^([+-]?)(\d\d?):(\d\d)$")
_TZ_CACHE: dict[str, datetime.tzinfo] = {}


def tz_lookup(name: Any) -> datetime.tzinfo:
    if kind(name) != "string":
        raise no_overload("timezone", name)
    tz = _TZ_CACHE.get(name)
    if tz is not None:
        return tz
    try:
        tz = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        m = _TZ_OFFSET.match(name)
        if not m:
            raise CELEvalError("unknown time zone") from None
        sign, hh, mm = m.groups()
        minutes = (int(hh) * 60 + int(mm)) * (-1 if sign == "-" else 1)
        try:
            tz = datetime.timezone(datetime.timedelta(minutes=minutes))
        except ValueError:
            raise CELEvalError("unknown time zone") from None
    if len(_TZ_CACHE) < 256:
        _TZ_CACHE[name] = tz
    return tz


def _local(ts: Any, tz: Any) -> datetime.datetime:
    return _as_datetime(ts).astimezone(_UTC if tz is None else tz_lookup(tz))


def _ts_accessor(name: str, fn: Callable[[datetime.datetime], int],
                 dur_fn: Callable[[int], int] | None) -> Callable[..., int]:
    def accessor(v: Any, tz: Any = None) -> int:
        k = kind(v)
        if k == "timestamp":
            if name == "getMilliseconds":  # the only part finer than the datetime in the zone
                return timestamp_ns(v) % _NS // 1_000_000
            return fn(_local(v, tz))
        if k == "duration" and dur_fn is not None and tz is None:
            return dur_fn(duration_ns(v))
        raise no_overload(name, v) if tz is None else no_overload(name, v, tz)

    accessor.__name__ = name
    return accessor


def _truncated(ns: int, unit: int) -> int:
    q = abs(ns) // unit
    return -q if ns < 0 else q


def _day_of_year(d: datetime.datetime) -> int:
    return d.toordinal() - datetime.date(d.year, 1, 1).toordinal()


TIME_ACCESSORS: dict[str, Callable[..., int]] = {
    "getFullYear": _ts_accessor("getFullYear", lambda d: d.year, None),
    "getMonth": _ts_accessor("getMonth", lambda d: d.month - 1, None),
    "getDayOfYear": _ts_accessor("getDayOfYear", _day_of_year, None),
    "getDayOfMonth": _ts_accessor("getDayOfMonth", lambda d: d.day - 1, None),
    "getDate": _ts_accessor("getDate", lambda d: d.day, None),
    "getDayOfWeek": _ts_accessor("getDayOfWeek", lambda d: d.isoweekday() % 7, None),
    # On a duration these convert the whole duration to the unit, truncating toward zero,
    # except getMilliseconds, which is the milliseconds component (langdef; cel-spec tests).
    "getHours": _ts_accessor("getHours", lambda d: d.hour, lambda ns: _truncated(ns, 3600 * _NS)),
    "getMinutes": _ts_accessor("getMinutes", lambda d: d.minute, lambda ns: _truncated(ns, 60 * _NS)),
    "getSeconds": _ts_accessor("getSeconds", lambda d: d.second, lambda ns: _truncated(ns, _NS)),
    "getMilliseconds": _ts_accessor("getMilliseconds", lambda d: d.microsecond // 1000,
                                    lambda ns: _truncated(ns - _truncated(ns, _NS) * _NS, 1_000_000)),
}

# name -> (implementation, allowed argument counts including the receiver)
FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "size": (size, (1,)),
    "startsWith": (starts_with, (2,)),
    "endsWith": (ends_with, (2,)),
    "contains": (contains, (2,)),
    "matches": (matches, (2,)),
    **{name: (fn, (1, 2)) for name, fn in TIME_ACCESSORS.items()},
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
