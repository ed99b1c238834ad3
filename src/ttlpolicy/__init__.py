"""ttlpolicy — adaptive access- and refresh-token lifetimes as declarative, type-checked policy.

Load a policy set once, decide many times (thread-safe)::

    from ttlpolicy import load_policies

    policies = load_policies("policies/")
    decision = policies.decide({"tier": "finance", "device": {"trust": "unmanaged"}})
    decision.access_ttl, decision.refresh_ttl, decision.to_dict()["trace"]

The pipeline is the layout: ``load`` → ``validate`` → ``compile`` → ``evaluate`` → ``server``.
"""

from __future__ import annotations

from .program import CompiledPolicy
from .decision import Decision, RuleOutcome, Step
from .durations import format_duration, parse_duration
from .errors import ContextError, Location, PolicyError, Problem, UnknownPolicyError
from .policyset import PolicySet, load_policies, load_sources

__version__ = "0.1.0"

__all__ = [
    "CompiledPolicy",
    "ContextError",
    "Decision",
    "Location",
    "PolicyError",
    "PolicySet",
    "Problem",
    "RuleOutcome",
    "Step",
    "UnknownPolicyError",
    "format_duration",
    "load_policies",
    "load_sources",
    "parse_duration",
    "__version__",
]
