"""Runtime value semantics for the native CEL backend (operators and the function library).

Values are plain Python objects (see :mod:`ttlpolicy.cel.native`). The only internal
type is :class:`Uint`, an ``int`` subclass that keeps CEL ``uint`` distinct from ``int``
while an expression runs; :func:`to_plain` turns it back into ``int`` for callers.

Operators are *strictly typed* (no int/uint/double mixing, no bool-as-number). That is
what cel-python does whenever the left operand is an ``int``; where cel-python's result
depends on operand order (e.g. ``1 < 1.5`` is an error but ``1.5 < 1`` is ``false``) we
pick the error for both orders. Every such difference is listed in ``tests/test_cel_native.py``.
"""

from __future__ import annotations

import datetime
import math
import re
import zoneinfo
from math import fsum
from typing import Any, Callable

__all__ = ["CELEvalError", "Uint"]


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
_DUR_MAX_SECONDS = 315576000000
_NoneType = type(None)

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
}
_NUMERIC = frozenset({"int", "uint", "double"})
_ORDERED = frozenset({"bool", "int", "uint", "double", "string", "bytes", "timestamp", "duration"})
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
    """CEL ``==`` (matches cel-python's type matrix, see module docstring)."""
    ta = type(a)
    if ta is type(b) and ta is not list and ta is not dict and ta is not tuple:
        return bool(a == b)
    ka, kb = kind(a), kind(b)
    if ka == kb:
        if ka == "list":
            return _fold_eq(len(a) == len(b), zip(a, b))
        if ka == "map":
            if a.keys() != b.keys():
                return False
            return _fold_eq(True, ((a[k], b[k]) for k in a))
        try:
            return bool(a == b)
        except TypeError:  # naive vs aware datetime
            raise no_overload("_==_", a, b) from None
    if ka in _NUMERIC or kb in _NUMERIC:
        raise no_overload("_==_", a, b)
    if ka in _AGGREGATE or kb in _AGGREGATE:
        # cel-python: a list/map equals null -> false, any other mixing is an error.
        if a is None or b is None:
            return False
        raise no_overload("_==_", a, b)
    return False  # distinct scalar kinds (null, bool, string, bytes, timestamp, duration)


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


def _ordered(op: str, a: Any, b: Any) -> str:
    ka = kind(a)
    if ka != kind(b) or ka not in _ORDERED:
        raise no_overload(op, a, b)
    return ka


def lt(a: Any, b: Any) -> bool:
    _ordered("_<_", a, b)
    try:
        return bool(a < b)
    except TypeError:
        raise no_overload("_<_", a, b) from None


def le(a: Any, b: Any) -> bool:
    _ordered("_<=_", a, b)
    try:
        return bool(a <= b)
    except TypeError:
        raise no_overload("_<=_", a, b) from None


def gt(a: Any, b: Any) -> bool:
    _ordered("_>_", a, b)
    try:
        return bool(a > b)
    except TypeError:
        raise no_overload("_>_", a, b) from None


def ge(a: Any, b: Any) -> bool:
    _ordered("_>=_", a, b)
    try:
        return bool(a >= b)
    except TypeError:
        raise no_overload("_>=_", a, b) from None


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


def check_duration(d: datetime.timedelta) -> datetime.timedelta:
    if -_DUR_MAX_SECONDS <= d.total_seconds() <= _DUR_MAX_SECONDS:
        return d
    raise CELEvalError("duration out of range")


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
            return check_duration(a + b)
    elif ka == "timestamp" and kb == "duration" or ka == "duration" and kb == "timestamp":
        try:
            return a + b
        except OverflowError:
            raise CELEvalError("timestamp out of range") from None
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
            return a - b  # cel-python does not range-check duration - duration
        if ka == "timestamp":
            try:
                return check_duration(a - b)
            except TypeError:
                raise no_overload("_-_", a, b) from None
    elif ka == "timestamp" and kb == "duration":
        try:
            return a - b
        except OverflowError:
            raise CELEvalError("timestamp out of range") from None
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
        return -a  # cel-python accepts this; harmless
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
            return check_int(math.trunc(v))
        if k == "string":
            return check_int(_parse_int_text(v))
        if k == "timestamp":
            return check_int(int(v.timestamp()))
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
            return check_uint(math.trunc(v))
        if k == "string":
            return check_uint(int(v[2:], 16) if v[:2] in ("0x", "0X") else int(v))
        if k == "timestamp":
            return check_uint(int(v.timestamp()))
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


def format_timestamp(ts: datetime.datetime) -> str:
    # Same text as celpy.celtypes.TimestampType.__str__ (no fractional seconds).
    text = ts.strftime("%Y-%m-%dT%H:%M:%S%z")
    if text.endswith("+0000") or not text[19:]:
        return f"{text[:19]}Z"
    return f"{text[:-2]}:{text[-2:]}"


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
        return f"{int(v.total_seconds())}s"
    raise no_overload("string", v)


_BOOL_TEXT = {"true": True, "True": True, "TRUE": True, "t": True,
              "false": False, "False": False, "FALSE": False, "f": False}


def to_bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    if kind(v) == "string":
        try:
            return _BOOL_TEXT[v]
        except KeyError:
            raise CELEvalError("bool() conversion error") from None
    raise no_overload("bool", v)


def to_timestamp(v: Any) -> datetime.datetime:
    k = kind(v)
    if k == "timestamp":
        return v
    if k == "string":
        # RFC 3339 via fromisoformat; cel-python uses pendulum.parse, which also accepts
        # some non-RFC-3339 spellings (documented difference).
        try:
            ts = datetime.datetime.fromisoformat(v)
        except ValueError:
            raise CELEvalError("timestamp() conversion error") from None
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=datetime.timezone.utc)
    raise no_overload("timestamp", v)


_DURATION_RE = re.compile(r"^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$")
_DURATION_PART = re.compile(r"([0-9]*(\.[0-9]*)?)([a-z]+)")
_DURATION_SCALE = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0, "d": 86400.0}


def to_duration(v: Any) -> datetime.timedelta:
    k = kind(v)
    if k == "duration":
        return v
    if k != "string":
        raise no_overload("duration", v)
    # Same algorithm as celpy.celtypes.DurationType so both engines round identically.
    if not _DURATION_RE.match(v):
        raise CELEvalError("duration() conversion error")
    sign = -1.0 if v.startswith("-") else 1.0
    body = v[1:] if v[:1] in "+-" else v
    try:
        seconds = sign * fsum(float(m.group(1)) * _DURATION_SCALE[m.group(3)]
                              for m in _DURATION_PART.finditer(body))
    except (KeyError, ValueError):
        raise CELEvalError("duration() conversion error") from None
    if not -_DUR_MAX_SECONDS <= seconds <= _DUR_MAX_SECONDS:
        raise CELEvalError("duration out of range")
    return datetime.timedelta(seconds=seconds)


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


# Constructs whose meaning differs between RE2 and Python `re` (or that RE2 rejects).
# A pattern containing any of them is refused rather than silently evaluated differently.
_RE2_INCOMPATIBLE = re.compile(
    r"\\[1-9]|\(\?[=!<]|\(\?P[=>]|\\[ZAbBGz]|\(\?[aiLmsux-]*[)]|\{,|\*\+|\+\+|\?\+|\(\?#|\\[0-7]{2}"
)
# Thread-safe cache: dict get/set of immutable compiled patterns is atomic under the GIL.
_REGEX_CACHE: dict[str, re.Pattern[str]] = {}
_REGEX_CACHE_MAX = 512


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be run by Python `re` with RE2 semantics, or None if it can."""
    m = _RE2_INCOMPATIBLE.search(pattern)
    if m:
        return f"regex construct {m.group()!r} is not supported (RE2 semantics differ)"
    try:
        re.compile(pattern)
    except re.error as e:
        return f"invalid regex: {e.msg}"
    return None


def compile_regex(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        problem = regex_problem(pattern)
        if problem is not None:
            raise CELEvalError(problem)
        rx = re.compile(pattern)
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


def _local(ts: datetime.datetime, tz: Any) -> datetime.datetime:
    return ts.astimezone(datetime.timezone.utc if tz is None else tz_lookup(tz))


def _ts_accessor(name: str, fn: Callable[[datetime.datetime], int],
                 dur_fn: Callable[[datetime.timedelta], int] | None) -> Callable[..., int]:
    def accessor(v: Any, tz: Any = None) -> int:
        k = kind(v)
        if k == "timestamp":
            return fn(_local(v, tz))
        if k == "duration" and dur_fn is not None and tz is None:
            return dur_fn(v)
        raise no_overload(name, v) if tz is None else no_overload(name, v, tz)

    accessor.__name__ = name
    return accessor


def _day_of_year(d: datetime.datetime) -> int:
    return d.toordinal() - datetime.date(d.year, 1, 1).toordinal()


TIME_ACCESSORS: dict[str, Callable[..., int]] = {
    "getFullYear": _ts_accessor("getFullYear", lambda d: d.year, None),
    "getMonth": _ts_accessor("getMonth", lambda d: d.month - 1, None),
    "getDayOfYear": _ts_accessor("getDayOfYear", _day_of_year, None),
    "getDayOfMonth": _ts_accessor("getDayOfMonth", lambda d: d.day - 1, None),
    "getDate": _ts_accessor("getDate", lambda d: d.day, None),
    "getDayOfWeek": _ts_accessor("getDayOfWeek", lambda d: d.isoweekday() % 7, None),
    "getHours": _ts_accessor("getHours", lambda d: d.hour,
                             lambda t: int(t.total_seconds() / 3600)),
    "getMinutes": _ts_accessor("getMinutes", lambda d: d.minute,
                               lambda t: int(t.total_seconds() / 60)),
    "getSeconds": _ts_accessor("getSeconds", lambda d: d.second,
                               lambda t: int(t.total_seconds())),
    "getMilliseconds": _ts_accessor("getMilliseconds", lambda d: d.microsecond // 1000,
                                    lambda t: int(t.total_seconds() * 1000)),
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
    """Replace internal Uint values by int (recursively) so callers only see plain Python."""
    t = type(v)
    if t is Uint:
        return int(v)
    if t is list:
        return [to_plain(x) for x in v]
    if t is dict:
        return {to_plain(k): to_plain(x) for k, x in v.items()}
    return v
