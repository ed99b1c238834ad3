"""``RefreshChain`` families and refresh-token records on the shared state store.

:class:`StateRefreshStore` implements :class:`ttlpolicy.tokens.RefreshStore` on a
:class:`StateStore`, so rotation, the grace window and reuse detection work across processes
and replicas: ``consume`` is an atomic claim (``put_if_absent``) that exactly one process wins,
and a family revoked on one replica (reuse detected) is revoked on all of them at once — the
family's revoked mark is read from the store on every redemption, and the revocation is also
recorded in :class:`~.revocation.Revocations`, so the check endpoint and every
``TokenVerifier`` that consults the runtime refuse the family's access tokens too.

The ``tighten_*`` methods only ever lower a value, also under concurrency: every lowered value
is added to a set and the lowest one counts.

>>> chain = RefreshChain(StateRefreshStore(store, runtime.revocations), reuse_grace=10)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Callable

import orjson

from ..tokens.refresh import Family, RefreshRecord
from .revocation import Revocations
from .store import StateStore

MIN_KEEP = 3600.0


class StateRefreshStore:
    """A :class:`ttlpolicy.tokens.RefreshStore` on a state store (SQLite or Redis).

    ``retention``: how long a family is kept (at least its longest session).
    """

    def __init__(self, store: StateStore, revocations: Revocations | None = None, *, retention: float = 90 * 86400,
                 clock: Callable[[], float] = time.time):
        self.store, self.revocations, self.retention, self.clock = store, revocations, retention, clock

    def _keep(self, until: float | None) -> float:
        if until is None:
            return self.retention
        return min(self.retention, max(MIN_KEEP, until - self.clock() + MIN_KEEP))

    # families
    def create_family(self, family: Family) -> None:
        data = asdict(family)
        data["cnf"] = dict(family.cnf) if family.cnf is not None else None
        if not self.store.put_if_absent(f"refresh:family:{family.id}", orjson.dumps(data).decode(),
                                        self._keep(family.session_exp)):
            raise ValueError("family id already exists")

    def family(self, family_id: str) -> Family | None:
        batch = self.store.batch()
        batch.get(f"refresh:family:{family_id}")
        batch.get(f"refresh:family-revoked:{family_id}")
        batch.set_members(f"refresh:family-session:{family_id}")
        raw, revoked, sessions = batch.execute()
        if raw is None:
            return None
        data = orjson.loads(raw)
        data["cnf"] = data.get("cnf")
        family = Family(**data)
        lowered = [int(s) for s in sessions]
        if lowered:
            current = family.session_exp
            family = replace(family, session_exp=min(lowered + ([current] if current is not None else [])))
        if revoked is not None:
            mark = orjson.loads(revoked)
            family = replace(family, revoked_at=mark["at"], revoked_reason=mark["reason"])
        return family

    def tighten_session(self, family_id: str, session_exp: int) -> None:
        self.store.set_add(f"refresh:family-session:{family_id}", [str(int(session_exp))], self.retention)

    def revoke_family(self, family_id: str, at: int, reason: str) -> None:
        # The first reason is the one that counts: put_if_absent keeps it.
        self.store.put_if_absent(f"refresh:family-revoked:{family_id}",
                                 orjson.dumps({"at": at, "reason": reason}).decode(), self.retention)
        if self.revocations is not None:
            self.revocations.revoke("family", family_id, reason=reason, by="refresh-chain", now=self.clock(),
                                    issued_before=min(float(at), self.clock()))

    def is_revoked(self, family: str) -> bool:
        return self.store.get(f"refresh:family-revoked:{family}") is not None

    # refresh-token records
    def add_token(self, record: RefreshRecord) -> None:
        data = asdict(record)
        used = {"used_at": data.pop("used_at"), "successor": data.pop("successor")}
        batch = self.store.batch(atomic=True)
        keep = self._keep(record.expires_at)
        batch.put(f"refresh:token:{record.jti}", orjson.dumps(data).decode(), keep)
        if used["successor"] is not None:
            batch.put(f"refresh:token-used:{record.jti}", orjson.dumps(used).decode(), keep)
        batch.execute()

    def token(self, jti: str) -> RefreshRecord | None:
        batch = self.store.batch()
        batch.get(f"refresh:token:{jti}")
        batch.get(f"refresh:token-used:{jti}")
        batch.set_members(f"refresh:token-expiry:{jti}")
        raw, used, lowered = batch.execute()
        if raw is None:
            return None
        record = RefreshRecord(**orjson.loads(raw))
        if used is not None:
            mark = orjson.loads(used)
            record = replace(record, used_at=mark["used_at"], successor=mark["successor"])
        if lowered:
            record = replace(record, expires_at=min([record.expires_at, *(int(x) for x in lowered)]))
        return record

    def consume(self, jti: str, at: int, successor: str) -> bool:
        if self.store.get(f"refresh:token:{jti}") is None:
            return False
        return self.store.put_if_absent(f"refresh:token-used:{jti}",
                                        orjson.dumps({"used_at": at, "successor": successor}).decode(), self.retention)

    def set_successor(self, jti: str, successor: str) -> None:
        current = self.store.get(f"refresh:token-used:{jti}")
        used_at = orjson.loads(current)["used_at"] if current is not None else None
        self.store.put(f"refresh:token-used:{jti}", orjson.dumps({"used_at": used_at, "successor": successor}).decode(),
                       self.retention)

    def tighten_token(self, jti: str, expires_at: int) -> None:
        self.store.set_add(f"refresh:token-expiry:{jti}", [str(int(expires_at))], self.retention)
