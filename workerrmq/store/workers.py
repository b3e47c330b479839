"""The worker registry: every worker process registers and heartbeats here."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import func, select

from workerrmq.core.status import ConsumerState, RunnerStatus
from workerrmq.store.consumers import STATS_FRESH_FOR
from workerrmq.store.db import Database
from workerrmq.store.models import ConsumerDef, ConsumerStats, WorkerRecord, as_utc, utcnow

__all__ = ["WorkerIdentity", "WorkerRegistry", "LOST_AFTER"]

#: A worker whose last heartbeat is older than this is shown as lost.
LOST_AFTER = STATS_FRESH_FOR


@dataclasses.dataclass(frozen=True)
class WorkerIdentity:
    id: str
    host: str
    pid: int
    version: str


class WorkerRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, worker: WorkerIdentity) -> None:
        now = utcnow()
        with self.db.session() as session:
            session.merge(
                WorkerRecord(
                    id=worker.id,
                    host=worker.host,
                    pid=worker.pid,
                    version=worker.version,
                    started_at=now,
                    last_heartbeat=now,
                    stopped_at=None,
                )
            )

    def heartbeat(self, worker_id: str, identity: WorkerIdentity | None = None) -> None:
        """Record that *worker_id* is alive (registering it if the start-up attempt failed)."""
        with self.db.session() as session:
            row = session.get(WorkerRecord, worker_id)
            if row is not None:
                row.last_heartbeat = utcnow()
                return
        if identity is not None:
            self.register(identity)

    def stopped(self, worker_id: str) -> None:
        with self.db.session() as session:
            row = session.get(WorkerRecord, worker_id)
            if row is not None:
                row.stopped_at = utcnow()

    def alive(self) -> list[str]:
        """Ids of workers that heartbeat recently and have not stopped."""
        since = utcnow() - LOST_AFTER
        with self.db.session() as session:
            rows = session.scalars(select(WorkerRecord).where(WorkerRecord.stopped_at.is_(None)))
            return sorted(r.id for r in rows if as_utc(r.last_heartbeat) >= since)

    def running_without_worker(self) -> int:
        """How many consumers are set to run while no worker is alive to run them.

        The number of running (not paused) consumers when no worker heartbeat is
        recent (see :data:`LOST_AFTER`), else 0: nothing is delivered until a worker
        (``workerrmq worker`` or ``workerrmq run``) starts.
        """
        if self.alive():
            return 0
        with self.db.session() as session:
            running = select(func.count()).select_from(ConsumerDef)
            wanted = running.where(ConsumerDef.state == ConsumerState.RUNNING.value)
            return int(session.scalar(wanted) or 0)

    def list(self, *, include_stopped: bool = False) -> list[dict[str, Any]]:
        """Every worker with its state (alive, lost, stopped) and the consumers it runs."""
        now = utcnow()
        with self.db.session() as session:
            workers = list(session.scalars(select(WorkerRecord).order_by(WorkerRecord.started_at)))
            stats = list(session.scalars(select(ConsumerStats)))
        running: dict[str, list[dict[str, Any]]] = {}
        for row in stats:
            if row.status != RunnerStatus.STOPPED:
                running.setdefault(row.worker_id, []).append(
                    {"consumer_id": row.consumer_id, "status": row.status, "in_flight": row.in_flight}
                )
        shown = []
        for w in workers:
            state = _state(w, now)
            if state == "stopped" and not include_stopped:
                continue
            shown.append(
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "version": w.version,
                    "started_at": as_utc(w.started_at).isoformat(),
                    "last_heartbeat": as_utc(w.last_heartbeat).isoformat(),
                    "state": state,
                    "consumers": running.get(w.id, []) if state == "alive" else [],
                }
            )
        return shown


def _state(worker: WorkerRecord, now: dt.datetime) -> str:
    if worker.stopped_at is not None:
        return "stopped"
    return "alive" if now - as_utc(worker.last_heartbeat) <= LOST_AFTER else "lost"
