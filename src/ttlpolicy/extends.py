"""Compile stage "extends": a policy merged with the abstract bases it extends.

Bases merge depth first, each once, the policy itself last; later entries win key by key and
rules and rate limits accumulate. Every merged value remembers the file it came from (``owner``), so that a
problem found in the merged policy points at the base file that wrote it.
"""

from __future__ import annotations

from typing import Any, Mapping

from .errors import Location, Problem
from .load import Document, JsonPath

_INHERITED = ("timezone", "defaults", "limits", "tiers", "zones", "attributes", "rules", "rate_limits")


def extends_chain(name: str, raw: Mapping[str, tuple[str, dict[str, Any]]], documents: Mapping[str, Document],
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


def merge(chain: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[JsonPath, str]]:
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


def default_policy(raw: Mapping[str, tuple[str, dict[str, Any]]], documents: Mapping[str, Document],
                   problems: list[Problem]) -> str | None:
    """The policy that decides when none is named: the one marked ``default``, or the only one."""
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
