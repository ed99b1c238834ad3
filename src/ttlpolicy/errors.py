"""One error model for every stage: a located problem with a stable code.

Every stage (YAML loading, schema validation, CEL parsing and type checking, semantic
checks, context validation) collects :class:`Problem` objects instead of raising on the
first one, so a user sees everything that is wrong at once. The same problem renders as
text (``file:line:col: code: message`` plus the source line and a caret) and as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

# error: the policy is refused; warning: lint shows it (``--strict`` fails on it); note: a
# warning the policy acknowledges with a reason (``allow:`` on the rule), shown, never failing.
Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True, slots=True)
class Location:
    """A position in a file: 1-based line and column. ``line == 0`` means "the whole file"."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy or a context.

    ``code`` is a stable slug (``cel-unknown-attribute``) that tools may match on;
    ``message`` is for people and may change between releases.
    """

    code: str
    message: str
    location: Location | None = None
    severity: Severity = "error"
    path: str = ""  # where in the document or context, e.g. "rules[2].when" or "user.risk"

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location or Location("")
        return (loc.file, loc.line, loc.column, self.code)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "severity": self.severity, "message": self.message}
        if self.path:
            out["path"] = self.path
        if self.location is not None:
            out["location"] = self.location.to_dict()
        return out

    @classmethod
    def field(cls, path: str, code: str, message: str) -> Problem:
        """One offending field of a request (``now``, ``events[3].id``): an ``errors`` entry of an HTTP problem."""
        return cls(code, message, path=path)

    def field_error(self, default_path: str = "") -> dict[str, Any]:
        """The ``{path, code, message}`` entry of an HTTP problem's ``errors`` list (with ``line`` and
        ``column`` when the problem is located in a text the request sent, such as a CEL scope)."""
        out: dict[str, Any] = {"path": self.path or default_path, "code": self.code, "message": self.message}
        if self.location is not None and self.location.line:
            out["line"], out["column"] = self.location.line, self.location.column
        return out

    def render(self, sources: Mapping[str, str] | None = None, unlocated: str = "<input>") -> str:
        """``file:line:col: severity[code]: message`` followed by the source line and a caret.

        A problem without a location is shown at its ``path`` (``user.risk``), else at ``unlocated``."""
        loc = self.location
        return self._render(sources[loc.file].splitlines() if sources and loc and loc.file in sources else None,
                            unlocated)

    def _render(self, lines: list[str] | None, unlocated: str = "<input>") -> str:
        """:meth:`render` with the lines of the problem's file (split once for many problems)."""
        where = str(self.location) if self.location else self.path or unlocated
        head = f"{where}: {self.severity}[{self.code}]: {self.message}"
        loc = self.location
        if lines is None or not (loc and loc.line):
            return head
        if loc.line > len(lines):
            return head
        text = lines[loc.line - 1].expandtabs(1)
        caret = " " * max(loc.column - 1, 0) + "^"
        return f"{head}\n  {text}\n  {caret}"


def sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Problems in file, line, column order, duplicates removed."""
    return sorted(dict.fromkeys(problems), key=Problem.sort_key)


class PolicyError(Exception):
    """A policy set could not be loaded. ``problems`` holds every problem found, sorted."""

    def __init__(self, problems: Iterable[Problem], sources: Mapping[str, str] | None = None):
        self.problems = sorted_problems(problems)
        self.sources = dict(sources or {})
        errors = [p for p in self.problems if p.severity == "error"] or self.problems
        first = errors[0].render() if errors else "invalid policy"
        more = len(errors) - 1
        super().__init__(first + (f" (and {more} more error{'s' * (more != 1)})" if more > 0 else ""))

    @property
    def errors(self) -> list[Problem]:
        """The problems that made loading fail (``problems`` also holds warnings)."""
        return [p for p in self.problems if p.severity == "error"]

    def render(self) -> str:
        return render_text(self.problems, self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {"problems": [p.to_dict() for p in self.problems]}


class ContextError(ValueError):
    """A decision context violates the declared attributes. ``problems`` lists every violation."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.path or 'context'}: {p.message}" for p in self.problems))

    def to_dict(self) -> dict[str, Any]:
        return {"problems": [p.to_dict() for p in self.problems]}


class UnknownPolicyError(LookupError):
    """``decide(policy=...)`` named a policy that the set does not hold."""

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown policy {name!r}; known policies: {', '.join(self.known) or 'none'}")


def render_lines(problems: Iterable[Problem], sources: Mapping[str, str] | None = None,
                 unlocated: str = "<input>") -> str:
    """Each problem as :meth:`Problem.render` shows it, one after the other (no summary line)."""
    lines = {file: text.splitlines() for file, text in (sources or {}).items()}  # once, not per problem
    return "\n".join(p._render(lines.get(p.location.file) if p.location else None, unlocated) for p in problems)


def render_text(problems: Iterable[Problem], sources: Mapping[str, str] | None = None) -> str:
    """The problems, then a summary line (``2 errors, 1 warning``): how lint shows a policy set."""
    problems = list(problems)
    body = render_lines(problems, sources)
    errors = sum(p.severity == "error" for p in problems)
    warnings = sum(p.severity == "warning" for p in problems)
    notes = len(problems) - errors - warnings
    summary = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    if notes:
        summary += f", {notes} acknowledged"
    return f"{body}\n{summary}" if body else summary


@dataclass
class ProblemCollector:
    """Collects problems for one file; stages append, nothing raises mid-way."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def add(self, code: str, message: str, line: int = 0, column: int = 0, *,
            path: str = "", severity: Severity = "error") -> None:
        self.problems.append(Problem(code, message, Location(self.file, line, column), severity, path))


# Every stable code, with what it means. Tools may match on these; tests keep this list
# and the codes the stages emit in step, and docs/errors.md is generated from it.
CODES: Mapping[str, str] = {
    # files and YAML
    "io-error": "a path cannot be read (or, for a command's output, written)",
    "no-policies": "nothing to load: no policy files, or only abstract ones",
    "file-too-large": "a file is over the 1 MiB limit",
    "file-encoding": "a file is binary or not UTF-8",
    "yaml-syntax": "the YAML cannot be parsed",
    "yaml-duplicate-key": "a mapping repeats a key (YAML would silently keep the last)",
    "yaml-key": "a mapping key is not a plain scalar",
    "yaml-tag": "a YAML tag or implicit type the policy language does not use (dates, !!binary, !!python/...)",
    "yaml-too-many-nodes": "the document expands to too many values (an alias bomb)",
    "not-a-mapping": "the document is empty or not a mapping",
    # schema and model
    "schema": "the document violates the policy JSON Schema",
    "duplicate-policy": "two files define a policy of the same name",
    "unknown-base": "extends names a policy that does not exist",
    "extends-cycle": "policies extend each other in a cycle",
    "extends-concrete": "extends names a policy that is not abstract",
    "base-broken": "a policy was not checked because a base it extends has errors (reported at the base)",
    "multiple-defaults": "more than one policy is marked default",
    "no-default-policy": "several policies and none is marked default",
    # semantics
    "missing-base": "no base lifetime for a target (no default and not in every tier)",
    "limit-min-above-max": "a limit's min is above its max",
    "tier-above-limit": "a tier's base or ceiling is above a limit",
    "refresh-shorter-than-access": "a base refresh lifetime is shorter than the access lifetime",
    "unknown-tier": "a tier name that the policy does not declare",
    "unknown-zone": "a zone name that the policy does not declare",
    "invalid-cidr": "a zone entry is not a CIDR",
    "zone-overlap": "two zone CIDRs overlap, so an IP could map to two zones",
    "invalid-timezone": "not an IANA time zone",
    "duplicate-rule": "two rules share a name",
    "rule-no-effect": "a rule has no effect",
    "floor-above-cap": "a rule's floor is above its own cap",
    "factor-bounds": "a factor's max is below its min",
    "setting-bound": "a setting beyond the bound the documentation gives (refresh.reuse_grace above 5m)",
    "attribute-derived": "a derived attribute (location.zone, time.*) is redeclared",
    "attribute-name": "an attribute name collides with a built-in namespace",
    "attribute-values": "values given for an attribute type that cannot have them",
    "attribute-bounds": "an attribute's min is above its max",
    "attribute-type": "a built-in attribute is redeclared with another type",
    "attribute-default": "an attribute's default does not fit its declaration",
    "duplicate-rate-limit": "two rate limits share a name",
    "rate-limit-rate": "a rate limit's rate has a count below 1 or a window below 1s",
    # CEL
    "cel-syntax": "a CEL expression cannot be parsed",
    "cel-unknown-attribute": "a CEL expression reads an attribute that is not declared",
    "cel-type-mismatch": "a CEL expression combines types that do not fit",
    "cel-enum-value": "a string literal is not an allowed value of the attribute it is compared with",
    "cel-not-boolean": "a condition is not boolean",
    "cel-not-numeric": "a factor expression is not a number",
    "cel-unknown-function": "a CEL function or method that does not exist",
    "cel-unsupported": "a CEL construct ttlpolicy does not support",
    "cel-too-deep": "an expression nests too deeply (a syntax tree deeper than 250 levels)",
    "cel-literal-range": "an integer literal does not fit 64 bits, so every evaluation would fail",
    "cel-impossible-comparison": "a comparison with a literal that the attribute's declared range never satisfies",
    "cel-duration-overflow": "the difference of two instants (`time.now - user.auth_time`) can leave the duration range and fail; compare the instants",
    # from analysis of what a compiled policy means
    "condition-never-true": "no allowed context makes the condition true: the rule is dead",
    "condition-always-true": "every allowed context makes the condition true (often two `!=` joined with "
                             "or); write `when: \"true\"` if that is meant",
    "effect-never-applies": "an effect that a limit, ceiling or unconditional cap always dominates",
    "loosening-rule": "a rule that can make tokens live longer (factor above 1, floor)",
    "allow-unused": "a rule acknowledges a warning (`allow:`) that it does not have",
    # policy test files (ttlpolicy test)
    "no-tests": "a test directory holds no test files",
    "test-file": "a policy test file violates its format",
    # whole sets: manifests, signatures, bundles (ttlpolicy bundle, hot reload)
    "set-changing": "the policy files kept changing: no quiet period to take a whole set in",
    "manifest-invalid": "a set's .manifest.json is not a valid manifest",
    "manifest-mismatch": "a set's files or semantic digest differ from what its manifest lists",
    "signature-missing": "signing keys are configured and the set carries no signed manifest",
    "signature-invalid": "a set's .signature.jws does not verify with a configured key",
    "set-tests-failed": "a set's own tests fail, so it is not served (or built)",
    "bundle-invalid": "a bundle is not a safe gzip'd tar of a policy set (garbage, truncated, links, ../ paths, too big)",
    "bundle-fetch-failed": "a bundle cannot be fetched or read",
    "bundle-rollback": "a fetched bundle was built before the one being served",
    # request contexts
    "context-type": "a context (or a namespace in it) is not an object",
    "context-unknown-attribute": "a context sends an attribute the policy does not declare",
    "context-derived-attribute": "a context sends a derived attribute",
    "context-forbidden-attribute": "a context sends `token` or `activity`, which only the service fills (from a "
                                   "verified subject_token, from its state store)",
    "context-missing": "a required attribute is missing",
    "context-value": "a value does not fit its declaration",
    # requests to the service: the `errors[].code` of an HTTP problem, one per offending field
    "invalid-type": "the body, or one item of a batch, is not a JSON object",
    "missing-field": "a required field is missing",
    "unknown-field": "a field or query parameter the request does not have",
    "invalid-field": "a field's value has the wrong type or form",
    "too-long": "a text is longer than its limit",
    "too-many-items": "a list is longer than its limit (a batch, revocations, events), or too many emergencies are "
                      "live",
    "out-of-range": "a duration or an instant outside what is allowed",
    "duplicate-id": "an event id repeats within one batch",
    "unknown-policy": "a policy name the set does not hold (a request's `policy`, a command's --policy)",
    "unknown-attribute": "a heat-map axis names an attribute the policy does not declare",
    "values-required": "a heat-map axis needs values the attribute does not give by itself",
    "invalid-value": "a heat-map axis value (or `heatmap --set`) does not fit the attribute",
    "compute-time-exceeded": "a computation (a heat-map) ran past its time limit",
    # the command line's own problems (ttlpolicy COMMAND); docs/errors.md#the-command-line
    "usage": "a command line that cannot work: a missing or extra argument, options that contradict each other, "
             "a flag's value of the wrong form or out of range",
    "policy-load-failed": "a command cannot run because its policy set does not load (the set's own problems "
                          "are listed before it)",
    "unknown-rule": "`eval --rule` names a rule the policy does not have",
    "context-json": "a context given to a command (a file or stdin) is not valid JSON; shown at its line and column",
    "file-exists": "a command would overwrite files that exist (`init` never overwrites)",
    "fmt-changes-meaning": "`fmt` leaves a file as it is because formatting it would change what it means",
    "replay-record": "a line of a decision log given to `diff --replay` is not a decision record",
    "report-skipped-line": "a line of a log given to `report` is not a record it can count, so it is skipped",
    "git-error": "`diff --git` cannot read the revision (no such commit, not a repository, no git)",
    "invalid-key": "a key file cannot be used to sign or verify (not PEM, not a usable kind of key or algorithm)",
    "state-url": "a state store URL (`decide --state`) that cannot be used or opened",
    "missing-dependency": "a feature needs an optional package that is not installed (`heatmap --format png`: "
                          "cairosvg)",
    "invalid-settings": "the service's settings (config file, TTLPOLICY_* variables, flags) or the files they "
                        "name cannot be used",
    "insecure-bind": "`serve` refuses a non-loopback address while no credentials are configured",
    "auth-disabled": "`serve` runs without credentials (loopback only, or --insecure-no-auth)",
    "service-unreachable": "a command that acts on the running service cannot reach it (--url, $TTLPOLICY_URL); "
                           "its refusals carry the service's own problem code (HTTP problems below)",
}

# The problems the HTTP API answers with: RFC 9457 ``code`` (also the last part of ``type``)
# -> (status, title). Titles never change between occurrences (RFC 9457 §3.1.3); ``detail``
# says what happened this time, and ``errors`` lists each offending field with a code of CODES.
HTTP_PROBLEMS: Mapping[str, tuple[int, str]] = {
    "invalid-json": (400, "Request body is not valid JSON"),
    "invalid-request": (400, "Request does not have the expected shape"),  # its body or its query
    "invalid-security-event": (400, "Security event refused"),
    "unauthorized": (401, "Missing or invalid credentials"),
    "insufficient-scope": (403, "Credentials lack the required scope"),
    "not-found": (404, "No such resource"),
    "unknown-policy": (404, "Unknown policy"),
    "method-not-allowed": (405, "Method not allowed"),
    "request-timeout": (408, "Request not received in time"),
    "body-too-large": (413, "Request body too large"),
    "text-too-large": (413, "Policy text too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "invalid-context": (422, "Context violates the declared attributes"),
    "invalid-subject-token": (422, "Subject token failed verification"),
    "subject-token-not-configured": (422, "Subject tokens are not accepted by this service"),
    "policy-load-failed": (422, "Policy set failed to load"),
    "invalid-revocation": (422, "Revocation request is not valid"),
    "invalid-emergency": (422, "Emergency request is not valid"),
    "invalid-grid": (422, "The heat-map cannot be drawn"),
    "grid-too-large": (422, "The heat-map has too many cells"),
    "compute-time-exceeded": (422, "The computation took too long"),
    "invalid-source": (422, "The policy version cannot be read"),
    "rate-limited": (429, "Too many requests"),
    "headers-too-large": (431, "Request header fields too large"),
    "internal-error": (500, "Internal server error"),
    "state-unavailable": (503, "State store unavailable"),
    "decision-log-unavailable": (503, "Decision log unavailable"),
    "too-many-connections": (503, "Too many open connections"),
    "http-error": (0, "HTTP error"),  # 0: any other status the HTTP layer raises, with that status
}

# Codes that are warnings: lint shows them and exits 0 (``--strict`` fails on them), a load
# succeeds. A rule may acknowledge one with ``allow: [{code, reason}]``; it then shows as a note.
# (report-skipped-line and auth-disabled are the CLI's warnings: shown, the command goes on.)
# Every other code is an error: the policy is refused. Dead or contradictory conditions are
# errors because a reviewer must not merge them; a dominated effect or a loosening rule may be
# exactly what was meant, and says so in review.
WARNING_CODES: frozenset[str] = frozenset({"effect-never-applies", "loosening-rule", "allow-unused",
                                           "cel-duration-overflow", "report-skipped-line", "auth-disabled"})


def severity_of(code: str) -> Severity:
    """``"warning"`` for the codes in :data:`WARNING_CODES`, ``"error"`` for every other code."""
    return "warning" if code in WARNING_CODES else "error"


def codes_table() -> str:
    """The table of docs/errors.md, generated from :data:`CODES` (a test keeps the file in step)."""
    rows = ["| code | severity | meaning |", "|---|---|---|"]
    rows += [f"| `{code}` | {severity_of(code)} | {meaning} |" for code, meaning in CODES.items()]
    return "\n".join(rows) + "\n"


def http_problems_table() -> str:
    """The HTTP problems table of docs/errors.md, generated from :data:`HTTP_PROBLEMS`."""
    rows = ["| status | code | title |", "|---:|---|---|"]
    rows += [f"| {status or 'other'} | `{code}` | {title} |" for code, (status, title) in HTTP_PROBLEMS.items()]
    return "\n".join(rows) + "\n"
