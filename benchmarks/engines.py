"""The engines compared in-process, each behind one interface: ``decide(context, now) -> dict``.

Every engine receives the same raw context (JSON-shaped dict) and decision instant and returns
the decision normalised to the fields all of them compute. Engines whose optional package is
missing or fails are reported with the reason instead of aborting the run.

* ttlpolicy native / reference: the real library (``load_policies(..., backend=...)``); native
  includes context validation, derived attributes, the trace and ``Decision.to_dict()``.
* hand-written Python: benchmarks/handwritten.py (workforce) or generated straight-line Python
  (synthetic): the practical limit.
* Rego: the same policy in Rego, evaluated in-process by regorus (interpreter and its RVM
  bytecode VM; PyPI ``gordon-to-regorus``) and by OPA's Go engine (``opa-golib-python-bindings``).
* Rust CEL (``common-expression-language``): evaluates the policy's own CEL conditions (one
  context object per decision); the combination is the hand-written Python one.

Rego and Rust CEL cannot derive attributes (zone from CIDR, hour in a time zone) from the
policy's declarations, so they get the hand-written ``prepare()`` output, and the time to prepare
it (and to encode it as JSON for Rego) is part of their timing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import handwritten
import synthetic

FIELDS = ("allow", "access_ttl", "refresh_ttl", "step_up", "rotation", "idle_timeout", "max_session")
HERE = Path(__file__).resolve().parent


@dataclass
class Engine:
    name: str
    decide: Callable[[dict[str, Any], datetime], dict[str, Any]]
    note: str = ""
    slow: bool = False  # time fewer iterations (and check fewer contexts)


class Unavailable(Exception):
    """An engine that could not be set up; the message says why (shown in RESULTS.md)."""


def _ttlpolicy_decision(d: dict[str, Any]) -> dict[str, Any]:
    refresh = d["refresh"]
    return {"allow": d["allow"], "access_ttl": d["access_ttl"], "refresh_ttl": d["refresh_ttl"],
            "step_up": d["step_up"], "rotation": refresh["rotation"], "idle_timeout": refresh["idle_timeout"],
            "max_session": refresh["max_session"]}


def ttlpolicy_engines(policy_set_loader: Callable[[str], Any]) -> list[Engine]:
    native = policy_set_loader("native")
    reference = policy_set_loader("reference")

    def decide_native(context: dict[str, Any], now: datetime) -> dict[str, Any]:
        return native.decide(context, now=now).to_dict()

    def decide_reference(context: dict[str, Any], now: datetime) -> dict[str, Any]:
        return reference.decide(context, now=now).to_dict()
    return [
        Engine("ttlpolicy (native CEL)", decide_native,
               "PolicySet.decide(...).to_dict(): validation, derived attributes, trace, JSON-ready dict"),
        Engine("ttlpolicy (cel-python interpreter)", decide_reference,
               'backend="reference": the same conditions run by cel-python\'s interpreter', slow=True),
    ]


def _regorus_engines(rego: str, prepare: Callable[..., dict[str, Any]], label: str) -> list[Engine]:
    try:
        import orjson
        import regorus
    except ImportError as exc:
        raise Unavailable(f"regorus binding not installed ({exc})") from None
    dumps = orjson.dumps
    engines = []
    interp = regorus.Engine()
    interp.add_policy(f"{label}.rego", rego)

    def decide_interp(context: dict[str, Any], now: datetime) -> dict[str, Any]:
        # JSON, not set_input(dict): some regorus bindings turn Python True into 1.0 that way
        interp.set_input_json(dumps(prepare(context, now)).decode())
        return orjson.loads(interp.eval_rule_as_json("data.ttl.decision"))
    engines.append(Engine("Rego: regorus interpreter", decide_interp, "gordon-to-regorus Engine.eval_rule"))
    try:
        program = regorus.Program.compile_from_modules("{}", [(f"{label}.rego", rego)], ["data.ttl.decision"])
        vm = regorus.Rvm()
        vm.load_program(program)

        def decide_rvm(context: dict[str, Any], now: datetime) -> dict[str, Any]:
            vm.set_input_json(dumps(prepare(context, now)).decode())
            return orjson.loads(vm.execute())
        engines.append(Engine("Rego: regorus RVM (bytecode)", decide_rvm, "gordon-to-regorus Program + Rvm"))
    except Exception as exc:  # noqa: BLE001 - report and go on with the interpreter
        raise Unavailable(f"regorus RVM: {str(exc).strip().splitlines()[0]}") from None
    return engines


def _opa_engine(rego: str, prepare: Callable[..., dict[str, Any]], label: str) -> Engine:
    try:
        from opa_bindings import OpaEngine
    except ImportError as exc:
        raise Unavailable(f"opa-golib-python-bindings not installed ({exc})") from None
    except OSError as exc:
        raise Unavailable(f"opa-golib-python-bindings: its Go library failed to load ({exc})") from None
    opa = OpaEngine()
    opa.add_policy(f"{label}.rego", rego)

    def decide_opa(context: dict[str, Any], now: datetime) -> dict[str, Any]:
        return opa.eval_document("ttl.decision", prepare(context, now))
    return Engine("Rego: OPA (Go, via ctypes)", decide_opa, "opa-golib-python-bindings OpaEngine.eval_document",
                  slow=True)


def _cel_activation(i: dict[str, Any]) -> dict[str, Any]:
    """Prepared input with times as datetimes (CEL timestamps) for the Rust CEL binding."""
    out = dict(i)
    out["time"] = dict(i["time"], now=datetime.fromtimestamp(i["time"]["now"], timezone.utc))
    if "auth_time" in i["user"]:
        out["user"] = dict(i["user"], auth_time=datetime.fromtimestamp(i["user"]["auth_time"], timezone.utc))
    return out


def _cel_rust_module() -> Any:
    try:
        import cel
        cel.compile  # noqa: B018 - the Rust binding, not some other package called cel
    except (ImportError, AttributeError) as exc:
        raise Unavailable(f"common-expression-language not installed ({exc})") from None
    return cel


def _optional(factories: list[Callable[[], Engine | list[Engine]]], failures: dict[str, str],
              engines: list[Engine]) -> None:
    for factory in factories:
        try:
            made = factory()
        except Unavailable as exc:
            failures[factory.__name__] = str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - an engine failing to set up is a result, not a crash
            failures[factory.__name__] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            continue
        engines.extend(made if isinstance(made, list) else [made])


def workforce_engines(policies_dir: str, failures: dict[str, str]) -> list[Engine]:
    from ttlpolicy import load_policies
    engines = ttlpolicy_engines(lambda backend: load_policies(policies_dir, backend=backend))
    engines.insert(0, Engine("hand-written Python", handwritten.decide, "benchmarks/handwritten.py"))
    rego = (HERE / "rego" / "workforce.rego").read_text()
    policy = load_policies(policies_dir).get()

    def cel_rust() -> Engine:
        cel = _cel_rust_module()
        conditions = [(rule.name, cel.compile(rule.when)) for rule in policy.rules]
        risk = next(r for r in policy.rules if r.name == "risk-scaling").access
        factor = cel.compile(risk.factor_text)
        low, high = risk.factor_min, risk.factor_max

        def decide(context: dict[str, Any], now: datetime) -> dict[str, Any]:
            i = handwritten.prepare(context, now)
            ctx = cel.Context(variables=_cel_activation(i))
            matched = {name for name, program in conditions if program.execute(ctx) is True}
            return handwritten.combine(i, matched, min(max(factor.execute(ctx), low), high))
        return Engine("CEL: Rust (common-expression-language)", decide,
                      "the policy's CEL conditions in cel-rust; combination in hand-written Python")

    def regorus_interp_and_rvm() -> list[Engine]:
        return _regorus_engines(rego, handwritten.prepare, "workforce")

    def opa() -> Engine:
        return _opa_engine(rego, handwritten.prepare, "workforce")
    _optional([regorus_interp_and_rvm, opa, cel_rust], failures, engines)
    return engines


def synthetic_engines(syn: synthetic.Synthetic, failures: dict[str, str]) -> list[Engine]:
    from ttlpolicy import load_sources
    engines = ttlpolicy_engines(lambda backend: load_sources({f"synthetic-{syn.n}.yaml": syn.yaml},
                                                             backend=backend))
    engines.insert(0, Engine("hand-written Python", syn.handwritten(),
                             f"generated straight-line Python, one `if` per rule ({syn.n} rules)"))

    def cel_rust() -> Engine:
        cel = _cel_rust_module()
        programs = [cel.compile(text) for text in syn.conditions]
        rules = syn.rules

        def decide(context: dict[str, Any], now: datetime) -> dict[str, Any]:
            ctx = cel.Context(variables=_cel_activation(synthetic.prepare(context, now)))
            return synthetic.combine(rules, [k for k, p in enumerate(programs) if p.execute(ctx) is True])
        return Engine("CEL: Rust (common-expression-language)", decide,
                      "the policy's CEL conditions in cel-rust; combination in hand-written Python")

    def regorus_interp_and_rvm() -> list[Engine]:
        return _regorus_engines(syn.rego, synthetic.prepare, f"synthetic-{syn.n}")

    def opa() -> Engine:
        return _opa_engine(syn.rego, synthetic.prepare, f"synthetic-{syn.n}")
    _optional([regorus_interp_and_rvm, opa, cel_rust], failures, engines)
    return engines


def normalise(engine: Engine, result: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    if "refresh" in result and isinstance(result["refresh"], dict):  # ttlpolicy's decision JSON
        result = _ttlpolicy_decision(result)
    return {f: result.get(f) for f in fields}


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
