"""Which queues and exchanges this WorkerRMQ manages: those ``workerrmq apply`` declared.

``apply --prune`` deletes only these, so queues of other applications, and WorkerRMQ's own
delay queues, control exchange and dead-letter queues, are never pruned. The record belongs to
one WorkerRMQ database: two installations sharing a virtual host do not prune each other's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from workerrmq.store.db import Database
from workerrmq.store.models import ManagedObject, as_utc, utcnow

__all__ = ["MANAGED_KINDS", "Managed", "ManagedStore"]

MANAGED_KINDS = ("queue", "exchange")


@dataclasses.dataclass(frozen=True)
class Managed:
    kind: str
    name: str
    declared_at: dt.datetime


class ManagedStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self) -> list[Managed]:
        with self.db.session() as session:
            rows = session.scalars(select(ManagedObject).order_by(ManagedObject.kind, ManagedObject.name))
            return [Managed(r.kind, r.name, as_utc(r.declared_at)) for r in rows]

    def record(self, kind: str, name: str) -> Managed:
        """Mark *name* as managed; marking it again keeps the first time."""
        try:
            with self.db.session() as session:
                row = session.get(ManagedObject, (kind, name))
                if row is None:
                    row = ManagedObject(kind=kind, name=name, declared_at=utcnow())
                    session.add(row)
                    session.flush()
                return Managed(row.kind, row.name, as_utc(row.declared_at))
        except IntegrityError:  # another process marked it at the same moment
            return self.record(kind, name)

    def forget(self, kind: str, name: str) -> bool:
        """Unmark *name*; False if it was not marked."""
        with self.db.session() as session:
            result = session.execute(
                delete(ManagedObject).where(ManagedObject.kind == kind, ManagedObject.name == name)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]  # a DELETE's CursorResult
