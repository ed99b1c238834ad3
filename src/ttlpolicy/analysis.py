"""Stage 3b — analyse: warnings about what a compiled policy means, not how it is written.

The type checker refuses what cannot run; these checks find what runs but is probably not
what the author meant. Every finding is a ``warning`` with a stable code and a location:

* ``condition-never-true`` / ``condition-always-true``: a ``when`` that no allowed context
  makes true (``user.risk > 1.0``, ``a == "x" && a == "y"``, ``time.hour >= 24``) or that every
  one does (``user.risk >= 0.0``). Found by evaluating the condition on every boundary value
  of the attributes it reads (each literal and its neighbours, declared min and max, every
  enum value, absent), which is exhaustive for conditions made of comparisons with literals;
  conditions with arithmetic or functions are not judged.
* ``effect-never-applies``: a cap at or above the highest ceiling, a floor at or below the
  global minimum, or a factor on a lifetime that an unconditional cap always clamps.
* ``loosening-rule``: a factor above 1 or a floor, so that reviewers see every rule that can
  make a token live longer.

>>> [p.code for p in analyze(policies.get("workforce"), where)]            # doctest: +SKIP
['loosening-rule', 'loosening-rule', ...]
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterable, Iterator, Mapping

import lark

from .cel.parse import CelSyntaxError, parse
from .cel.typecheck import check
from .program import CompiledPolicy, CompiledRule, Literals, ParsedExpression, TtlOps
from .durations import parse_duration
from .model import Attribute
from .durations import format_duration
from .errors import Problem, severity_of
from .load import JsonPath
from .model import Rule
from .validate import Locator

ABSENT = object()  # a candidate value meaning "not sent"
MAX_ASSIGNMENTS = 4096  # conditions over more combinations than this are not judged
# Tree nodes whose meaning the boundary values capture completely; anything else (arithmetic,
# functions, macros, indexing) could be true between two candidates, so it is not judged.
_SIMPLE = {"expr", "conditionalor", "conditionaland", "relation", "relation_eq", "relation_ne", "relation_lt",
           "relation_le", "relation_gt", "relation_ge", "relation_in", "unary", "unary_not", "member",
           "member_dot", "primary", "ident", "literal", "list_lit", "exprlist", "paren_expr",
           "addition", "multiplication"}  # these two only as single-child links; operators are addition_add...
_SKIP_TYPES = {"timestamp"}


def analyze(policy: CompiledPolicy, where: Locator, parsed: Mapping[str, ParsedExpression] | None = None
            ) -> list[Problem]:
    """Every finding for one compiled (concrete) policy, located in the file each rule came from.

    Dead and tautological conditions are errors, the rest warnings (see
    :data:`~ttlpolicy.errors.WARNING_CODES`); a warning the rule acknowledges with ``allow:``
    becomes a note carrying the reason, and an acknowledgement nothing needs is ``allow-unused``.

    ``parsed``: what the compiler took from each condition's tree, so it is not parsed again."""
    rules = {rule.name: rule for rule in policy.document.rules}
    problems: list[Problem] = []
    verdicts: dict[str, str | None] = {}
    trees = parsed or {}
    for compiled in policy.rules:
        source = rules[compiled.name]
        verdict = condition_verdict(policy, compiled, trees.get(compiled.when))
        verdicts[compiled.name] = verdict
        if verdict == "never":
            problems.append(_problem(where, source, ("when",), "condition-never-true",
                                     f"rule {source.name!r} can never match: no context allowed by the declared "
                                     "attributes makes its condition true; fix the values it compares with, or "
                                     "delete the rule"))
        elif verdict == "always" and compiled.when.strip() != "true":
            problems.append(_problem(where, source, ("when",), "condition-always-true",
                                     f"rule {source.name!r} always matches: every context allowed by the declared "
                                     "attributes makes its condition true (a `!=` joined with `||` is a common "
                                     "cause: use `&&` or `!(x in [...])`); write `when: \"true\"` if that is meant"))
    # Once per lifetime, not per rule: it scans every rule (quadratic for 1,000 rules otherwise).
    clamps = {target: _unconditional_cap(policy, target, verdicts) for target in ("access_ttl", "refresh_ttl")}
    for compiled in policy.rules:
        source = rules[compiled.name]
        if verdicts[compiled.name] == "never":
            continue  # its effects never apply anyway; one problem is enough
        for target, ops in (("access_ttl", compiled.access), ("refresh_ttl", compiled.refresh)):
            if ops is not None:
                tiers = _tiers_matched(policy, compiled, trees.get(compiled.when)) if ops.floor is not None else []
                problems += _effect_problems(policy, where, source, target, ops, clamps[target], tiers)
    return _acknowledge(problems, rules.values(), where)


def _acknowledge(problems: list[Problem], rules: Iterable[Rule], where: Locator) -> list[Problem]:
    """Warnings a rule acknowledges become notes with the reason; unused acknowledgements are reported."""
    # Rules of a base and of the policy both count from 0: a rule is its file and its index.
    by_path = {(rule.file, f"rules.{rule.index}"): rule for rule in rules}
    used: set[tuple[tuple[str, str], str]] = set()  # (rule key, code)
    out = []
    for problem in problems:
        prefix = (problem.location.file if problem.location else "", ".".join(problem.path.split(".")[:2]))
        rule = by_path.get(prefix)
        reason = next((a.reason for a in rule.allow if a.code == problem.code), None) if rule else None
        if rule is not None and reason is not None and problem.severity == "warning":
            used.add((prefix, problem.code))
            out.append(Problem(problem.code, f"{problem.message} — acknowledged: {reason}", problem.location,
                               "note", problem.path))
        else:
            out.append(problem)
    for prefix, rule in by_path.items():
        for i, ack in enumerate(rule.allow):
            if (prefix, ack.code) not in used:
                out.append(_problem(where, rule, ("allow", i, "code"), "allow-unused",
                                    f"rule {rule.name!r} acknowledges {ack.code} but has no such warning; "
                                    "remove this entry so that a future one is not hidden"))
    return out


def _problem(where: Locator, rule: Rule, path: JsonPath, code: str, message: str) -> Problem:
    full: JsonPath = ("rules", rule.index, *path)
    return Problem(code, message, where(full, file=rule.file), severity_of(code), ".".join(map(str, full)))


# -- candidate values of attributes (shared with the diff grid) ----------------------------------------------------------

def collect_literals(policy: CompiledPolicy, into: Literals | None = None) -> Literals:
    """Attributes the rules read and the literals they compare them with.

    >>> collect_literals(policies.get("workforce")).numbers["user.risk"]   # doctest: +SKIP
    {0.0, 0.9}
    """
    out = into or Literals()
    for rule in policy.rules:
        texts = [rule.when] + [ops.factor_text for ops in (rule.access, rule.refresh) if ops and ops.factor_text]
        for text in texts:
            try:
                tree = parse(text)
            except CelSyntaxError:  # pragma: no cover - a compiled policy parsed already
                continue
            out.used |= check(tree, policy.attributes).attributes
            walk_literals(tree, out)
    for rule in policy.rules:
        if rule.max_session:
            out.durations.add(rule.max_session)
    if policy.refresh_defaults.max_session:
        out.durations.add(policy.refresh_defaults.max_session)
    return out


def walk_literals(tree: lark.Tree, out: Literals) -> None:
    for node in subtrees(tree):
        if node.data == "relation" and len(node.children) == 2:
            op_node, right = node.children
            left = op_node.children[0]
            if op_node.data == "relation_in" and _attribute_name(left) and _attribute_name(right):
                out.members.setdefault(str(_attribute_name(right)), set()).add(str(_attribute_name(left)))
            elif _attribute_name(left) and _attribute_name(right):
                out.links.add((str(_attribute_name(left)), str(_attribute_name(right))))
            for a, b in ((left, right), (right, left)):
                name = _attribute_name(a)
                if name is None:
                    continue
                for value in _literal_values(b):
                    if isinstance(value, str):
                        out.strings.setdefault(name, set()).add(value)
                    elif isinstance(value, (int, float)) and not isinstance(value, bool):
                        out.numbers.setdefault(name, set()).add(float(value))
        if node.data == "ident_arg" and node.children and getattr(node.children[0], "value", "") == "duration":
            for value in _literal_values(node.children[1] if len(node.children) > 1 else None):
                try:
                    out.durations.add(_cel_duration(str(value)))
                except ValueError:
                    pass
    # `a == b` between two attributes: each must be able to take the other's literals.
    for a, b in out.links:
        if a in out.strings or b in out.strings:
            words = out.strings.get(a, set()) | out.strings.get(b, set())
            out.strings[a], out.strings[b] = set(words), set(words)
        if a in out.numbers or b in out.numbers:
            numbers = out.numbers.get(a, set()) | out.numbers.get(b, set())
            out.numbers[a], out.numbers[b] = set(numbers), set(numbers)


def _unwrap(node: Any) -> Any:
    while isinstance(node, lark.Tree) and len(node.children) == 1 and isinstance(node.children[0], lark.Tree):
        node = node.children[0]
    return node


def _attribute_name(node: Any) -> str | None:
    """``user.risk`` for the tree of that selection; ``None`` for anything else."""
    node = _unwrap(node)
    parts: list[str] = []
    while isinstance(node, lark.Tree) and node.data == "member_dot":
        name_tok = node.children[1]
        assert isinstance(name_tok, lark.Token)  # cel.lark: member_dot : member "." IDENT
        parts.insert(0, name_tok.value)
        node = _unwrap(node.children[0])
    if isinstance(node, lark.Tree) and node.data == "ident":
        ident = node.children[0]
        assert isinstance(ident, lark.Token)  # cel.lark: ident : IDENT
        parts.insert(0, ident.value)
        return ".".join(parts)
    return None


def _literal_values(node: Any) -> list[Any]:
    node = _unwrap(node)
    if not isinstance(node, lark.Tree):
        return []
    if node.data == "literal":
        token = node.children[0]
        if not isinstance(token, lark.Token):  # a Tree would fail with AttributeError below: same []
            return []
        try:
            if token.type == "STRING_LIT" and token.value[:1] in "\"'" and "\\" not in token.value:
                return [token.value[1:-1]]
            if token.type in ("INT_LIT", "FLOAT_LIT"):
                return [float(token.value)]
        except (ValueError, AttributeError):
            return []
        return []
    if node.data == "list_lit" and node.children:
        return [v for child in node.children[0].children for v in _literal_values(child)]
    if node.data == "unary" and len(node.children) == 2 and node.children[0].data == "unary_neg":
        return [-v for v in _literal_values(node.children[1]) if isinstance(v, float)]
    if node.data == "exprlist":
        return [v for child in node.children for v in _literal_values(child)]
    return []


def _cel_duration(text: str) -> int:
    """Seconds of a CEL duration literal such as ``72h`` or ``1h30m`` (fractions are rare here)."""
    return parse_duration(text)


def numeric_candidates(attribute: Attribute, literals: Iterable[float]) -> list[float]:
    """Boundary values: the declared min and max, each literal, its neighbours and the midpoints
    between consecutive literals, clamped. Every stretch a comparison with these literals can
    tell apart holds one of them, so trying them all is exhaustive for such comparisons.

    >>> numeric_candidates(Attribute(type="double", min=0, max=1), [0.5])
    [0.0, 0.49, 0.5, 0.51, 1.0]
    """
    integer = attribute.type == "int"
    step = 1.0 if integer else 0.01
    ordered = sorted(set(literals))
    points: set[float] = set()
    for literal in ordered:
        points |= {literal - step, literal, literal + step}
    for low, high in zip(ordered, ordered[1:]):
        middle = (low + high) / 2
        points.add(math.floor(middle) if integer else middle)
    lo, hi = attribute.min, attribute.max
    if lo is not None:
        points.add(lo)
    if hi is not None:
        points.add(hi)
    if not points:
        points = {0.0, 1.0}
    if lo is not None and hi is not None and len(points) < 3:
        points.add((lo + hi) / 2)
    # Rounding keeps the grid readable (0.49, not 0.48999999999999994); literals closer than a
    # millionth would merge, which no policy needs.
    values = sorted({round(p, 6) for p in points if (lo is None or p >= lo) and (hi is None or p <= hi)})
    return [int(v) if integer else v for v in values]


_SAMPLES = {"location.country": ["DE", "US"]}


def non_members(name: str, strings: Iterable[str]) -> list[str]:
    """Values of a free-text attribute that no literal names: two when there are no literals
    (so that two attributes can differ), else one (``!(x in ["DE", "US"])`` needs a third country)."""
    taken = set(strings)
    pool = [*_SAMPLES.get(name, []), *(f"sample-{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    free = [s for s in pool if s not in taken]
    return free[: 1 if taken else 2]


def attribute_candidates(name: str, attribute: Attribute, literals: Literals) -> list[Any]:
    """Every value worth trying for one attribute; :data:`ABSENT` when it may be left out.

    >>> attribute_candidates("user.mfa", BUILTIN["user.mfa"], Literals())   # doctest: +SKIP
    [True, False]
    """
    optional = attribute.default is None and not attribute.required and not attribute.derived
    tail = [ABSENT] if optional else []
    strings = sorted(literals.strings.get(name, ()))
    if attribute.type == "bool":
        return [True, False, *tail]
    if attribute.type in ("int", "double"):
        return [*numeric_candidates(attribute, literals.numbers.get(name, ())), *tail]
    if attribute.type == "string":
        if attribute.values is not None:
            return [*attribute.values, *tail]
        return [*strings, *non_members(name, strings), *tail]
    if attribute.type == "list":
        # `location.country in location.expected_countries`: the list holds the first sample of
        # the tested attribute, so that the grid has both members and non-members.
        linked = [_SAMPLES.get(m, ["sample-a"])[0] for m in sorted(literals.members.get(name, ()))]
        items = strings or list(attribute.values or ()) or linked or ["sample-a"]
        lists: list[Any] = [[]] + [[item] for item in items]
        if len(items) > 1:
            lists.append(list(items))
        return [*lists, *tail]
    if attribute.type == "timestamp":
        # Ages before the decision instant: just now, and either side of each duration the
        # policy compares with (72h) or enforces (max_session).
        ages = {0}
        for seconds in literals.durations:
            ages |= {max(seconds - 60, 0), seconds + 60}
        return [("age", age) for age in sorted(ages)] + tail
    return tail or [attribute.default]


# -- conditions ---------------------------------------------------------------------------------

def condition_verdict(policy: CompiledPolicy, rule: CompiledRule, parsed: ParsedExpression | None = None,
                      fixed: Mapping[str, list[Any]] | None = None) -> str | None:
    """``"never"``, ``"always"`` or ``None`` (sometimes, or not judged) for a rule's condition.

    >>> condition_verdict(policy, rule_with("user.risk > 1.0"))               # doctest: +SKIP
    'never'
    """
    if parsed is not None:  # taken from the tree at compile time: do not parse again
        literals, read = parsed.literals, set(parsed.attributes)
    else:
        try:
            tree = parse(rule.when)
        except CelSyntaxError:  # pragma: no cover - compiled policies parsed already
            return None
        literals, read = condition_literals(tree), _attributes_in(tree, policy)
    if literals is None:
        return None
    names = sorted(read)
    if any(policy.attributes[n].type in _SKIP_TYPES for n in names):
        return None
    if not names:
        return None  # a constant condition (`true`) is deliberate
    pinned = fixed or {}
    domains = [list(pinned[n]) if n in pinned else attribute_candidates(n, policy.attributes[n], literals)
               for n in names]
    if math.prod(len(d) for d in domains) > MAX_ASSIGNMENTS:
        return None
    seen_true = seen_other = False
    for values in itertools.product(*domains):
        try:
            result = rule.condition(_activation(names, values))
        except Exception:  # noqa: BLE001 - an evaluation error counts as "not true", as at run time
            result = None
        if result is True:
            seen_true = True
        else:
            seen_other = True
        if seen_true and seen_other:
            return None
    return "never" if not seen_true else "always"


def condition_literals(tree: lark.Tree) -> Literals | None:
    """What each attribute is compared with in a condition, or ``None`` when the condition is
    not judged: it has a construct the boundary values do not capture (arithmetic, functions,
    macros, indexing), or a ``true`` / ``false`` written on purpose (``x || true`` is a switch,
    not a slip)."""
    for node in subtrees(tree):
        if node.data not in _SIMPLE:
            return None
        if node.data == "literal" and getattr(node.children[0], "type", "") == "BOOL_LIT":
            return None
    literals = Literals()
    walk_literals(tree, literals)
    return literals


def subtrees(tree: lark.Tree) -> Iterator[lark.Tree]:
    """Every node of ``tree``, in no particular order (lark's ``iter_subtrees`` also orders and
    de-duplicates them, at three times the cost)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in node.children if isinstance(child, lark.Tree))


def _attributes_in(tree: lark.Tree, policy: CompiledPolicy) -> set[str]:
    return check(tree, policy.attributes).attributes


def _activation(names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, values):
        if value is ABSENT:
            if "." in name:
                out.setdefault(name.split(".", 1)[0], {})
            continue
        namespace, _, leaf = name.partition(".")
        if leaf:
            out.setdefault(namespace, {})[leaf] = value
        else:
            out[namespace] = value
    return out


# -- effects ------------------------------------------------------------------------------------

def _ceiling(policy: CompiledPolicy, target: str) -> tuple[int | None, str]:
    """The highest value ``target`` can ever have, and where that bound comes from."""
    limit = getattr(policy.limits, target).max
    best, source = limit, "limits"
    tier_attribute = policy.attributes.get("tier")
    tier_always = tier_attribute is not None and tier_attribute.default in policy.tiers
    maxima = [getattr(t, f"max_{target}") for t in policy.tiers.values()]
    if tier_always and maxima and all(m is not None for m in maxima):
        top = max(m for m in maxima if m is not None)
        if best is None or top < best:
            best, source = top, "the highest tier ceiling"
    return best, source


def _bases(policy: CompiledPolicy, target: str) -> list[int]:
    default = policy.default_access if target == "access_ttl" else policy.default_refresh
    tiered = [getattr(t, target) for t in policy.tiers.values()]
    return [default] + [b if b is not None else default for b in tiered]


def _effect_problems(policy: CompiledPolicy, where: Locator, rule: Rule, target: str, ops: TtlOps,
                     clamp: tuple[int, str] | None, tiers: list[str | None]) -> Iterator[Problem]:
    if ops.factor is not None and ops.factor > 1:
        yield _problem(where, rule, (target, "multiply"), "loosening-rule",
                       f"rule {rule.name!r} multiplies {target} by {ops.factor:g}: tokens it matches live longer")
    if ops.factor_text is not None and (ops.factor_max is None or ops.factor_max > 1):
        bound = "without an upper bound" if ops.factor_max is None else f"by up to {ops.factor_max:g}"
        yield _problem(where, rule, (target, "multiply"), "loosening-rule",
                       f"rule {rule.name!r} may multiply {target} {bound}: tokens it matches can live longer")
    if ops.floor is not None:
        yield from _floor_problems(policy, where, rule, target, ops, tiers)
    ceiling, source = _ceiling(policy, target)
    if ops.cap is not None and ceiling is not None and ops.cap >= ceiling:
        yield _problem(where, rule, (target, "cap"), "effect-never-applies",
                       f"the {format_duration(ops.cap)} cap on {target} never lowers anything: {source} already "
                       f"stops {target} at {format_duration(ceiling)}")
    factor_up = ops.factor is not None and ops.factor >= 1 or (ops.factor_text is not None and ops.factor_min >= 1)
    if clamp is not None and factor_up and clamp[1] != rule.name:
        yield _problem(where, rule, (target, "multiply"), "effect-never-applies",
                       f"the factor on {target} never changes a decision: rule {clamp[1]!r} always caps it at "
                       f"{format_duration(clamp[0])}, below every base lifetime, and no rule shortens it first")


def _floor_problems(policy: CompiledPolicy, where: Locator, rule: Rule, target: str, ops: TtlOps,
                    tiers: list[str | None]) -> Iterator[Problem]:
    """A floor is a loosening rule where it can lift a value, and dead where it cannot: say which.

    In tier ``t`` the floor lifts the value to at most ``reach = min(floor, own cap, tier ceiling,
    global max)``, and only when the value before it can be lower than that. The lowest value
    before floors is the tier's base times every factor below 1 that any rule could apply."""
    assert ops.floor is not None
    floor = ops.floor
    limit = getattr(policy.limits, target)
    minimum = (limit.min or 0) if target == "access_ttl" else 0  # a refresh of 0 is never lifted to the min
    shrink = _lowest_factor(policy, target)
    lifts: dict[str | None, int] = {}
    dead: dict[str | None, str] = {}
    for tier_name in tiers:
        tier = policy.tiers.get(tier_name) if tier_name is not None else None
        ceiling = getattr(tier, f"max_{target}") if tier is not None else None
        base = _base(policy, target, tier_name)
        bounds = [(floor, "")] + [(b, why) for b, why in ((ops.cap, "its own cap"),
                                                          (ceiling, f"the {tier_name} ceiling"),
                                                          (limit.max, "the global maximum")) if b is not None]
        reach, why = min(bounds, key=lambda pair: pair[0])
        lowest = max(math.floor(base * shrink), minimum)
        if reach > lowest:
            lifts[tier_name] = reach
        elif reach <= minimum:
            dead[tier_name] = f"{why or 'it'} is at or below the global minimum {format_duration(minimum)}"
        else:
            dead[tier_name] = (f"{why} holds it at {format_duration(reach)}, and nothing lowers {target} below "
                               f"the base {format_duration(base)} first")
    label: dict[str | None, str] = {None: "without a tier"}
    if not lifts:
        reasons = "; ".join(f"{label.get(t, f'in tier {t}')}: {why}" for t, why in dead.items())
        yield _problem(where, rule, (target, "floor"), "effect-never-applies",
                       f"the {format_duration(floor)} floor on {target} never lifts anything ({reasons}); "
                       "remove it, or raise the ceiling it runs into")
        return
    held = {t: r for t, r in lifts.items() if r < floor}
    detail = ""
    if held:
        detail = " (" + ", ".join(f"{format_duration(r)} {label.get(t, f'in {t}')}" for t, r in held.items())
        detail += ", where a ceiling or cap holds it)"
    if dead:
        names = [label.get(t, str(t)) for t in dead]
        detail += f"; {' and '.join(names) if len(names) < 3 else ', '.join(names)}: it never lifts anything"
    yield _problem(where, rule, (target, "floor"), "loosening-rule",
                   f"rule {rule.name!r} sets a {format_duration(floor)} floor on {target}: tokens it matches can live "
                   f"longer, up to {format_duration(max(lifts.values()))}{detail}")


def _base(policy: CompiledPolicy, target: str, tier_name: str | None) -> int:
    default = policy.default_access if target == "access_ttl" else policy.default_refresh
    tier = policy.tiers.get(tier_name) if tier_name is not None else None
    own = getattr(tier, target) if tier is not None else None
    return own if own is not None else default


def _lowest_factor(policy: CompiledPolicy, target: str) -> float:
    """The product of every factor below 1 that some rule could apply to ``target`` (expression
    factors at their lower bound): the most the value can shrink before floors apply."""
    product = 1.0
    for rule in policy.rules:
        ops = rule.access if target == "access_ttl" else rule.refresh
        if ops is None:
            continue
        if ops.factor is not None and ops.factor < 1:
            product *= ops.factor
        elif ops.factor_text is not None and ops.factor_min < 1:
            product *= ops.factor_min
    return product


def _tiers_matched(policy: CompiledPolicy, rule: CompiledRule, parsed: ParsedExpression | None) -> list[str | None]:
    """The tiers a rule can match (``None``: a request without a tier, when that falls back to the
    defaults). Tiers its condition provably excludes are left out; when that cannot be judged,
    every tier counts."""
    tier_attribute = policy.attributes.get("tier")
    everything: list[str | None] = list(policy.tiers)
    if not policy.tiers or tier_attribute is None or (tier_attribute.default is None and not tier_attribute.required):
        everything.append(None)
    if parsed is None or "tier" not in parsed.attributes or not policy.tiers:
        return everything
    out: list[str | None] = []
    for name in everything:
        if name is None:
            out.append(None)
            continue
        if condition_verdict(policy, rule, parsed, fixed={"tier": [name]}) != "never":
            out.append(name)
    return out


def _unconditional_cap(policy: CompiledPolicy, target: str, verdicts: dict[str, str | None]
                       ) -> tuple[int, str] | None:
    """``(cap, rule)`` when an always-matching rule caps ``target`` at or below every base and no
    rule can bring the value down first (no factor below 1): then every factor ≥ 1 is moot."""
    pick: Callable[[CompiledRule], TtlOps | None] = (
        (lambda r: r.access) if target == "access_ttl" else (lambda r: r.refresh))
    caps = [(ops.cap, r.name) for r in policy.rules if (ops := pick(r)) is not None and ops.cap is not None
            and (verdicts.get(r.name) == "always" or r.when.strip() == "true")]
    if not caps:
        return None
    cap = min(caps)
    for rule in policy.rules:
        ops = pick(rule)
        if ops is None:
            continue
        if (ops.factor is not None and ops.factor < 1) or (ops.factor_text is not None and ops.factor_min < 1):
            return None
    return cap if all(base >= cap[0] for base in _bases(policy, target)) else None
