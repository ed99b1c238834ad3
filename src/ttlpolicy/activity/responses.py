"""Automatic responses: what a firing detector (or a verified security event) does on its own.

A response is an *action* kept in the state store for a bounded time (the detector's ``for``)
on one subject or client: ``disable_refresh`` (every decision for it gets ``refresh_ttl`` 0) or
``step_up`` (every decision demands a second factor), applied here; or a revocation
(``revoke_family``, ``revoke_subject``) or an emergency ceiling (``emergency``) made through the
state layer, whose ids the action keeps in ``refs``. Actions only tighten (promise 8), appear
in the trace of every decision they change with the action's id and its cause, are listed with
their evidence, and can be undone (the record keeps who undid it and when).

Keys: ``actions:all`` (map id -> the record as JSON, kept ``RETENTION``),
``actions:{per}:{key}`` (map id -> ``kind|until``, expiring with the longest action in it) and
``actions:version`` (replaced by every take and undo of an action applied here, so a service
can keep the actions in force in memory and reload them only when it changed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import orjson

from ..decision import Decision, Step
from ..state import Batch, StateStore

KINDS = ("disable_refresh", "step_up", "revoke_family", "revoke_subject", "emergency")
APPLIED_HERE = ("disable_refresh", "step_up")  # the others are revocations and emergencies of the state layer
RETENTION = 30 * 86_400.0  # how long action records (undone or expired) stay listable
VERSION = "actions:version"


@dataclass(frozen=True, slots=True)
class Action:
    """One automatic action: what, on whom, until when, why (``cause`` and ``evidence``)."""

    id: str
    kind: str
    per: str  # subject | client
    key: str
    cause: str  # "detector refresh-burst" or "security event credential-compromise"
    evidence: Mapping[str, Any]
    created_at: float
    until: float
    undone_at: float | None = None
    undone_by: str | None = None
    refs: tuple[str, ...] = ()  # revocation or emergency ids made by this action

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "per": self.per, "key": self.key, "cause": self.cause,
                "evidence": dict(self.evidence), "created_at": self.created_at, "until": self.until,
                "undone_at": self.undone_at, "undone_by": self.undone_by, "refs": list(self.refs)}

    @classmethod
    def from_json(cls, text: str) -> Action:
        data = orjson.loads(text)
        data["refs"] = tuple(data.get("refs") or ())
        return cls(**data)

    def active(self, now: float) -> bool:
        return self.undone_at is None and self.created_at <= now < self.until


def _index(per: str, key: str) -> str:
    return f"actions:{per}:{key}"


class ActionStore:
    """Actions in the state store: take, find the ones in force for a decision, list, undo."""

    def __init__(self, store: StateStore):
        self.store = store

    def take(self, kind: str, per: str, key: str, cause: str, evidence: Mapping[str, Any], now: float,
             seconds: float, refs: Sequence[str] = ()) -> Action:
        """Record a new action in force from ``now`` for ``seconds``; one round trip. Only
        ``disable_refresh`` and ``step_up`` are indexed for decisions; the others are records of
        what the state layer was asked to do (``refs``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown action {kind!r}; known: {', '.join(KINDS)}")
        if per not in ("subject", "client"):
            raise ValueError("an action applies to a subject or a client")
        action = Action(id="act_" + os.urandom(12).hex(), kind=kind, per=per, key=key, cause=cause,
                        evidence=dict(evidence), created_at=now, until=now + seconds, refs=tuple(refs))
        batch = self.store.batch()
        batch.map_put("actions:all", action.id, orjson.dumps(action.to_dict()).decode(), RETENTION)
        if kind in APPLIED_HERE:
            batch.map_put(_index(per, key), action.id, f"{kind}|{action.until!r}", seconds)
            batch.put(VERSION, os.urandom(8).hex(), RETENTION)
        batch.execute()
        return action

    def queue_in_force(self, batch: Batch, subject: str | None, client: str | None) -> int:
        """Queue the reads of the actions that may apply to a decision; returns how many were queued."""
        queued = 0
        for per, key in (("subject", subject), ("client", client)):
            if key is not None:
                batch.map_get_all(_index(per, key))
                queued += 1
        return queued

    def version(self) -> str | None:
        """The value every take and undo of an action applied here replaces (one small read)."""
        return self.store.get(VERSION)

    def all_in_force(self, now: float) -> tuple[str | None, dict[tuple[str, str], list[tuple[str, str, float]]]]:
        """The version and every action applied here not ended at ``now``, as
        ``{(per, key): [(action id, kind, until)]}``; one round trip."""
        batch = self.store.batch()
        batch.get(VERSION)
        batch.map_get_all("actions:all")
        version, records = batch.execute()
        out: dict[tuple[str, str], list[tuple[str, str, float]]] = {}
        for text in records.values():
            action = Action.from_json(text)
            if action.kind in APPLIED_HERE and action.undone_at is None and now < action.until:
                out.setdefault((action.per, action.key), []).append((action.id, action.kind, action.until))
        return version, out

    @staticmethod
    def in_force(results: Sequence[Mapping[str, str]], now: float) -> list[tuple[str, str]]:
        """``(action id, kind)`` of the actions in force, from the results of :meth:`queue_in_force`."""
        out = []
        for index in results:
            for action_id, value in index.items():
                kind, _, until = value.partition("|")
                try:
                    if now < float(until):
                        out.append((action_id, kind))
                except ValueError:
                    out.append((action_id, kind))  # unreadable end: keep applying (it only tightens)
        return sorted(out)

    def get(self, action_id: str) -> Action | None:
        text = self.store.map_get("actions:all", action_id)
        return Action.from_json(text) if text is not None else None

    def list(self, per: str | None = None, key: str | None = None, active_at: float | None = None) -> list[Action]:
        """Every recorded action (newest first), optionally for one subject/client or in force at a time."""
        actions = [Action.from_json(t) for t in self.store.map_get_all("actions:all").values()]
        actions = [a for a in actions if (per is None or a.per == per) and (key is None or a.key == key)
                   and (active_at is None or a.active(active_at))]
        return sorted(actions, key=lambda a: (-a.created_at, a.id))

    def undo(self, action_id: str, by: str, now: float) -> Action | None:
        """End an action now; returns the updated record (``None``: no such action). Idempotent."""
        action = self.get(action_id)
        if action is None or action.undone_at is not None:
            return action
        undone = replace(action, undone_at=now, undone_by=by)
        batch = self.store.batch()
        batch.map_delete(_index(action.per, action.key), action_id)
        batch.map_put("actions:all", action_id, orjson.dumps(undone.to_dict()).decode(), RETENTION)
        batch.put(VERSION, os.urandom(8).hex(), RETENTION)
        batch.execute()
        return undone


def apply_actions(decision: Decision, actions: Iterable[tuple[str, str]], causes: Mapping[str, str] | None = None
                  ) -> list[str]:
    """Tighten ``decision`` by the actions in force; returns the ids of those that changed it.

    ``disable_refresh`` sets ``refresh_ttl`` to 0, ``step_up`` demands a second factor. Both
    only ever tighten, and each change is a trace step naming the action.
    """
    changed = []
    for action_id, kind in actions:
        source = f"action {action_id}" + (f" ({causes[action_id]})" if causes and action_id in causes else "")
        if kind == "disable_refresh" and decision.refresh_ttl > 0:
            decision.refresh_ttl = 0
            decision.trace.append(Step("refresh_ttl", "automatic", "disable_refresh", 0, source=source))
            changed.append(action_id)
        elif kind == "step_up" and decision.allow and not any(action_id in r for r in decision.step_up_reasons):
            decision.step_up = True
            decision.step_up_reasons.append(f"automatic response ({action_id})")
            changed.append(action_id)
    return changed
