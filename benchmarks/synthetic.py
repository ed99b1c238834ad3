"""Synthetic N-rule policies, generated deterministically, in four forms that must agree.

``generate(n, seed)`` returns a :class:`Synthetic` with

* ``yaml``: the ttlpolicy policy (conditions in CEL),
* ``python``: hand-written-style Python source, one ``if`` per rule (what a person would write
  for the same rules; compiled with ``exec`` by :meth:`Synthetic.handwritten`),
* ``rego``: the same policy in Rego v1 (query ``data.ttl.decision``),
* ``conditions``: the CEL condition of every rule, for engines that evaluate conditions only.

Conditions are conjunctions of one to three atoms over the built-in vocabulary (device trust and
platform, MFA, risk, groups, network zone, country, sensitivity, binding, grant, hour, weekday);
effects are factors, caps and floors on both lifetimes, rotation, idle timeouts, step-up and
(rarely) deny. Factors are 0.5, 0.75, 1.25 and 1.5 so every engine's arithmetic agrees exactly.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable
from zoneinfo import ZoneInfo

import handwritten
from contexts import BASE_NOW, workforce_context

Atom = tuple[str, str, Any]  # (operator, attribute path, operand)

_ENUMS = {
    "device.trust": ["managed", "compliant", "known", "unmanaged"],
    "resource.sensitivity": ["public", "internal", "confidential", "restricted"],
    "client.binding": ["mtls", "dpop", "none"],
    "location.zone": ["corporate", "vpn", "partner", "none"],
}
_OPTIONAL = {  # attributes without a default: CEL guards them with has()
    "device.platform": ["windows", "macos", "linux", "ios", "android", "chromeos", "other"],
    "location.country": ["DE", "FR", "US", "GB", "NL", "BR", "IN", "CN"],
    "grant.type": ["authorization_code", "refresh_token", "device_code", "token_exchange"],
}
_UTC = ZoneInfo("UTC")
_GROUPS = ["staff", "engineering", "finance-admins", "contractors", "oncall", "sales", "admins"]


@dataclass
class SyntheticRule:
    name: str
    atoms: list[Atom]
    effects: dict[str, Any]


def _atom(rng: random.Random, path: str) -> Atom:
    if path in _ENUMS:
        values = _ENUMS[path]
        return ("==", path, rng.choice(values)) if rng.random() < 0.6 else ("in", path, rng.sample(values, 2))
    if path in _OPTIONAL:
        return ("has_in", path, rng.sample(_OPTIONAL[path], rng.randrange(1, 3)))
    if path == "user.mfa":
        return ("bool", path, rng.random() < 0.6)
    if path == "user.risk":
        return (rng.choice([">", "<"]), path, rng.choice([0.1, 0.2, 0.3, 0.5, 0.7]))
    if path == "user.groups":
        return ("contains", path, rng.choice(_GROUPS))
    if path == "time.hour":
        return (rng.choice([">=", "<"]), path, rng.randrange(5, 22))
    if path == "time.weekday":
        return ("in", path, rng.sample(list(handwritten.WEEKDAYS), rng.randrange(1, 4)))
    raise AssertionError(path)


_PATHS = [*_ENUMS, *_OPTIONAL, "user.mfa", "user.risk", "user.groups", "time.hour", "time.weekday"]
_DURATION_CHOICES = {
    "access_cap": [300, 900, 1800, 3600, 7200], "access_floor": [300, 600, 900],
    "refresh_cap": [3600, 28800, 86400, 259200, 604800], "refresh_floor": [3600, 28800],
    "idle_timeout": [14400, 28800, 86400],
}


def _effects(rng: random.Random, rare_deny: bool) -> dict[str, Any]:
    e: dict[str, Any] = {}
    for target, factors in (("access", [0.5, 0.75, 1.25, 1.5]), ("refresh", [0.5, 0.75, 1.5])):
        if rng.random() < 0.35:
            e[f"{target}_factor"] = rng.choice(factors)
        roll = rng.random()
        if roll < 0.3:
            e[f"{target}_cap"] = rng.choice(_DURATION_CHOICES[f"{target}_cap"])
        elif roll < 0.4:
            e[f"{target}_floor"] = rng.choice(_DURATION_CHOICES[f"{target}_floor"])
    if rng.random() < 0.1:
        e["rotation"] = True
    if rng.random() < 0.05:
        e["idle_timeout"] = rng.choice(_DURATION_CHOICES["idle_timeout"])
    if rng.random() < 0.05:
        e["step_up"] = "synthetic step-up"
    if rare_deny:
        e["deny"] = "synthetic deny"
    if not e:
        e["access_cap"] = 3600
    return e


def _cel(atom: Atom) -> str:
    op, path, v = atom
    if op == "has_in":
        return f"has({path}) && {path} in {json.dumps(v)}"
    if op == "in":
        return f"{path} in {json.dumps(v)}"
    if op == "bool":
        return path if v else f"!{path}"
    if op == "contains":
        return f"{json.dumps(v)} in {path}"
    return f"{path} {op} {json.dumps(v)}"


def _py(atom: Atom) -> str:
    op, path, v = atom
    ns, attr = path.split(".")
    ref = f"{ns}[{attr!r}]"
    if op == "has_in":
        return f"{ns}.get({attr!r}) in {tuple(v)!r}"
    if op == "in":
        return f"{ref} in {tuple(v)!r}"
    if op == "bool":
        return ref if v else f"not {ref}"
    if op == "contains":
        return f"{v!r} in {ref}"
    return f"{ref} {op} {v!r}"


def _rego(atom: Atom) -> str:
    op, path, v = atom
    ref = f"input.{path}"
    if op in ("has_in", "in"):
        return f"{ref} in {{{', '.join(json.dumps(x) for x in v)}}}"
    if op == "bool":
        return ref if v else f"not {ref}"
    if op == "contains":
        return f"{json.dumps(v)} in {ref}"
    return f"{ref} {op} {json.dumps(v)}"


def _seconds(value: float) -> int:
    return int(math.floor(value + 1e-6))


ACCESS_DEFAULT, REFRESH_DEFAULT, IDLE_DEFAULT = 3600, 14 * 86400, 7 * 86400
ACCESS_MIN, ACCESS_MAX, REFRESH_MIN, REFRESH_MAX = 60, 12 * 3600, 300, 90 * 86400


def combine(rules: list[SyntheticRule], matched: list[int]) -> dict[str, Any]:
    """The ttlpolicy combination for the synthetic policy (no tiers, no session cap)."""
    af, rf = [], []
    access_floor = refresh_floor = 0
    access_cap, refresh_cap, idle = ACCESS_MAX, REFRESH_MAX, IDLE_DEFAULT
    rotation = step_up = deny = False
    for index in matched:
        rule = rules[index]
        e = rule.effects
        if "access_factor" in e:
            af.append((e["access_factor"], rule.name))
        if "refresh_factor" in e:
            rf.append((e["refresh_factor"], rule.name))
        access_floor = max(access_floor, e.get("access_floor", 0))
        refresh_floor = max(refresh_floor, e.get("refresh_floor", 0))
        access_cap = min(access_cap, e.get("access_cap", ACCESS_MAX))
        refresh_cap = min(refresh_cap, e.get("refresh_cap", REFRESH_MAX))
        idle = min(idle, e.get("idle_timeout", IDLE_DEFAULT))
        rotation = rotation or e.get("rotation", False)
        step_up = step_up or "step_up" in e
        deny = deny or "deny" in e
    access, refresh = float(ACCESS_DEFAULT), float(REFRESH_DEFAULT)
    for factor, _ in sorted(af):
        access *= factor
    for factor, _ in sorted(rf):
        refresh *= factor
    a = min(max(_seconds(access), access_floor), access_cap)
    r = min(max(_seconds(refresh), refresh_floor), refresh_cap, idle)
    a = max(min(a, ACCESS_MAX), ACCESS_MIN)
    r = min(r, REFRESH_MAX)
    if r > 0:
        r = max(r, REFRESH_MIN)
    if deny:
        a = r = 0
    return {"allow": not deny, "access_ttl": a, "refresh_ttl": r, "step_up": step_up, "rotation": rotation,
            "idle_timeout": idle}


def prepare(context: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The shared prepared input (see handwritten.prepare), with the platform kept and time in UTC."""
    i = handwritten.prepare(context, now, _UTC)
    if grant := context.get("grant", {}).get("type"):
        i["grant"]["type"] = grant
    else:
        i["grant"].pop("type", None)
    return i


@dataclass
class Synthetic:
    n: int
    rules: list[SyntheticRule]
    yaml: str
    python: str
    rego: str
    conditions: list[str] = field(default_factory=list)

    def handwritten(self) -> Callable[[dict[str, Any], datetime], dict[str, Any]]:
        namespace: dict[str, Any] = {"prepare": prepare, "combine": combine, "RULES": self.rules}
        exec(compile(self.python, f"<synthetic-{self.n}>", "exec"), namespace)  # noqa: S102 - our own source
        return namespace["decide"]


def generate(n: int, seed: int = 200) -> Synthetic:
    rng = random.Random(seed * 1000 + n)
    rules = []
    for index in range(n):
        paths = rng.sample(_PATHS, rng.choice([1, 2, 2, 3]))
        deny = len(paths) == 3 and rng.random() < 0.1
        rules.append(SyntheticRule(f"r{index:04d}", [_atom(rng, p) for p in paths], _effects(rng, deny)))
    conditions = [" && ".join(f"({_cel(a)})" if len(r.atoms) > 1 else _cel(a) for a in r.atoms) for r in rules]

    def duration(seconds: int) -> str:
        return f"{seconds}s"
    lines = ["apiVersion: ttlpolicy/v1", f"name: synthetic-{n}", "default: true", "timezone: UTC",
             "description: Synthetic benchmark policy (benchmarks/synthetic.py).",
             "defaults: {access_ttl: 1h, refresh_ttl: 14d, refresh: {idle_timeout: 7d}}",
             "limits: {access_ttl: {min: 1m, max: 12h}, refresh_ttl: {min: 5m, max: 90d}}",
             'zones: {corporate: [10.0.0.0/8, "2001:db8:100::/48"], vpn: [172.16.0.0/12], '
             "partner: [198.51.100.0/24]}", "rules:"]
    for rule, condition in zip(rules, conditions):
        e = rule.effects
        lines += [f"  - name: {rule.name}", f"    when: {json.dumps(condition)}"]
        for target in ("access", "refresh"):
            parts = []
            if f"{target}_factor" in e:
                parts.append(f"multiply: {e[target + '_factor']}")
            if f"{target}_cap" in e:
                parts.append(f"cap: {duration(e[target + '_cap'])}")
            if f"{target}_floor" in e:
                parts.append(f"floor: {duration(e[target + '_floor'])}")
            if parts:
                lines.append(f"    {target}_ttl: {{{', '.join(parts)}}}")
        refresh = []
        if e.get("rotation"):
            refresh.append("rotation: true")
        if "idle_timeout" in e:
            refresh.append(f"idle_timeout: {duration(e['idle_timeout'])}")
        if refresh:
            lines.append(f"    refresh: {{{', '.join(refresh)}}}")
        for key in ("step_up", "deny"):
            if key in e:
                lines.append(f"    {key}: {e[key]}")
    yaml = "\n".join(lines) + "\n"

    py = ["def decide(context, now):", "    i = prepare(context, now)",
          "    device, location, user = i['device'], i['location'], i['user']",
          "    resource, client, grant, time = i['resource'], i['client'], i['grant'], i['time']",
          "    matched = []"]
    for index, rule in enumerate(rules):
        py.append(f"    if {' and '.join(_py(a) for a in rule.atoms)}:")
        py.append(f"        matched.append({index})")
    py.append("    return combine(RULES, matched)")
    python = "\n".join(py) + "\n"

    rego = [f"# Generated by benchmarks/synthetic.py: synthetic-{n} in Rego v1. Query: data.ttl.decision",
            "package ttl", "", "import rego.v1", ""]
    for rule in rules:
        rego.append(f'matched contains "{rule.name}" if {{')
        rego += [f"\t{_rego(a)}" for a in rule.atoms]
        rego += ["}", ""]

    def table(name: str, key: str, value: Callable[[Any], str] = json.dumps) -> None:
        items = [f'\t"{r.name}": {value(r.effects[key])},' for r in rules if key in r.effects]
        rego.append(f"{name} := {{\n" + "\n".join(items) + "\n}" if items else f"{name} := {{}}")
        rego.append("")
    for key in ("access_factor", "refresh_factor", "access_cap", "refresh_cap", "access_floor", "refresh_floor",
                "idle_timeout"):
        table(f"{key}_of", key)
    for key in ("deny", "step_up", "rotation"):
        names = [json.dumps(r.name) for r in rules if key in r.effects]
        rego += [f"{key}_rules := {{\n\t" + ",\n\t".join(names) + "\n}" if names else f"{key}_rules := set()", ""]
    rego.append(_REGO_COMBINE)
    return Synthetic(n, rules, yaml, python, "\n".join(rego), conditions)


# Same shape as benchmarks/rego/workforce.rego: iterate the effect tables, test `r in matched`.
_REGO_COMBINE = '''access_factors := [f | some r, f in access_factor_of; r in matched]

refresh_factors := [f | some r, f in refresh_factor_of; r in matched]

access_floored := max({floor((3600 * product(access_factors)) + 0.000001)} | {f | some r, f in access_floor_of; r in matched})

refresh_floored := max({floor((1209600 * product(refresh_factors)) + 0.000001)} | {f | some r, f in refresh_floor_of; r in matched})

access_capped := min({access_floored, 43200} | {c | some r, c in access_cap_of; r in matched})

idle_timeout := min({604800} | {s | some r, s in idle_timeout_of; r in matched})

refresh_capped := min({refresh_floored, 7776000, idle_timeout} | {c | some r, c in refresh_cap_of; r in matched})

access_limited := max([access_capped, 60])

refresh_limited := max([refresh_capped, 300]) if refresh_capped > 0
else := 0

denied if {
	some r in deny_rules
	r in matched
}

default step_up := false

step_up if {
	some r in step_up_rules
	r in matched
}

default rotation := false

rotation if {
	some r in rotation_rules
	r in matched
}

decision := {"allow": false, "access_ttl": 0, "refresh_ttl": 0, "step_up": step_up, "rotation": rotation,
	"idle_timeout": idle_timeout} if denied
else := {"allow": true, "access_ttl": access_limited, "refresh_ttl": refresh_limited, "step_up": step_up,
	"rotation": rotation, "idle_timeout": idle_timeout}
'''


def synthetic_contexts(n: int, seed: int = 5) -> list[tuple[dict[str, Any], str]]:
    """Workforce-like contexts without the attributes only the workforce policy declares."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ctx, now = workforce_context(rng)
        ctx.pop("tier", None)
        ctx["user"].pop("department", None)
        ctx["location"].pop("expected_countries", None)
        ctx.pop("time", None)  # the synthetic policy decides in UTC
        out.append((ctx, now))
    return out


__all__ = ["BASE_NOW", "Synthetic", "combine", "generate", "prepare", "synthetic_contexts", "timedelta"]
