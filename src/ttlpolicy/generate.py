"""Compile stage "generate": one policy as one generated Python function.

The function does, in straight-line code specialised to the policy, what the reference
evaluator (:mod:`ttlpolicy.evaluate`) does with loops over data: it validates the context's
declared attributes, derives ``time.*`` and ``location.zone``, runs every condition (inlined,
see :mod:`ttlpolicy.cel.codegen`), collects and combines the effects, applies the tier ceiling,
idle timeout, session and global limits, deny and step-up, and records the trace as compact
tuples that are formatted only when asked. ``ttlpolicy compile --show POLICY`` prints it.

**Semantics are the reference's, by construction.** The generated code handles the common,
well-formed case only; anything unusual hands over to the code that defines the behaviour:

* a context it does not recognise at a glance (an unknown key, a value of another type, a
  missing required attribute) goes to :meth:`ContextSchema.activation`, which lists every
  problem or returns the same activation;
* a condition's fast test that meets something unusual calls the condition's closure;
* a condition or factor that fails, or gives no bool, and ``explain=True`` hand the decision to
  :func:`ttlpolicy.evaluate.decide`, whose fail-safe rules are written once, there.

**No user text is executed.** The source holds Python keywords, generated names, attribute names
(identifiers by the schema, checked again here and written with ``repr``) and numbers; every
value from the policy (rule names, reasons, allowed values, defaults) lives in a constants table
the function reads by generated name. Rule names and conditions appear only in comments, written
with ``repr`` so that no line break can end a comment.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

import lark

from .cel import codegen
from .context import EXTRA_CHECKS, MAX_STRING, ContextSchema, value_checker
from .decision import Decision
from .durations import MAX_DURATION
from .evaluate import EPSILON, bound_session, decide as reference_decide, deny, seconds
from .model import Attribute
from .program import CompiledPolicy, CompiledRule, ParsedExpression, Program, TtlOps
from .vocabulary import WEEKDAYS

Reference = Callable[[CompiledPolicy, Mapping[str, Any], datetime, bool], Decision]
_INT64 = (-(2**63), 2**63 - 1)


class _Slow(Exception):
    """The fast path met something it does not handle; the reference code takes over."""


@dataclass
class _Writer:
    """Source lines and the constants table of one generated function."""

    lines: list[str] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)
    depth: int = 1

    def line(self, text: str = "") -> None:
        self.lines.append("    " * self.depth + text if text else "")

    by_id: dict[int, str] = field(default_factory=dict)

    def const(self, value: Any, hint: str = "k") -> str:
        """A generated name bound to ``value`` (one name for the same object used twice)."""
        name = self.by_id.get(id(value))
        if name is None:
            name = self.by_id[id(value)] = f"_{hint}{len(self.constants)}"
            self.constants[name] = value
        return name


def _key(name: str) -> str:
    if not name.isidentifier():  # pragma: no cover - the schema allows identifiers only
        raise ValueError(f"attribute name {name!r} is not an identifier")
    return repr(name)


def _comment(text: str) -> str:
    return repr(text)[1:-1] if len(text) < 160 else repr(text[:157])[1:-1] + "..."


def inline_condition(tree: lark.Tree, prefix: str) -> tuple[str, dict[str, Any]] | str:
    """A condition as a Python expression for the generated program, with the constants it names
    (each starting with ``prefix``), or why it cannot be one (then its closure is called).
    The compiler calls this right after type-checking, so that the tree can be freed."""
    from .cel.native import leaf_parts  # the native backend's sub-expression compiler (imports celpy)

    try:
        body, names, _ = codegen.condition_source(tree, leaf_parts, prefix=prefix)
    except Exception as exc:  # noqa: BLE001 - a shape the generator does not know: counted, shown
        return f"{type(exc).__name__}: {exc}"[:200]
    return body, names


def generate_program(policy: CompiledPolicy, parsed: Mapping[str, ParsedExpression] | None = None,
                     reference: Reference = reference_decide) -> Program:
    """The generated program of ``policy``. ``parsed`` maps condition text to what the compiler
    took from its tree, :func:`inline_condition`'s source among it (for the native backend;
    without it every condition is called as its compiled function).
    ``reference`` finishes the decisions the generated code hands over (tests pass a recorder)."""
    w = _Writer()
    fallbacks: list[tuple[str, str]] = []
    w.lines.append("def decide(context, now, explain):")
    variables = _validation(w, policy)
    w.line("if explain:  # every rule's outcome, by the reference evaluator")
    w.line("    return _reference(_policy, act, now, True)")
    chunks = _collection(w, policy, parsed, fallbacks, variables)
    _combination(w, policy)
    sources = ["\n".join(lines) + "\n" for lines in [w.lines, *chunks]]
    namespace: dict[str, Any] = {
        "__builtins__": {**codegen.BUILTINS, "min": min, "max": max},
        **codegen.HELPERS, "_Slow": _Slow, "_policy": policy, "_reference": reference, **w.constants}
    for source in sources:  # one compile() per function: compiling 1,000 rules at once peaked at ~50 MiB
        exec(compile(source, f"<ttlpolicy policy {policy.name}>", "exec"), namespace)  # noqa: S102 - module docstring
    return Program.of(namespace["decide"], _header(policy, fallbacks) + "\n".join(sources), tuple(fallbacks))


def _header(policy: CompiledPolicy, fallbacks: list[tuple[str, str]]) -> str:
    lines = [f"# policy {_comment(policy.name)} ({policy.digest}), from {', '.join(map(_comment, policy.files))}",
             f"# {len(policy.rules)} rules; {len(fallbacks)} conditions called as closures"]
    lines += [f"#   {_comment(name)}: {_comment(reason)}" for name, reason in fallbacks]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- validation


def _validation(w: _Writer, policy: CompiledPolicy) -> dict[str, str]:
    """The context's validation; returns the variable that holds each namespace's dict."""
    schema = policy.context
    namespaces: dict[str, dict[str, Attribute]] = {}
    top: dict[str, Attribute] = {}
    for name, attribute in schema.attributes.items():
        namespace, _, leaf = name.partition(".")  # at most one dot (the schema)
        if leaf:
            namespaces.setdefault(namespace, {})[leaf] = attribute
        else:
            top[name] = attribute
    sendable_top = frozenset([*namespaces, *top])  # derived attributes all have a namespace
    w.line("# context: the declared attributes, checked; anything unusual goes to the reference validator")
    w.line("try:")
    w.depth += 1
    w.line(f"if type(context) is not dict or not context.keys() <= {w.const(sendable_top, 'keys')}:")
    w.line("    raise _Slow")
    # location.zone: of the address sent, found while checking it; else of location.ip's default (lint
    # checked it is an address), "none" without one
    w.line(f"zone = {w.const(schema.zone_of(schema.attributes[_IP].default), 'location_zone')}")
    variables = {}
    for index, (namespace, fields) in enumerate(namespaces.items()):
        var = f"ns{index}"
        variables[namespace] = var
        defaults = {f: a.default for f, a in fields.items() if a.default is not None and not a.derived}
        w.line(f"{var} = {w.const(defaults, 'defaults')}.copy()  # {namespace}" if defaults else
               f"{var} = {{}}  # {namespace}")
        sendable = {f: a for f, a in fields.items() if not a.derived}  # never empty: policies declare no derived ones
        w.line(f"x = context.get({_key(namespace)})")
        w.line("if x is not None:")
        w.depth += 1
        w.line(f"if type(x) is not dict or not x.keys() <= {w.const(frozenset(sendable), 'keys')}:")
        w.line("    raise _Slow")
        for leaf, attribute in sendable.items():
            _check(w, f"{namespace}.{leaf}", attribute, "x", leaf, f"{var}[{_key(leaf)}]", schema)
        w.depth -= 1
    w.line("act = {" + ", ".join(f"{_key(ns)}: {var}" for ns, var in variables.items()) + "}")
    for name, attribute in top.items():
        _check(w, name, attribute, "context", name, f"act[{_key(name)}]", schema,
               default=None if attribute.default is None else w.const(attribute.default, "default"))
    for name, attribute in schema.attributes.items():
        if attribute.required:
            namespace, _, leaf = name.partition(".")
            test = f"{_key(leaf)} not in {variables[namespace]}" if leaf else f"{_key(name)} not in act"
            w.line(f"if {test}: raise _Slow  # {name} is required")
    w.depth -= 1
    w.line("except Exception:  # _Slow, ValueError, ...: the validator says what, or agrees")
    w.line("    act = _activation(context, now)  # every problem listed (ContextError), or the same activation")
    # the rules read each namespace from its variable
    w.line(f"    {', '.join(variables.values())} = {', '.join(f'act[{_key(ns)}]' for ns in variables)}")
    w.line("else:")
    w.depth += 1
    w.constants["_activation"] = schema.activation
    _derivation(w, policy, variables)
    w.depth -= 1
    return variables


_IP = "location.ip"


def _check(w: _Writer, name: str, attribute: Attribute, source: str, key: str, target: str, schema: ContextSchema,
           default: str | None = None) -> None:
    """Assign the sent value of one attribute if it is plainly valid; otherwise ``_Slow``."""
    w.line(f"v = {source}.get({_key(key)})")
    w.line("if v is not None:")
    if name == _IP:  # a string (lint keeps built-in types), in the declared values if any
        # ip_zone checks the address as the location.ip check does, and finds its zone: one parse.
        allowed = "" if attribute.values is None else f" and v in {w.const(frozenset(attribute.values), 'values')}"
        w.line(f"    if not (type(v) is str and len(v) <= {MAX_STRING}{allowed}): raise _Slow")
        w.line(f"    zone = {w.const(schema.ip_zone, 'ip_zone')}(v)  # ValueError for a bad address")
        w.line(f"    {target} = v")
        return
    test = _plain_test(w, name, attribute, schema.time_zones, schema.time_zone)
    if test is None:  # timestamps and lists: the shared checker (raises ValueError)
        w.line(f"    {target} = {w.const(value_checker(name, attribute), 'check')}(v)")
    else:
        w.line(f"    if not ({test}): raise _Slow")
        w.line(f"    {target} = v")
    if default is not None:
        w.line("else:")
        w.line(f"    {target} = {default}")


# Exactly the values location.country's check accepts: two ASCII capital letters.
_COUNTRY_CODES = frozenset(chr(a) + chr(b) for a in range(65, 91) for b in range(65, 91))


def _plain_test(w: _Writer, name: str, attribute: Attribute, zones: Mapping[str, Any],
                time_zone: Callable[[str], Any]) -> str | None:
    """A test that holds exactly for the values ``_coerce`` (and the attribute's extra check)
    accepts unchanged, where one is simple; ``zones``: the time zones the policy has loaded,
    ``time_zone`` loads one."""
    kind = attribute.type
    if name in ("location.country", "time.zone"):  # strings: lint keeps built-in types
        if name == "location.country":
            test = f"v in {w.const(_COUNTRY_CODES, 'countries')}"
        else:  # a zone loaded already (a dict that only grows), or one that loads (ValueError if none)
            test = f"(v in {w.const(zones, 'time_zones')} or {w.const(time_zone, 'time_zone')}(v))"
        if attribute.values is not None:
            test = f"v in {w.const(frozenset(attribute.values), 'values')} and {test}"
        return f"type(v) is str and {test}"
    if name in EXTRA_CHECKS:  # a check by name not inlined above: the shared checker runs it
        return None
    if kind == "string":
        if attribute.values is None:
            return f"type(v) is str and len(v) <= {MAX_STRING}"
        return f"type(v) is str and v in {w.const(frozenset(attribute.values), 'values')}"
    if kind == "bool":
        return "v is True or v is False"
    if kind in ("int", "double"):
        # One chained comparison: the declared bounds within the 64-bit range (int), or finite
        # bounds even without min/max (double: inf and NaN fail them and take the slow path).
        # Bounds are finite (the loader refuses .inf and .nan), so repr reads back exactly.
        low, high = (_INT64[0], _INT64[1]) if kind == "int" else (-sys.float_info.max, sys.float_info.max)
        low = low if attribute.min is None else max(low, attribute.min)
        high = high if attribute.max is None else min(high, attribute.max)
        return f"type(v) is {'int' if kind == 'int' else 'float'} and {low!r} <= v <= {high!r}"
    return None


def _derivation(w: _Writer, policy: CompiledPolicy, variables: Mapping[str, str]) -> None:
    """``time.*`` in the request's (or the policy's) time zone, and ``location.zone`` from the IP."""
    schema = policy.context
    w.line("# derived attributes")
    w.line(f"t = {variables['time']}")  # time.* and location.* are in every policy's vocabulary
    w.line("z = t.get('zone')")
    w.line(f"local = now.astimezone(({w.const(schema.time_zones, 'time_zones')}.get(z) or "
           f"{w.const(schema.time_zone, 'time_zone')}(z)) if z else {w.const(schema.default_zone, 'zone')})")
    w.line("t['now'] = now")
    w.line("t['hour'] = local.hour")
    w.line("t['minute'] = local.minute")
    w.line(f"t['weekday'] = {w.const(WEEKDAYS, 'weekdays')}[local.weekday()]")
    w.line("t['date'] = local.date().isoformat()")
    w.line(f"{variables['location']}['zone'] = zone")


# ------------------------------------------------------------------------------- rules


# A policy with more rules than this runs them in functions of this many rules each, called in
# turn: compiling one function of 1,000 rules cost more memory (~50 MiB at its peak, most of it
# never given back to the system) than the whole loaded policy; 32 rules per function kept 2 MiB
# less than 64 after loading 1,000 rules, and a call per chunk costs well under 1 µs.
RULES_PER_FUNCTION = 32
_STATE = ("matched, access_factors, access_floors, access_caps, refresh_factors, refresh_floors, refresh_caps, "
          "grace, idle, session, denies, step_ups")


def _collection(w: _Writer, policy: CompiledPolicy, parsed: Mapping[str, ParsedExpression] | None,
                fallbacks: list[tuple[str, str]], variables: Mapping[str, str]) -> list[list[str]]:
    """The rules, in ``decide`` itself or, for a large policy, in functions ``_rules<n>`` of
    :data:`RULES_PER_FUNCTION` rules each (returned as their source lines). In ``decide`` the
    conditions read each namespace from its variable (``variables``), in a function from ``act``."""
    defaults = policy.refresh_defaults
    w.line("# rules, in name order: each that matches records its effects")
    w.line("matched = []")
    w.line("access_factors, access_floors, access_caps = [], [], []")
    w.line("refresh_factors, refresh_floors, refresh_caps = [], [], []")
    w.line(f"rotation = {bool(defaults.rotation)}")
    w.line(f"bound = {bool(defaults.sender_constrained)}")
    w.line(f"grace = [{defaults.reuse_grace}]" if defaults.reuse_grace is not None else "grace = []")
    w.line(f"idle = [({defaults.idle_timeout}, '')]" if defaults.idle_timeout else "idle = []")
    w.line(f"session = [({defaults.max_session}, '')]" if defaults.max_session else "session = []")
    w.line("denies, step_ups = [], []")
    w.line("try:")
    w.depth += 1
    chunks: list[list[str]] = []
    if len(policy.rules) <= RULES_PER_FUNCTION:
        for index, rule in enumerate(policy.rules):
            _rule(w, index, rule, parsed, fallbacks, variables)
    else:
        for first in range(0, len(policy.rules), RULES_PER_FUNCTION):
            name = f"_rules{len(chunks)}"
            last = min(first + RULES_PER_FUNCTION, len(policy.rules))
            w.line(f"rotated, bound_here = {name}(act, {_STATE})  # rules {first} to {last - 1}")
            w.line("rotation, bound = rotation or rotated, bound or bound_here")
            chunk = _Writer(constants=w.constants, by_id=w.by_id)
            chunk.lines.append(f"def {name}(act, {_STATE}):")
            chunk.line(f"# rules {first} to {last - 1} of {len(policy.rules)}, in name order")
            chunk.line("rotation = bound = False")
            for index in range(first, last):
                _rule(chunk, index, policy.rules[index], parsed, fallbacks)
            chunk.line("return rotation, bound")
            chunks.append(chunk.lines)
    if not policy.rules:
        w.line("pass  # no rules")
    w.depth -= 1
    w.line("except Exception:  # a condition or factor failed: the reference applies the fail-safe rules")
    w.line("    return _reference(_policy, act, now, False)")
    return chunks


def _rule(w: _Writer, index: int, rule: CompiledRule, parsed: Mapping[str, ParsedExpression] | None,
          fallbacks: list[tuple[str, str]], variables: Mapping[str, str] | None = None) -> None:
    w.line()
    w.line(f"# rule {_comment(rule.name)} at {_comment(rule.file)}:{rule.line}")
    w.line(f"#   when: {_comment(rule.when)}")
    condition = w.const(rule.condition, f"rule{index}_")
    body = None
    if parsed is not None:  # every condition of a loaded policy was parsed, and inline_condition ran on it
        inline = parsed[rule.when].inline
        if isinstance(inline, tuple):
            body, names = inline
            w.constants.update(names)
            for namespace, variable in (variables or {}).items():  # act['user'] is ns4: one lookup less
                body = body.replace(f"act[{_key(namespace)}]", variable)
        else:  # a shape the generator does not know (inline says why): counted, shown
            fallbacks.append((rule.name, str(inline)))
    if body is None:
        w.line(f"m = {condition}(act)")
    else:
        w.line("try:")
        w.line(f"    m = {body}")
        w.line("except Exception:  # a value the fast tests do not handle: the condition's closure decides")
        w.line(f"    m = {condition}(act)")
    w.line("if m is True:")
    w.depth += 1
    name = w.const(rule.name, f"rule{index}_name")
    w.line(f"matched.append({name})")
    for target, ops in (("access", rule.access), ("refresh", rule.refresh)):
        if ops is not None:
            _effects(w, index, rule, target, ops, name)
    if rule.rotation:
        w.line("rotation = True")
    if rule.sender_constrained:
        w.line("bound = True")
    if rule.reuse_grace is not None:
        w.line(f"grace.append({rule.reuse_grace})")
    if rule.idle_timeout is not None:
        w.line(f"idle.append({w.const((rule.idle_timeout, rule.name))})")
    if rule.max_session is not None:
        w.line(f"session.append({w.const((rule.max_session, rule.name))})")
    if rule.deny is not None:
        w.line(f"denies.append({w.const((rule.name, rule.deny), f'rule{index}_deny')})")
    if rule.step_up is not None:
        w.line(f"step_ups.append({w.const((rule.name, rule.step_up), f'rule{index}_step_up')})")
    w.depth -= 1
    w.line("elif m is not False:")
    w.line("    raise _Slow  # not a bool: an error, which the reference reports")


def _effects(w: _Writer, index: int, rule: CompiledRule, target: str, ops: TtlOps, name: str) -> None:
    if ops.factor_program is not None:
        program = w.const(ops.factor_program, f"rule{index}_{target}_factor")
        w.line(f"f = {program}(act)")
        w.line(f"if (type(f) is not float and type(f) is not int) or not "
               f"{w.const(-math.inf)} < f < {w.const(math.inf)}:")
        w.line("    raise _Slow  # not a finite number: the reference uses the factor's lower bound")
        clamp = f"max(float(f), {w.const(ops.factor_min)})"
        if ops.factor_max is not None:
            clamp = f"min({clamp}, {w.const(ops.factor_max)})"
        w.line(f"{target}_factors.append(({clamp}, {name}))")
    elif ops.factor is not None:
        w.line(f"{target}_factors.append({w.const((ops.factor, rule.name))})")
    if ops.cap is not None:
        w.line(f"{target}_caps.append({w.const((ops.cap, rule.name))})")
    if ops.floor is not None:
        w.line(f"{target}_floors.append({w.const((ops.floor, rule.name))})")


# ------------------------------------------------------------------------------- combination


def _combination(w: _Writer, policy: CompiledPolicy) -> None:
    w.line()
    w.line("# combine: base (tier or defaults), factors in (value, rule) order, highest floor, lowest cap")
    tiers = {name: (tier.access_ttl if tier.access_ttl is not None else policy.default_access,
                    tier.refresh_ttl if tier.refresh_ttl is not None else policy.default_refresh,
                    tier.max_access_ttl, tier.max_refresh_ttl, f"tier {name}")
             for name, tier in policy.tiers.items()}
    w.line("trace = []")
    w.line("tier_name = act.get('tier')")
    w.line(f"tier = {w.const(tiers, 'tiers')}.get(tier_name) if type(tier_name) is str else None")
    w.line("if tier is None:")
    w.line(f"    access, refresh, source = {policy.default_access}, {policy.default_refresh}, 'defaults'")
    w.line("else:")
    w.line("    access, refresh, access_max, refresh_max, source = tier")
    for target in ("access", "refresh"):
        _combine_target(w, target)
    w.line("if tier is not None:  # the tier ceiling")
    for target in ("access", "refresh"):
        w.line(f"    if {target}_max is not None and {target} > {target}_max:")
        w.line(f"        {target} = {target}_max")
        w.line(f"        trace.append(('{target}_ttl', 'tier_max', {target}_max, {target}, None, source))")
    w.line()
    w.line("# bound: the shortest idle timeout, what remains of the session, the global limits")
    if not policy.refresh_defaults.idle_timeout and all(r.idle_timeout is None for r in policy.rules):
        w.line("idle_timeout = None  # the policy sets no idle timeout")
    else:
        # one form whether or not the defaults set one (then the list is never empty): two tests
        # cost a few nanoseconds, and a special case is one more thing to get wrong
        w.line("idle_timeout, idle_rule = min(idle) if idle else (None, None)")
        w.line("if idle_timeout is not None and refresh > idle_timeout:")
        w.line("    refresh = idle_timeout")
        w.line("    trace.append(('refresh_ttl', 'idle_timeout', idle_timeout, refresh, idle_rule or None, "
               "None if idle_rule else 'defaults'))")
    w.line("max_session, session_rule = min(session) if session else (None, None)")
    # evaluate.session_end_of, with the session lengths' timedeltas built once (building one cost
    # more than the rest of the session's arithmetic)
    lengths = {length: timedelta(seconds=length) for length in
               [policy.refresh_defaults.max_session, *(r.max_session for r in policy.rules)] if length is not None}
    w.line("token = act.get('token') or {}")
    w.line("start = token.get('auth_time') or (act.get('user') or {}).get('auth_time')")
    w.line(f"session_end = start + {w.const(lengths, 'session_lengths')}[max_session] "
           "if start is not None and max_session is not None else None")
    w.line("token_end = token.get('session_exp')")
    w.line("if token_end is not None and (session_end is None or token_end < session_end):")
    w.line("    session_end = token_end")
    w.line("session_denied = None")
    w.line("if session_end is not None or max_session is not None:")
    w.line("    remaining = max_session if session_end is None else int((session_end - now).total_seconds())")
    w.line("    if remaining <= 0 or remaining < access or remaining < refresh:  # it shortens or denies")
    w.line(f"        access, refresh, session_denied = {w.const(bound_session, 'bound_session')}("
           "session_end, max_session, session_rule or None, now, access, refresh, trace)")
    limits = policy.limits
    _limit(w, "access", limits.access_ttl.max, "limit_max", ">")
    _limit(w, "access", limits.access_ttl.min, "limit_min", "<")
    _limit(w, "refresh", limits.refresh_ttl.max, "limit_max", ">")
    if limits.refresh_ttl.min is not None:  # 0 means "no refresh token": the minimum applies to issued ones
        _limit(w, "refresh", limits.refresh_ttl.min, "limit_min", "<", "refresh > 0 and ")
    w.line()
    w.line("# deny wins; then the decision")
    w.line("if session_denied is not None:")
    w.line("    denies.append(session_denied)")
    w.line("if denies:")
    w.line(f"    access, refresh = {w.const(deny, 'deny')}(denies, access, refresh, trace)")
    # Positional: a call naming its 20 arguments cost 1.3 µs more (keyword matching), a tenth of
    # a decision. Generated from the dataclass's own field order, so it cannot drift.
    arguments = {
        "allow": "not denies", "access_ttl": "access", "refresh_ttl": "refresh", "rotation": "rotation",
        "idle_timeout": "idle_timeout", "max_session": "max_session",
        "reuse_grace": "min(grace) if grace else None", "sender_constrained": "bound", "issued_at": "now",
        "session_end": "session_end", "step_up": "bool(step_ups)",
        # rules run in name order: the reasons are sorted already
        "step_up_reasons": "[reason for _, reason in step_ups] if step_ups else []",
        "deny_reason": "'; '.join(reason for _, reason in denies) if denies else None",
        "matched": "matched", "errors": "[]", "steps": "trace", "policy_name": w.const(policy.name, "name"),
        "policy_digest": w.const(policy.digest, "digest"), "tier": "tier_name if type(tier_name) is str else None",
        "rules": "None", "activation": "act"}
    order = [f.name for f in dataclasses.fields(Decision) if f.init and f.name in arguments]
    assert order == list(arguments)  # every argument, in the dataclass's order
    w.line(f"return {w.const(Decision, 'Decision')}(")
    for name, source in arguments.items():
        w.line(f"    {source},  # {name}")
    w.line(")")


def _combine_target(w: _Writer, target: str) -> None:
    name = f"'{target}_ttl'"
    w.line(f"trace.append(({name}, 'base', {target}, {target}, None, source))")
    w.line(f"if {target}_factors:")
    w.line(f"    {target}_factors.sort()")
    w.line(f"    value = {target}")
    w.line(f"    for factor, rule in {target}_factors:")
    w.line("        value *= factor")
    # evaluate.seconds, inline for the values it floors (it decides the rest: overflow, NaN)
    w.line(f"        {target} = _floor(value + {EPSILON!r}) if value <= {MAX_DURATION} else _seconds(value)")
    w.line(f"        trace.append(({name}, 'multiply', factor, {target}, rule, None))")
    w.constants["_seconds"] = seconds
    w.constants["_floor"] = math.floor
    w.line(f"if {target}_floors:")
    w.line(f"    floor, rule = max({target}_floors)")
    w.line(f"    if floor > {target}:")
    w.line(f"        {target} = floor")
    w.line(f"        trace.append(({name}, 'floor', floor, floor, rule, None))")
    w.line(f"if {target}_caps:")
    w.line(f"    cap, rule = min({target}_caps)")
    w.line(f"    if cap < {target}:")
    w.line(f"        {target} = cap")
    w.line(f"        trace.append(({name}, 'cap', cap, cap, rule, None))")


def _limit(w: _Writer, target: str, bound: int | None, step: str, beyond: str, guard: str = "") -> None:
    if bound is None:
        return
    w.line(f"if {guard}{target} {beyond} {bound}:")
    w.line(f"    {target} = {bound}")
    w.line(f"    trace.append(('{target}_ttl', '{step}', {bound}, {bound}, None, 'limits'))")


__all__ = ["generate_program"]
