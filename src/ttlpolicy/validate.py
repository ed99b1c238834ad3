"""Stage 2 — validate: the JSON Schema, then the checks a schema cannot express.

Schema errors are located with the positions the loader recorded; semantic checks (limits,
tiers, zones, attribute declarations, rules without effect) work on the typed model of one
effective policy, after ``extends`` has been resolved.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
from functools import cache
from importlib import resources
from typing import Any, Iterable

import jsonschema

from .context import zone_info
from .durations import DURATION_PATTERN, RATE_PATTERN, format_duration
from .errors import Location, Problem
from .load import Document, JsonPath
from .model import Attribute, PolicyDocument, RefreshSettings
from .vocabulary import BUILTIN

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def policy_schema() -> dict[str, Any]:
    """The policy JSON Schema (draft 2020-12), as shipped in the package."""
    text = resources.files("ttlpolicy").joinpath("policy.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_inline_refs(policy_schema(), policy_schema().get("$defs", {})))


_ANNOTATIONS = frozenset({"description", "title", "$comment", "examples", "default"})


def _inline_refs(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """The schema with each ``{"$ref": "#/$defs/x"}`` replaced by ``x`` itself (a copy).

    The same constraints, checked in half the time: jsonschema resolves a ``$ref`` through its
    registry every time it meets one, ~4,000 times for a 1,000-rule policy. A reference with
    sibling constraints (which 2020-12 applies *in addition*) or a recursive one is kept."""
    if isinstance(node, list):
        return [_inline_refs(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and set(node) - {"$ref"} <= _ANNOTATIONS:
        name = ref[len("#/$defs/"):]
        if name in defs and name not in seen:
            return _inline_refs(defs[name], defs, seen + (name,))
    return {key: value if key == "$defs" else _inline_refs(value, defs, seen) for key, value in node.items()}


def schema_problems(doc: Document) -> list[Problem]:
    """Every schema violation in ``doc``, each at the line and column of the offending value."""
    problems = []
    for error in _validator().iter_errors(doc.data):
        for leaf in _leaves(error):
            path: JsonPath = tuple(leaf.absolute_path)
            key = leaf.validator == "additionalProperties" or leaf.validator == "propertyNames"
            if leaf.validator == "additionalProperties":
                extra = _extra_keys(leaf)
                for name in extra:
                    problems.append(Problem("schema", f"unknown key {name!r}{_where(path)}",
                                            doc.location(path + (name,), key=True), path=_dotted(path + (name,))))
                continue
            if leaf.validator == "propertyNames":
                bad = leaf.instance
                path = path + (bad,)
            problems.append(Problem("schema", _message(leaf), doc.location(path, key=key), path=_dotted(path)))
    return problems


def _leaves(error: jsonschema.ValidationError) -> Iterable[jsonschema.ValidationError]:
    """For ``oneOf`` failures report the alternative that came closest, not all of them.

    An alternative that failed only on its type (a duration given as a list, say) is less
    telling than one of the right type that failed its pattern, so type failures go last.
    """
    if error.validator in ("oneOf", "anyOf") and error.context:
        telling = [e for e in error.context if e.validator != "type"]
        if telling:
            best = jsonschema.exceptions.best_match(telling)
            if best is not None:
                yield from _leaves(best)
                return
        expected = " or ".join(sorted({str(e.validator_value) for e in error.context if e.validator == "type"}))
        error.message = f"expected {expected}, got {_json_type(error.instance)}"
    yield error


def _extra_keys(error: jsonschema.ValidationError) -> list[str]:
    allowed = set(error.schema.get("properties", {}))
    return [k for k in error.instance if k not in allowed]


def _where(path: JsonPath) -> str:
    return f" in {_dotted(path)}" if path else ""


def _dotted(path: JsonPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: jsonschema.ValidationError) -> str:
    where = _dotted(tuple(error.absolute_path)) or "the document"
    v = error.validator
    if v == "required":
        return error.message.replace("is a required property", f"is required in {where}")
    if v == "pattern" and error.schema.get("pattern") == DURATION_PATTERN:
        return f"{where}: {error.instance!r} is not a duration (write e.g. 90s, 15m, 1h30m, 14d or PT15M)"
    if v == "pattern" and error.schema.get("pattern") == RATE_PATTERN:
        return f"{where}: {error.instance!r} is not a rate (write e.g. '20 per 1h')"
    if v == "pattern":
        return f"{where}: {error.instance!r} is not a valid name (lower case letters, digits, - and _)"
    if v == "type":
        return f"{where}: expected {error.validator_value}, got {_json_type(error.instance)}"
    if v == "const":
        return f"{where}: must be {error.validator_value!r}"
    if v == "enum":
        return f"{where}: must be one of {', '.join(map(str, error.validator_value))}"
    return f"{where}: {error.message}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


# -- semantic checks on one effective policy ----------------------------------------------------

class Locator:
    """Finds the line and column of a path in whichever file a value came from."""

    def __init__(self, documents: dict[str, Document], owner: dict[JsonPath, str], default_file: str):
        self.documents, self.owner, self.default_file = documents, owner, default_file

    def __call__(self, path: JsonPath, *, key: bool = False, file: str | None = None) -> Location:
        file = file or self._file_of(path)
        doc = self.documents.get(file)
        return doc.location(path, key=key) if doc else Location(file)

    def _file_of(self, path: JsonPath) -> str:
        for end in range(len(path), 0, -1):
            if path[:end] in self.owner:
                return self.owner[path[:end]]
        return self.default_file


def semantic_problems(policy: PolicyDocument, where: Locator) -> list[Problem]:
    problems: list[Problem] = []

    def add(code: str, message: str, path: JsonPath, *, key: bool = False, file: str | None = None,
            severity: str = "error") -> None:
        problems.append(Problem(code, message, where(path, key=key, file=file), severity,  # type: ignore[arg-type]
                                _dotted(path)))

    _check_limits(policy, add)
    _check_tiers(policy, add)
    problems += zone_problems(policy, where)
    _check_attributes(policy, add)
    if policy.timezone is not None:
        try:
            zone_info(policy.timezone)
        except ValueError as exc:
            add("invalid-timezone", str(exc), ("timezone",))
    _check_reuse_grace(policy.defaults.refresh, ("defaults", "refresh"), None, add)
    seen: dict[str, Location] = {}
    for rule in policy.rules:
        path: JsonPath = ("rules", rule.index)
        here = where(path + ("name",), file=rule.file)
        if rule.name in seen:
            # A YAML alias (`- *rule`) repeats a rule: point at the alias, not at the anchor it copies.
            doc = where.documents.get(rule.file)
            aliased = doc is not None and path in doc.aliases
            first = seen[rule.name]
            add("duplicate-rule", f"rule name {rule.name!r} is already used by the rule at {first} "
                f"(rule names must be unique: rename one{', or remove this alias' if aliased else ''})",
                path if aliased else path + ("name",), file=rule.file)
            if aliased:
                continue  # the copy's other problems are the original's, reported there
        else:
            seen[rule.name] = here
        _check_reuse_grace(rule.refresh, path + ("refresh",), rule.file, add)
        if not any((rule.access_ttl, rule.refresh_ttl, rule.refresh, rule.step_up, rule.deny)):
            add("rule-no-effect", f"rule {rule.name!r} has no effect (give it access_ttl, refresh_ttl, refresh, "
                "step_up or deny)", path + ("name",), file=rule.file)
        for target in ("access_ttl", "refresh_ttl"):
            effect = getattr(rule, target)
            if effect and effect.cap is not None and effect.floor is not None and effect.floor > effect.cap:
                add("floor-above-cap", f"{target} floor {format_duration(effect.floor)} is above its cap "
                    f"{format_duration(effect.cap)}, which always wins; lower the floor or drop it",
                    path + (target, "floor"), file=rule.file)
            factor = effect.multiply if effect else None
            if factor and factor.max is not None and factor.max < factor.min:
                add("factor-bounds", f"multiply max {factor.max:g} is below min {factor.min:g}: the factor would "
                    "have no allowed value; swap them or raise max", path + (target, "multiply", "max"),
                    file=rule.file)
    return problems


MAX_REUSE_GRACE = 300  # seconds; docs/policy-language.md "Bounds" (a test reads the documented value)


def _check_reuse_grace(settings: RefreshSettings | None, path: JsonPath, file: str | None, add: Any) -> None:
    """A rotated refresh token stays replayable for the grace window: the docs allow at most 5m."""
    grace = settings.reuse_grace if settings is not None else None
    if grace is not None and grace > MAX_REUSE_GRACE:
        add("setting-bound", f"reuse_grace {format_duration(grace)} is above the maximum "
            f"{format_duration(MAX_REUSE_GRACE)}: a stolen rotated refresh token would stay usable that long; "
            f"use at most {format_duration(MAX_REUSE_GRACE)} (a client's retry needs seconds)",
            path + ("reuse_grace",), file=file)


def _check_limits(policy: PolicyDocument, add: Any) -> None:
    for target in ("access_ttl", "refresh_ttl"):
        limit = getattr(policy.limits, target)
        if limit.min is not None and limit.max is not None and limit.min > limit.max:
            add("limit-min-above-max", f"limits.{target}.min ({format_duration(limit.min)}) is above max "
                f"({format_duration(limit.max)}): no lifetime could satisfy both; lower min or raise max",
                ("limits", target, "min"))
    if not policy.abstract:
        for target in ("access_ttl", "refresh_ttl"):
            if getattr(policy.defaults, target) is None and (
                    not policy.tiers or any(getattr(t, target) is None for t in policy.tiers.values())):
                add("missing-base", f"no base {target}: set defaults.{target} (or {target} in every tier)",
                    ("defaults",) if policy.defaults != type(policy.defaults)() else ("name",))
    access, refresh = policy.defaults.access_ttl, policy.defaults.refresh_ttl
    if access is not None and refresh and refresh < access:
        add("refresh-shorter-than-access", f"defaults.refresh_ttl ({format_duration(refresh)}) is shorter than "
            f"defaults.access_ttl ({format_duration(access)}): make it at least {format_duration(access)}, or 0s "
            "for no refresh tokens", ("defaults", "refresh_ttl"))
    if policy.defaults.tier is not None and policy.defaults.tier not in policy.tiers:
        close = difflib.get_close_matches(policy.defaults.tier, list(policy.tiers), n=1)
        add("unknown-tier", f"defaults.tier {policy.defaults.tier!r} is not a tier of this policy "
            f"(tiers: {', '.join(policy.tiers) or 'none'}){f'; did you mean {close[0]!r}?' if close else ''}",
            ("defaults", "tier"))


def _check_tiers(policy: PolicyDocument, add: Any) -> None:
    for name, tier in policy.tiers.items():
        path: JsonPath = ("tiers", name)
        for target in ("access_ttl", "refresh_ttl"):
            ceiling = getattr(tier, f"max_{target}")
            global_max = getattr(policy.limits, target).max
            if ceiling is not None and global_max is not None and ceiling > global_max:
                add("tier-above-limit", f"tier {name} max_{target} ({format_duration(ceiling)}) is above "
                    f"limits.{target}.max ({format_duration(global_max)}), which always wins; lower it to at most "
                    f"{format_duration(global_max)}", path + (f"max_{target}",))
            base = getattr(tier, target)
            if base is not None and ceiling is not None and base > ceiling:
                add("tier-above-limit", f"tier {name} {target} ({format_duration(base)}) is above its own "
                    f"max_{target} ({format_duration(ceiling)}); lower the base or raise the ceiling",
                    path + (target,))
        access = tier.access_ttl if tier.access_ttl is not None else policy.defaults.access_ttl
        refresh = tier.refresh_ttl if tier.refresh_ttl is not None else policy.defaults.refresh_ttl
        if access is not None and refresh and refresh < access:
            # point at whichever of the two the tier itself sets (the other comes from defaults)
            at = path + ("refresh_ttl",) if tier.refresh_ttl is not None else path + ("access_ttl",)
            add("refresh-shorter-than-access", f"tier {name}: refresh_ttl ({format_duration(refresh)}) is shorter "
                f"than access_ttl ({format_duration(access)}); make it at least {format_duration(access)}, or 0s "
                "for no refresh tokens", at if tier.refresh_ttl is not None or tier.access_ttl is not None else path)


def parse_zones(policy: PolicyDocument) -> list[tuple[Network, str]]:
    """The zone table, for lookups; assumes :func:`zone_problems` found nothing."""
    return [(ipaddress.ip_network(cidr, strict=False), name)
            for name, cidrs in policy.zones.items() for cidr in cidrs]


def zone_problems(policy: PolicyDocument, where: Locator) -> list[Problem]:
    problems = []
    parsed: list[tuple[Network, str, JsonPath]] = []
    for name, cidrs in policy.zones.items():
        for i, cidr in enumerate(cidrs):
            path: JsonPath = ("zones", name, i)
            try:
                parsed.append((ipaddress.ip_network(cidr, strict=True), name, path))
            except ValueError as exc:
                problems.append(Problem("invalid-cidr", f"{cidr!r} is not a CIDR: {exc}", where(path), path=_dotted(path)))
    for i, (net, name, path) in enumerate(parsed):
        for other, other_name, other_path in parsed[:i]:
            if net.version == other.version and net.overlaps(other):
                problems.append(Problem(
                    "zone-overlap", f"{net} (zone {name}) overlaps {other} (zone {other_name}, line "
                    f"{where(other_path).line}); a request IP must map to one zone", where(path), path=_dotted(path)))
    return problems


def _check_attributes(policy: PolicyDocument, add: Any) -> None:
    for name, attribute in policy.attributes.items():
        path: JsonPath = ("attributes", name)
        builtin = BUILTIN.get(name)
        if builtin is not None and builtin.derived:
            add("attribute-derived", f"{name} is derived by ttlpolicy and cannot be redeclared", path, key=True)
            continue
        if name.split(".")[0] in {n.split(".")[0] for n in BUILTIN if "." in n} and "." not in name:
            add("attribute-name", f"{name} is a built-in namespace; declare an attribute inside it, e.g. {name}.x",
                path, key=True)
        if builtin is not None and attribute.type != builtin.type:
            # The service, the token claims and the checks of location.ip, location.country and
            # time.zone rely on a built-in attribute's type: a redeclaration narrows, it does not retype.
            add("attribute-type", f"{name} is a built-in {builtin.type} attribute; a redeclaration may narrow its "
                f"values or give it a default, not make it {attribute.type}", path + ("type",))
            continue
        if attribute.values is not None and attribute.type not in ("string", "list"):
            add("attribute-values", f"values are only allowed for string and list attributes, not {attribute.type}",
                path + ("values",))
        if attribute.min is not None and attribute.max is not None and attribute.min > attribute.max:
            add("attribute-bounds", f"{name}: min {attribute.min:g} is above max {attribute.max:g}; swap them",
                path + ("min",))
        if attribute.default is not None:
            from .context import EXTRA_CHECKS, check_value  # the same checks a request value gets

            message = check_value(attribute, attribute.default)
            extra = EXTRA_CHECKS.get(name)
            if message is None and extra is not None:  # an IP address, a country code, a time zone
                try:
                    extra(attribute.default)
                except ValueError as exc:
                    message = str(exc)
            if message:
                add("attribute-default", f"default of {name}: {message}", path + ("default",))


def resolve_attributes(policy: PolicyDocument) -> dict[str, Attribute]:
    """Built-in vocabulary plus the policy's declarations; tier and zone become enums."""
    attributes = dict(BUILTIN)
    attributes.update(policy.attributes)
    tier = attributes["tier"]
    attributes["tier"] = tier.model_copy(update={
        "values": tuple(policy.tiers) or None,
        "default": policy.defaults.tier if tier.default is None else tier.default})
    attributes["location.zone"] = attributes["location.zone"].model_copy(
        update={"values": (*policy.zones, "none")})
    return attributes


# -- CEL of a file that failed its schema ------------------------------------------------------

def cel_problems_despite_schema(doc: Document, declarations: Iterable[Any]) -> list[Problem]:
    """CEL syntax and type errors in the conditions and factors of a file whose schema check
    failed, so that one wrong key does not hide a misspelt value three rules below.

    The attributes are the built-in ones plus every well-formed declaration in ``declarations``
    (the data of every loaded file, bases included), and the tiers and zones of all of them:
    permissive on purpose, so that nothing is reported that the full check would not report.
    """
    from .cel.parse import CelSyntaxError, parse
    from .cel.typecheck import check

    attributes = dict(BUILTIN)
    tiers: set[str] = set()
    zones: set[str] = set()
    for data in declarations:
        if not isinstance(data, dict):
            continue
        for name, raw in (data.get("attributes") or {}).items() if isinstance(data.get("attributes"), dict) else ():
            try:
                attributes[str(name)] = Attribute.model_validate(raw)
            except Exception:  # noqa: BLE001 - a malformed declaration is the schema's to report
                attributes.pop(str(name), None)  # unknown, rather than wrongly typed
        for key, names in (("tiers", tiers), ("zones", zones)):
            if isinstance(data.get(key), dict):
                names |= {name for name in data[key] if isinstance(name, str)}
    if tiers:
        attributes["tier"] = attributes["tier"].model_copy(update={"values": tuple(sorted(tiers))})
    attributes["location.zone"] = attributes["location.zone"].model_copy(update={"values": (*sorted(zones), "none")})
    data = doc.data if isinstance(doc.data, dict) else {}
    rules = data.get("rules")
    problems: list[Problem] = []
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        texts: list[tuple[JsonPath, str]] = []
        if isinstance(rule.get("when"), str) and rule["when"].strip():
            texts.append((("rules", i, "when"), rule["when"]))
        for target in ("access_ttl", "refresh_ttl"):
            factor = rule.get(target, {}).get("multiply") if isinstance(rule.get(target), dict) else None
            if isinstance(factor, str):
                texts.append((("rules", i, target, "multiply"), factor))
            elif isinstance(factor, dict) and isinstance(factor.get("expr"), str):
                texts.append((("rules", i, target, "multiply", "expr"), factor["expr"]))
        for path, text in texts:
            try:
                issues = check(parse(text), attributes).issues
            except CelSyntaxError as exc:
                issues = [exc.issue]
            for issue in issues:
                lines = text.split("\n")
                offset = sum(len(line) + 1 for line in lines[: issue.line - 1]) + issue.column - 1
                problems.append(Problem(issue.code, issue.message, doc.string_location(path, offset),
                                        path=_dotted(path)))
    return problems
