"""Consumer definitions and the statistics workers report for them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from workerrmq.errors import Conflict, NotFound
from workerrmq.store.db import Database
from workerrmq.store.models import ConsumerDef, ConsumerStats, as_utc, utcnow
from workerrmq.worker.policy import DEFAULT_RETRY_ON

__all__ = ["ConsumerSpec", "ConsumerStore", "StatsReport", "STATS_FRESH_FOR"]

#: A worker whose report is older than this no longer counts towards live figures.
STATS_FRESH_FOR = dt.timedelta(seconds=30)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsumerSpec:
    """A consumer definition, detached from the database; what a worker runs."""

    id: str
    name: str
    queue: str
    target_url: str
    method: str = "POST"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout: float = 10.0
    concurrency: int = 32
    max_attempts: int = 8
    initial_delay: float = 1.0
    max_delay: float = 3600.0
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    signing_secret: str | None = dataclasses.field(default=None, repr=False)
    rate_limit: float | None = None
    ordered: bool = False
    circuit_threshold: int = 10
    circuit_cooldown: float = 30.0
    dead_letter_queue: str = ""
    instances: int | None = None  # how many workers run it; None: all
    state: str = "running"
    version: int = 1
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @classmethod
    def of(cls, row: ConsumerDef) -> ConsumerSpec:
        values = {f.name: getattr(row, f.name) for f in dataclasses.fields(cls)}
        values["headers"] = dict(row.headers or {})
        values["retry_on"] = tuple(row.retry_on)
        values["created_at"] = as_utc(row.created_at)
        values["updated_at"] = as_utc(row.updated_at)
        return cls(**values)


@dataclasses.dataclass(kw_only=True)
class StatsReport:
    """What one worker reports for one consumer."""

    consumer_id: str
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    circuit: str = "closed"
    status: str = "consuming"
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


_EDITABLE = {f.name for f in dataclasses.fields(ConsumerSpec)} - {
    "id", "version", "created_at", "updated_at"
}


class ConsumerStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, values: Mapping[str, Any]) -> ConsumerSpec:
        values = dict(values)
        values.setdefault("retry_on", list(DEFAULT_RETRY_ON))
        values.setdefault("dead_letter_queue", f"{values['queue']}.dlq")
        row = ConsumerDef(**{k: v for k, v in values.items() if k in _EDITABLE})
        try:
            with self.db.session() as session:
                session.add(row)
                session.flush()
                return ConsumerSpec.of(row)
        except IntegrityError:
            raise Conflict(f"a consumer named {values['name']!r} already exists") from None

    def get(self, ref: str) -> ConsumerSpec:
        """The consumer whose id or name is *ref*."""
        with self.db.session() as session:
            return ConsumerSpec.of(self._row(session, ref))

    def list(self, *, queue: str | None = None) -> list[ConsumerSpec]:
        with self.db.session() as session:
            query = select(ConsumerDef).order_by(ConsumerDef.created_at, ConsumerDef.id)
            if queue:
                query = query.where(ConsumerDef.queue == queue)
            return [ConsumerSpec.of(row) for row in session.scalars(query)]

    def update(self, ref: str, changes: Mapping[str, Any]) -> ConsumerSpec:
        """Apply *changes* and bump the version, so running workers pick them up."""
        try:
            with self.db.session() as session:
                row = self._row(session, ref)
                for key, value in changes.items():
                    if key in _EDITABLE:
                        setattr(row, key, value)
                row.version += 1
                row.updated_at = utcnow()
                session.flush()
                return ConsumerSpec.of(row)
        except IntegrityError:
            raise Conflict(f"a consumer named {changes.get('name')!r} already exists") from None

    def delete(self, ref: str) -> ConsumerSpec:
        with self.db.session() as session:
            row = self._row(session, ref)
            spec = ConsumerSpec.of(row)
            session.execute(delete(ConsumerStats).where(ConsumerStats.consumer_id == row.id))
            session.delete(row)
            return spec

    # -- statistics ---------------------------------------------------------------------

    def report(self, worker_id: str, reports: Iterable[StatsReport]) -> None:
        """Store *worker_id*'s current figures (running totals since it started)."""
        now = utcnow()
        with self.db.session() as session:
            known = set(session.scalars(select(ConsumerDef.id)))
            mine = {row.consumer_id: row for row in session.scalars(
                select(ConsumerStats).where(ConsumerStats.worker_id == worker_id))}
            for report in reports:
                if report.consumer_id not in known:
                    continue  # deleted meanwhile
                row = mine.get(report.consumer_id)
                if row is None:
                    row = ConsumerStats(worker_id=worker_id, consumer_id=report.consumer_id)
                    session.add(row)
                for key, value in dataclasses.asdict(report).items():
                    setattr(row, key, value)
                row.updated_at = now

    def stats(self, consumer_id: str) -> dict[str, Any]:
        """Figures for one consumer, summed over every worker that ran it.

        Totals count every worker that ever reported; in-flight counts, circuit
        state and latency only come from workers that reported recently.
        """
        return self.stats_of([consumer_id])[consumer_id]

    def stats_of(self, consumer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`stats` for many consumers, in one query."""
        wanted = list(consumer_ids)
        rows: dict[str, list[ConsumerStats]] = {cid: [] for cid in wanted}
        with self.db.session() as session:
            query = select(ConsumerStats)
            if len(wanted) <= 500:
                query = query.where(ConsumerStats.consumer_id.in_(wanted))
            for row in session.scalars(query):
                if row.consumer_id in rows:
                    rows[row.consumer_id].append(row)
        now = utcnow()
        return {cid: summarize(found, now) for cid, found in rows.items()}

    @staticmethod
    def _row(session: Any, ref: str) -> ConsumerDef:
        row = session.get(ConsumerDef, ref)
        if row is None:
            row = session.scalar(select(ConsumerDef).where(ConsumerDef.name == ref))
        if row is None:
            raise NotFound(f"consumer {ref!r} not found")
        return row


def summarize(rows: list[ConsumerStats], now: dt.datetime) -> dict[str, Any]:
    live = [r for r in rows if now - as_utc(r.updated_at) <= STATS_FRESH_FOR]
    running = sorted(r.worker_id for r in live if r.status != "stopped")
    errors = [r for r in rows if r.last_error_at is not None]
    last = max(errors, key=lambda r: as_utc(r.last_error_at), default=None)  # type: ignore[arg-type]
    circuits = {r.circuit for r in live}
    p50 = [r.latency_p50_ms for r in live if r.latency_p50_ms is not None]
    p99 = [r.latency_p99_ms for r in live if r.latency_p99_ms is not None]
    return {
        "delivered": sum(r.delivered for r in rows),
        "failed": sum(r.failed for r in rows),
        "retried": sum(r.retried for r in rows),
        "dead_lettered": sum(r.dead_lettered for r in rows),
        "in_flight": sum(r.in_flight for r in live),
        "workers": len(running),
        "running_on": running,
        "status": sorted({r.status for r in live}) or ["not running"],
        "circuit": "open" if "open" in circuits else "half_open" if "half_open" in circuits
        else "closed",
        "last_error": last.last_error if last else None,
        "last_error_at": as_utc(last.last_error_at).isoformat() if last and last.last_error_at else None,
        # Across workers the median of medians is an estimate; p99 takes the worst.
        "latency_p50_ms": sorted(p50)[len(p50) // 2] if p50 else None,
        "latency_p99_ms": max(p99) if p99 else None,
    }
