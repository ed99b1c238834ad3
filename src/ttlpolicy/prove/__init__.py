"""Proofs about policies: the compiled policy as SMT constraints, decided by z3.

Beside the pipeline (load → validate → compile → evaluate → serve), reading only what
``compile`` produces::

    CompiledPolicy ──encode──▶ SymbolicDecision (terms over the request) ──search──▶ proof | counterexample | unknown

:mod:`.symbols` (the request as variables), :mod:`.cel` (CEL as terms), :mod:`.encode` (the
evaluator's steps as terms), :mod:`.solve` (time-limited search, replay, model evaluation),
:mod:`.diff` (``diff --prove``) and :mod:`.invariants` (invariants in test files). What is and
is not proved: ``docs/proofs.md``.
"""

from __future__ import annotations

from .diff import Counterexample, FieldProof, PolicyProof, prove_diff
from .invariants import InvariantResult, check_invariant

__all__ = ["Counterexample", "FieldProof", "InvariantResult", "PolicyProof", "check_invariant", "prove_diff"]
