"""The pipeline end to end: files → load → validate → merge ``extends`` → compile → PolicySet.

The stages themselves are listed, in order, in :data:`ttlpolicy.compile.STAGES`."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .compile import Backend, compile_sources
from .context import parse_timestamp
from .decision import Decision
from .errors import Location, PolicyError, Problem, ProblemCollector, UnknownPolicyError
from .load import read_source
from .program import CompiledPolicy
from .state.ratelimit import CompiledRateLimit

POLICY_SUFFIXES = (".yaml", ".yml")


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
        compiled = self.get(policy)
        if type(now) is not datetime or now.tzinfo is None:  # the common case needs no call
            now = resolve_now(now)
        return compiled.decide(context, now, explain)


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
    compilation = compile_sources(sources, backend, problems)
    if not compilation.schema or any(p.severity == "error" for p in compilation.problems):
        # PolicyError sorts the problems and removes duplicates
        nothing = Problem("no-policies", "no policy files to load", Location("<input>"))
        raise PolicyError(compilation.problems or [nothing], compilation.texts)
    assert compilation.default is not None
    rate_limits = {name: unit.rate_limits for name, unit in compilation.extends.items()
                   if unit.rate_limits and name in compilation.analyse}
    warnings = list(dict.fromkeys(compilation.problems))  # no error among them: warnings and notes
    return PolicySet(compilation.analyse, compilation.default, warnings, compilation.texts, rate_limits)
