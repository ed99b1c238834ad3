"""Rate limits in the policy language: compiled at load, counted on the store at decision time.

.. code-block:: yaml

    rate_limits:
      - name: refresh-per-user
        description: A runaway client or a stolen refresh token refreshes far too often.
        when: grant.type == "refresh_token"
        key: [user.id]                 # CEL over the declared attributes; also `caller`
        rate: [20 per 1h, 100 per 1d]  # every window must have room
        on_exceed:
          deny: too many refresh attempts   # and/or step_up: ..., access_ttl: 5m, refresh_ttl: 0s

A decision whose context matches ``when`` counts one event for its key in every window; when
any window is full the event is *not* counted and ``on_exceed`` applies (it can only tighten:
deny, step-up, ceilings). The decision names the limit, its key (hashed), and ``retry_after``.

Counting happens only where a caller asks for it — the service, or the library through
:class:`~ttlpolicy.state.runtime.StateRuntime`. ``PolicySet.decide``, ``ttlpolicy test``,
``diff`` and ``decide`` never consume quota, so decisions stay reproducible offline.

Keys: each part is a CEL expression (``user.id``, ``location.ip``, ``client.id``, a declared
``tenant.id``…) or the word ``caller`` (who called the decision API: the API key's name or the
JWT subject). Shorthands: ``user`` → ``user.id``, ``client`` → ``client.id``, ``ip`` →
``location.ip``. A part that cannot be evaluated (the attribute is absent) counts under the
shared value ``<unknown>``: a limit never disappears because a field is missing. Every part
reads ``location.ip`` in one spelling per address (:func:`canonical_ip`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..context import parse_ip
from ..durations import format_duration, parse_duration
from ..errors import Location, Problem
from ..model import Attribute, RateLimit
from .conditions import Program, compile_condition
from .store import Window, WindowHit
from .tighten import Ceiling

RATE = re.compile(r"^\s*(\d+)\s+per\s+(\S+)\s*$")
# The vocabulary's IP address attribute (validated by context.parse_ip): its key values are
# written one way per address (canonical_ip).
IP_ATTRIBUTES = frozenset({"location.ip"})
SHORTHANDS = {"user": "user.id", "client": "client.id", "ip": "location.ip"}
CALLER = "caller"
UNKNOWN = "<unknown>"


def parse_rate(text: str) -> Window:
    """``"20 per 1h"`` → ``Window(20, 3600)``; raises ValueError."""
    match = RATE.match(text)
    if not match:
        raise ValueError(f"not a rate: {text!r} (write e.g. '20 per 1h')")
    limit, seconds = int(match.group(1)), parse_duration(match.group(2))
    if limit < 1:
        raise ValueError(f"{text!r}: the count must be at least 1")
    if seconds < 1:
        raise ValueError(f"{text!r}: the window must be at least 1s")
    return Window(limit, seconds)


@dataclass(frozen=True, slots=True)
class KeyPart:
    text: str
    program: Program | None  # None for `caller`
    # For a part that is a declared string attribute and nothing else (`user.id`, `client.id`,
    # `location.ip`): where it is in the context. Its value in the activation is the value sent,
    # unchanged (a string is validated, never normalised), so it is read from the context without
    # building the activation again (~10 µs a decision). Anything else (an attribute with a
    # default, another type, an expression) goes through the program.
    path: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CompiledRateLimit:
    name: str
    description: str
    when: str
    condition: Program
    key: tuple[KeyPart, ...]
    rates: tuple[str, ...]
    windows: tuple[Window, ...]
    deny: str | None
    step_up: str | None
    access_ttl: int | None
    refresh_ttl: int | None

    def ceiling(self, retry_after: float) -> Ceiling:
        source = f"rate limit {self.name} ({', '.join(self.rates)}; retry after {_retry(retry_after)})"
        return Ceiling("rate_limit", source, self.access_ttl, self.refresh_ttl, self.deny, self.step_up)

    @property
    def needs_activation(self) -> bool:
        """Whether counting this limit needs the request's activation (else the context will do)."""
        return self.when.strip() != "true" or any(p.program is not None and p.path is None for p in self.key)

    def key_values(self, activation: Mapping[str, Any] | None, caller: str | None,
                   context: Mapping[str, Any] | None = None) -> list[str]:
        """The key's values for a request: from ``activation``, or, for the parts that allow it
        (:attr:`KeyPart.path`), from the ``context`` the policy has already validated."""
        values = []
        canonical: Mapping[str, Any] | None = None  # the activation with the address written one way
        for part in self.key:
            if part.program is None:
                values.append(caller or UNKNOWN)
                continue
            if part.path is not None and context is not None:
                value = _sent(context, part.path)
                if value is not None and part.text in IP_ATTRIBUTES:
                    value = canonical_ip(value)
            else:
                # Any expression may read the address (`location.ip + "/" + client.id`): it reads
                # the canonical one, or two spellings of one address would be two keys.
                if canonical is None:
                    canonical = _with_canonical_ip(activation or {})
                try:
                    value = part.program(canonical)
                except Exception:  # noqa: BLE001 - an absent attribute: count under the shared unknown value
                    value = None
            values.append(UNKNOWN if value is None else str(value))
        return values


def _with_canonical_ip(activation: Mapping[str, Any]) -> Mapping[str, Any]:
    """``activation`` with ``location.ip`` in its :func:`canonical_ip` spelling."""
    location = activation.get("location")
    if not isinstance(location, Mapping) or not isinstance(location.get("ip"), str):
        return activation
    return {**activation, "location": {**location, "ip": canonical_ip(location["ip"])}}


def canonical_ip(text: str) -> str:
    """One spelling per address, so that a per-IP limit cannot be dodged by writing the same
    address another way: ``2001:DB8::1``, ``2001:db8:0::1`` → ``2001:db8::1``;
    ``::ffff:192.0.2.1`` → ``192.0.2.1`` (as the policy's own IP checks read it)."""
    try:
        version, value = parse_ip(text)
    except ValueError:
        return text  # not reached for a validated context; counted under what was sent
    return str(ipaddress.IPv4Address(value)) if version == 4 else ipaddress.IPv6Address(value).compressed


def _sent(context: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    value: Any = context
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value if isinstance(value, str) else None  # absent or JSON null: not known


def _plain_string(text: str, attributes: Mapping[str, Attribute]) -> tuple[str, ...] | None:
    """The context path of ``text`` when it names a sent string attribute without a default."""
    attribute = attributes.get(text)
    if attribute is None or attribute.type != "string" or attribute.derived or attribute.default is not None:
        return None
    return tuple(text.split("."))


def _retry(seconds: float) -> str:
    whole = retry_after_seconds(seconds)
    return "never" if whole is None else format_duration(whole)


def key_digest(values: Sequence[str]) -> str:
    """The digest of a key's values, from which both :func:`hashed_key` and :func:`store_key` are cut."""
    return hashlib.sha256("\x1f".join(values).encode()).hexdigest()


def hashed_key(values: Sequence[str], digest: str | None = None) -> str:
    """What a decision and the log show of a key: a digest, never the user id or IP itself."""
    return "sha256:" + (digest or key_digest(values))[:16]


def store_key(policy: str, limit: str, values: Sequence[str], digest: str | None = None) -> str:
    return f"ratelimit:{policy}:{limit}:{(digest or key_digest(values))[:32]}"


@dataclass(frozen=True, slots=True)
class RateLimitOutcome:
    """One limit's answer for one decision."""

    limit: CompiledRateLimit
    key: str  # hashed
    hit: WindowHit

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.limit.name, "key": self.key, "rate": list(self.limit.rates),
                               "counts": list(self.hit.counts), "exceeded": not self.hit.allowed}
        if not self.hit.allowed:
            out["retry_after"] = retry_after_seconds(self.hit.retry_after)
        return out


def retry_after_seconds(seconds: float) -> int | None:
    """Whole seconds for Retry-After (rounded up; None when it can never fit)."""
    if seconds == math.inf:
        return None
    return max(1, math.ceil(seconds))


def compile_rate_limits(limits: Sequence[RateLimit], attributes: Mapping[str, Attribute], documents: Mapping[str, Any],
                        locate: Any) -> tuple[tuple[CompiledRateLimit, ...], list[Problem]]:
    """Compile a policy's rate limits; problems (at their line and column) instead of raising.

    ``documents`` maps file names to loaded documents (for positions inside CEL strings) and
    ``locate(path, file=...)`` gives a Location for a path, as the rest of the loader does."""
    problems: list[Problem] = []
    compiled = []
    seen: set[str] = set()

    def report(limit: RateLimit, code: str, message: str, field: tuple[Any, ...],
               at: tuple[str, int, int] | None = None) -> None:
        """A problem at ``field`` of ``limit``, in the file that wrote it (a base's, for an inherited
        one); ``at``: the CEL text the problem is in, and its line and column there."""
        path = ("rate_limits", limit.index, *field)
        location: Location
        doc = documents.get(limit.file)
        if at is not None and doc is not None:
            text, line, column = at
            offset = sum(len(s) + 1 for s in text.split("\n")[: line - 1]) + column - 1
            location = doc.string_location(path, offset)
        else:
            location = locate(path, file=limit.file)
        problems.append(Problem(code, message, location, path=".".join(map(str, path))))

    for limit in limits:
        duplicate = limit.name in seen
        if duplicate:
            report(limit, "duplicate-rate-limit", f"rate limit name {limit.name!r} is already used", ("name",))
        seen.add(limit.name)
        condition, issues = compile_condition(limit.when, attributes)
        for issue in issues:
            report(limit, issue.code, issue.message, ("when",), (limit.when, issue.line, issue.column))
        parts = []
        for i, raw in enumerate(limit.key):
            text = SHORTHANDS.get(raw, raw)
            if text == CALLER:
                parts.append(KeyPart(CALLER, None))
                continue
            program, issues = compile_condition(text, attributes, expect="key")
            for issue in issues:  # never for a shorthand: each names a built-in string attribute
                report(limit, issue.code, issue.message, ("key", i), (raw, issue.line, issue.column))
            if program is not None:
                parts.append(KeyPart(text, program, _plain_string(text, attributes)))
        windows = []
        for i, rate in enumerate(limit.rate):
            try:
                windows.append(parse_rate(rate))
            except ValueError as exc:
                report(limit, "rate-limit-rate", str(exc), ("rate", i))
        if condition is None or len(parts) != len(limit.key) or len(windows) != len(limit.rate) or duplicate:
            continue
        effect = limit.on_exceed
        compiled.append(CompiledRateLimit(
            name=limit.name, description=limit.description, when=limit.when, condition=condition, key=tuple(parts),
            rates=tuple(r.strip() for r in limit.rate), windows=tuple(windows), deny=effect.deny,
            step_up=effect.step_up, access_ttl=effect.access_ttl, refresh_ttl=effect.refresh_ttl))
    return tuple(sorted(compiled, key=lambda c: c.name)), problems
