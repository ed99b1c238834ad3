"""Reference CEL engine: cel-python's interpreter behind the native backend's interface.

Used by tests (differential oracle) and benchmarks; it is slow (hundreds of µs per call).

Example::

    >>> from celpy.celparser import CELParser
    >>> compile_reference(CELParser().parse("a.b + 1"))({"a": {"b": 41}})
    42
"""

from __future__ import annotations

import datetime
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import celpy
import lark
from celpy import celtypes

from ttlpolicy.cel.native_functions import CELEvalError

__all__ = ["compile_reference"]

# Messages we pass through verbatim once the activation dump is cut off. cel-python's other
# messages embed value reprs (i.e. activation data), so they are reduced to a category.
_SAFE_MESSAGE = re.compile(
    r"^(undeclared reference to '[\w.]+'|no such member in mapping: '[\w.]+'|no such key"
    r"|invalid_argument|no such overload|modulus or divide by zero|return error for overflow"
    r"|match error|divide by zero|overflow)"
)


def compile_reference(tree: lark.Tree) -> Callable[[Mapping[str, Any]], Any]:
    """Wrap a celpy parse tree in cel-python's interpreter, with the native interface.

    The activation holds plain Python values; results are converted back to plain Python;
    every evaluation failure (including cel-python crashes such as an uncaught TypeError,
    which it has for e.g. ``x.all(...)`` on an int) becomes :class:`CELEvalError` with a
    short message that never contains the activation.

    Example::

        >>> from celpy.celparser import CELParser
        >>> compile_reference(CELParser().parse("[1, 2].map(x, x * 2)"))({})
        [2, 4]
    """
    # celpy.Environment() calls sys.setrecursionlimit(2500), which could *lower* a limit the
    # application raised; restore it. The global parser (CELParser.CEL_PARSER) is untouched:
    # the tree is already parsed, so only the default InterpretedRunner is created here.
    limit = sys.getrecursionlimit()
    try:
        env = celpy.Environment()
        runner = env.program(tree)
    finally:
        sys.setrecursionlimit(limit)

    def evaluate(activation: Mapping[str, Any]) -> Any:
        try:
            context = {name: celpy.json_to_cel(value) for name, value in activation.items()}
        except (ValueError, TypeError) as e:
            raise CELEvalError(f"unsupported activation value ({type(e).__name__})") from None
        try:
            result = runner.evaluate(context)
        except celpy.CELEvalError as e:
            raise CELEvalError(_short_message(e)) from None
        except RecursionError:
            raise
        except Exception as e:  # cel-python bug surfaced as a Python exception
            raise CELEvalError(f"reference interpreter failed ({type(e).__name__})") from None
        return _to_plain(result)

    return evaluate


def _short_message(e: BaseException) -> str:
    text = str(e.args[0]) if e.args else type(e).__name__
    text = text.split(" (in activation", 1)[0]
    if "found no matching overload" in text:
        return "no such overload"
    m = _SAFE_MESSAGE.match(text)
    return m.group(0) if m else "evaluation error"


def _to_plain(v: Any) -> Any:
    """celtypes -> plain Python. An error value stored inside a map (cel-python keeps
    ``{"a": 1/0}`` as a map holding an error) is raised, as the native backend does."""
    if isinstance(v, celpy.CELEvalError):
        raise CELEvalError(_short_message(v))
    if v is None or isinstance(v, celtypes.BoolType) or type(v) is bool:
        return None if v is None else bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bytes):
        return bytes(v)
    if isinstance(v, datetime.datetime):
        tz = v.tzinfo
        offset = tz.utcoffset(v) if tz is not None else None
        fixed = datetime.timezone.utc if not offset else datetime.timezone(offset)
        return datetime.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second,
                                 v.microsecond, tzinfo=fixed)
    if isinstance(v, datetime.timedelta):
        return datetime.timedelta(days=v.days, seconds=v.seconds, microseconds=v.microseconds)
    if isinstance(v, (list, tuple)):
        return [_to_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {_to_plain(k): _to_plain(x) for k, x in v.items()}
    return v
