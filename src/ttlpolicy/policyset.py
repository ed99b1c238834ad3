"""The pipeline end to end: files → load → validate → merge ``extends`` → compile → PolicySet."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pydantic

from .analysis import analyze
from .compile import Backend, CompiledPolicy, ParsedExpression, compile_policy
from .context import parse_timestamp
from .decision import Decision
from .errors import Location, PolicyError, Problem, ProblemCollector, UnknownPolicyError
from .load import Document, JsonPath, decode_source, parse_document, read_source
from .model import build_document
from .state.ratelimit import CompiledRateLimit, compile_rate_limits
from .validate import (Locator, cel_problems_despite_schema, resolve_attributes, schema_problems,
                       semantic_problems)

POLICY_SUFFIXES = (".yaml", ".yml")
_INHERITED = ("timezone", "defaults", "limits", "tiers", "zones", "attributes", "rules", "rate_limits")


class PolicySet:
    """Compiled policies loaded together; immutable and safe to share between threads.

    >>> policies = load_policies("policies/")                          # doctest: +SKIP
    >>> policies.decide({"tier": "finance", "device": {"trust": "unmanaged"}}).access_ttl  # doctest: +SKIP
    600
    """

    def __init__(self, policies: Mapping[str, CompiledPolicy], default: str, warnings: Iterable[Problem] = (),
                 sources: Mapping[str, str] | None = None,
                 rate_limits: Mapping[str, tuple[CompiledRateLimit, ...]] | None = None):
        self._policies = dict(policies)
        # Counted only by the state layer (ttlpolicy.state), never by decide() here.
        self.rate_limits: Mapping[str, tuple[CompiledRateLimit, ...]] = dict(rate_limits or {})
        self.default = default
        self.warnings = list(warnings)
        self.sources = dict(sources or {})
        joined = "\n".join(f"{name} {p.digest}" for name, p in sorted(self._policies.items()))
        self.digest = "sha256:" + hashlib.sha256(joined.encode()).hexdigest()

    def __iter__(self) -> Iterator[CompiledPolicy]:
        return iter(self._policies[name] for name in sorted(self._policies))

    def __len__(self) -> int:
        return len(self._policies)

    def __contains__(self, name: object) -> bool:
        return name in self._policies

    @property
    def names(self) -> list[str]:
        return sorted(self._policies)

    def get(self, name: str | None = None) -> CompiledPolicy:
        """The policy called ``name`` (the default one for ``None``); raises :class:`UnknownPolicyError`."""
        key = self.default if name is None else name
        try:
            return self._policies[key]
        except KeyError:
            raise UnknownPolicyError(key, self._policies) from None

    def decide(self, context: Mapping[str, Any], policy: str | None = None,
               now: datetime | str | None = None, explain: bool = False) -> Decision:
        """Decide the lifetimes for ``context``.

        ``now`` is the decision instant (an aware datetime or RFC 3339 text; default: the
        current time). Raises :class:`ContextError` listing every problem of the context,
        :class:`UnknownPolicyError` for an unknown ``policy``.
        """
        return self.get(policy).decide(context, resolve_now(now), explain)


def resolve_now(now: datetime | str | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if isinstance(now, str):
        return parse_timestamp(now)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError("now must be an aware datetime or RFC 3339 text with an offset")
    return now


def load_policies(*paths: str | Path, backend: Backend = "native") -> PolicySet:
    """Load, validate and compile the policies in ``paths`` (directories or files).

    A directory contributes its ``*.yaml`` and ``*.yml`` files (not its subdirectories,
    which hold tests). Raises :class:`PolicyError` carrying every problem found.

    >>> policies = load_policies("policies/")                          # doctest: +SKIP
    """
    if not paths:
        paths = (Path("policies"),)
    sources: dict[str, bytes] = {}
    problems: list[Problem] = []
    for path in map(Path, paths):
        collector = ProblemCollector(str(path))
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
            if not files:
                collector.add("no-policies", "directory holds no *.yaml policy files")
        elif path.exists():
            files = [path]
        else:
            collector.add("io-error", "no such file or directory")
            files = []
        problems += collector.problems
        for file in files:
            collector = ProblemCollector(str(file))
            text = read_source(file, collector)
            problems += collector.problems
            if text is not None:
                sources[str(file)] = text.encode()
    return load_sources(sources, backend=backend, problems=problems)


def load_sources(sources: Mapping[str, bytes | str], backend: Backend = "native",
                 problems: list[Problem] | None = None) -> PolicySet:
    """Like :func:`load_policies`, from file names and their contents (e.g. read from git)."""
    problems = list(problems or [])
    documents: dict[str, Document] = {}
    texts: dict[str, str] = {}
    raw: dict[str, tuple[str, dict[str, Any]]] = {}
    broken: dict[str, str] = {}  # policy name -> file, for policies that failed before merging
    schema_failed: list[Document] = []
    for file, content in sorted(sources.items()):
        collector = ProblemCollector(file)
        text = decode_source(content, collector) if isinstance(content, bytes) else content
        if text is not None:
            texts[file] = text
        doc = parse_document(text, collector) if text is not None else None
        problems += collector.problems
        if doc is None:
            continue
        documents[file] = doc
        found = schema_problems(doc)
        problems += found
        if found:
            schema_failed.append(doc)
            if isinstance(doc.data, dict) and isinstance(doc.data.get("name"), str):
                broken.setdefault(doc.data["name"], file)
            continue
        data = dict(doc.data)
        data["rules"] = [dict(rule, index=i, file=file) for i, rule in enumerate(data.get("rules", []))]
        if "rate_limits" in data:
            data["rate_limits"] = [dict(limit, index=i, file=file) for i, limit in enumerate(data["rate_limits"])]
        name = data["name"]
        if name in raw:
            problems.append(Problem("duplicate-policy", f"policy {name!r} is also defined in {raw[name][0]}",
                                    doc.location(("name",)), path="name"))
            continue
        raw[name] = (file, data)

    # Schema errors must not hide CEL errors: type-check those files' conditions anyway, against
    # the declarations of every file (their bases' included).
    for doc in schema_failed:
        problems += cel_problems_despite_schema(doc, [d.data for d in documents.values()])

    compiled: dict[str, CompiledPolicy] = {}
    rate_limits: dict[str, tuple[CompiledRateLimit, ...]] = {}
    warnings: list[Problem] = []
    chains = {name: _extends_chain(name, raw, documents, problems, broken) for name in raw}
    # Bases before the policies that extend them, so that a policy whose base is broken is
    # reported once as not checked instead of repeating (or misreporting) the base's errors.
    for name in sorted(raw, key=lambda n: len(chains[n] or ())):
        file, data = raw[name]
        chain = chains[name]
        if chain is None:
            continue
        bad_bases = [base for base in chain[:-1] if base in broken]
        if bad_bases:
            broken.setdefault(name, file)
            location = documents[file].location(("extends",))
            problems.append(Problem("base-broken", f"policy {name!r} was not checked: its base "
                                    f"{bad_bases[0]!r} has errors (in {broken[bad_bases[0]]}); fix those first "
                                    "(only this file's own conditions were type-checked)", location, path="extends"))
            problems += cel_problems_despite_schema(documents[file], [d.data for d in documents.values()])
            continue
        before = len(problems)
        merged, owner = _merge([raw[n] for n in chain])
        where = Locator(documents, owner, file)
        try:
            policy = build_document(merged, file)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                path: JsonPath = tuple(error["loc"])
                problems.append(Problem("schema", f"{'.'.join(map(str, path))}: {error['msg']}", where(path)))
            continue
        found = semantic_problems(policy, where)
        # Type-check the CEL even when the settings are wrong, to report everything at once,
        # but build an evaluator only from a policy without errors.
        parsed: dict[str, ParsedExpression] = {}  # shared with the analysis below, then dropped
        result, cel_problems = compile_policy(policy, where, backend, files=tuple(dict.fromkeys(
            raw[n][0] for n in chain)), build=not any(p.severity == "error" for p in found), parsed=parsed)
        found += cel_problems
        limits, limit_problems = compile_rate_limits(policy.rate_limits, resolve_attributes(policy), documents, where)
        found += limit_problems
        if limits:
            rate_limits[name] = limits
        problems += [p for p in found if p.severity == "error"]
        warnings += [p for p in found if p.severity == "warning"]
        if result is not None and not any(p.severity == "error" for p in found):
            analysed = analyze(result, where, parsed)
            problems += [p for p in analysed if p.severity == "error" and p not in problems]  # bases: once each
            warnings += [w for w in analysed if w.severity != "error" and w not in warnings]
            if not any(p.severity == "error" for p in analysed):
                compiled[name] = result
        if any(p.severity == "error" and p.location is not None and p.location.file in (file, *(
                raw[n][0] for n in chain)) for p in problems[before:]):
            broken.setdefault(name, file)

    default = _default_policy(raw, documents, problems)
    if any(p.severity == "error" for p in problems) or not raw:
        if not problems:
            problems.append(Problem("no-policies", "no policy files to load", Location("<input>")))
        raise PolicyError(problems + warnings, texts)
    assert default is not None
    return PolicySet(compiled, default, warnings, texts,
                     {n: limits for n, limits in rate_limits.items() if n in compiled})


def _extends_chain(name: str, raw: Mapping[str, tuple[str, dict[str, Any]]], documents: Mapping[str, Document],
                   problems: list[Problem], broken: Mapping[str, str] = {}) -> list[str] | None:
    """Bases in merge order (depth first, each once), the policy itself last. A base that failed
    its schema (``broken``) is kept in the chain, for the caller to report as a broken base."""
    order: list[str] = []
    ok = True

    def visit(current: str, stack: tuple[str, ...]) -> None:
        nonlocal ok
        file, data = raw[current]
        for i, base in enumerate(data.get("extends", [])):
            location = documents[file].location(("extends", i))
            if base in stack or base == current:
                problems.append(Problem("extends-cycle", f"{' → '.join(stack + (current, base))} is a cycle",
                                        location, path=f"extends[{i}]"))
                ok = False
            elif base in broken and base not in raw:
                order.append(base)
            elif base not in raw:
                problems.append(Problem("unknown-base", f"no policy named {base!r} to extend (known: "
                                        f"{', '.join(sorted(raw)) or 'none'})", location, path=f"extends[{i}]"))
                ok = False
            elif not raw[base][1].get("abstract", False):
                problems.append(Problem("extends-concrete", f"{base!r} is not abstract; only policies with "
                                        "`abstract: true` can be extended", location, path=f"extends[{i}]"))
                ok = False
            else:
                visit(base, stack + (current,))
        if current not in order:
            order.append(current)

    visit(name, ())
    return order if ok else None


def _merge(chain: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[JsonPath, str]]:
    """Merge a policy with its bases: later entries win key by key, rules accumulate."""
    merged: dict[str, Any] = {}
    owner: dict[JsonPath, str] = {}
    for file, data in chain:
        for key in _INHERITED:
            if key not in data:
                continue
            value = data[key]
            if key in ("rules", "rate_limits"):
                merged.setdefault(key, []).extend(value)
            elif key == "timezone":
                merged[key] = value
                owner[(key,)] = file
            elif key in ("defaults", "limits"):
                section = merged.setdefault(key, {})
                for sub, item in value.items():
                    if isinstance(item, dict):
                        section[sub] = {**section.get(sub, {}), **item}
                        owner.update({(key, sub, leaf): file for leaf in item})
                    else:
                        section[sub] = item
                        owner[(key, sub)] = file
            else:
                merged.setdefault(key, {}).update(value)
                owner.update({(key, entry): file for entry in value})
    file, own = chain[-1]
    for key in ("apiVersion", "name", "description", "default", "abstract"):
        if key in own:
            merged[key] = own[key]
    return merged, owner


def _default_policy(raw: Mapping[str, tuple[str, dict[str, Any]]], documents: Mapping[str, Document],
                    problems: list[Problem]) -> str | None:
    concrete = sorted(n for n, (_, d) in raw.items() if not d.get("abstract", False))
    marked = [n for n in concrete if raw[n][1].get("default", False)]
    if len(marked) > 1:
        for name in marked:
            file = raw[name][0]
            problems.append(Problem("multiple-defaults", f"policies {', '.join(marked)} are all marked default; "
                                    "mark one", documents[file].location(("default",)), path="default"))
        return None
    if marked:
        return marked[0]
    if len(concrete) == 1:
        return concrete[0]
    if concrete:
        file = raw[concrete[0]][0]
        problems.append(Problem("no-default-policy", f"{len(concrete)} policies ({', '.join(concrete)}) and none "
                                "is marked `default: true`", documents[file].location(("name",)), path="default"))
    elif raw:
        file = next(iter(raw.values()))[0]
        problems.append(Problem("no-policies", "every policy is abstract; nothing can decide",
                                Location(file, 1, 1)))
    return None
