"""Consumer definitions and the statistics workers report for them."""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from workerrmq.core.consumer import DEFAULTS, ConsumerSpec, dead_letter_queue_for, redact_auth
from workerrmq.core.credentials import redact_headers, redact_url, secret_headers
from workerrmq.core.status import CircuitState, ConsumerState, RunnerStatus
from workerrmq.errors import Conflict, NotFound
from workerrmq.store.crypto import Cipher
from workerrmq.store.db import Database
from workerrmq.store.models import ConsumerDef, ConsumerStats, WorkerRecord, as_utc, utcnow

__all__ = ["ConsumerStore", "StatsReport", "STATS_FRESH_FOR"]

#: A worker whose report is older than this no longer counts towards live figures.
STATS_FRESH_FOR = dt.timedelta(seconds=30)
_CHUNK = 500  # ids per IN (...) of a query, well within every database's limit


def _spec(row: ConsumerDef, cipher: Cipher) -> ConsumerSpec:
    """The definition in *row*, its credentials opened with *cipher*."""
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(ConsumerSpec) if f.name not in _SEALED}
    values.update(_opened(row, cipher))
    values["retry_on"] = tuple(row.retry_on)
    values["state"] = ConsumerState(row.state)
    values["created_at"] = as_utc(row.created_at)
    values["updated_at"] = as_utc(row.updated_at)
    if row.signing_secret_previous_until is not None:
        values["signing_secret_previous_until"] = as_utc(row.signing_secret_previous_until)
    return ConsumerSpec(**values)


#: The fields whose credentials are stored encrypted, in ``ConsumerDef.credentials``.
_SEALED = ("target_url", "headers", "signing_secret", "auth", "signing_secret_previous")


def _opened(row: ConsumerDef, cipher: Cipher) -> dict[str, Any]:
    """*row*'s sealed fields (:data:`_SEALED`) with their credentials in place."""
    sealed = cipher.open(row.credentials) if row.credentials else {}
    return {
        "target_url": sealed.get("target_url", row.target_url),
        "headers": {**(row.headers or {}), **sealed.get("headers", {})},
        "signing_secret": sealed.get("signing_secret", row.legacy_signing_secret),
        "auth": sealed.get("auth"),
        "signing_secret_previous": sealed.get("signing_secret_previous"),
    }


def _seal(row: ConsumerDef, cipher: Cipher, values: Mapping[str, Any]) -> None:
    """Store *values* (the :data:`_SEALED` fields) in *row*: what may be shown in the plain
    columns, the credentials encrypted in ``credentials``."""
    target_url, headers = values["target_url"], dict(values["headers"] or {})
    auth = values.get("auth")
    row.target_url = redact_url(target_url)
    row.headers = redact_headers(headers)
    row.auth = redact_auth(auth)
    row.legacy_signing_secret = None
    sealed: dict[str, Any] = {}
    if row.target_url != target_url:
        sealed["target_url"] = target_url
    if secret_headers(headers):
        sealed["headers"] = secret_headers(headers)
    for key in ("signing_secret", "signing_secret_previous"):
        if values.get(key) is not None:
            sealed[key] = values[key]
    if auth is not None:
        sealed["auth"] = dict(auth)
    row.credentials = cipher.seal(sealed) if sealed else None


def _in_plaintext(row: ConsumerDef) -> bool:
    """True for a row written before credentials were encrypted that holds one."""
    return (
        row.legacy_signing_secret is not None
        or redact_url(row.target_url) != row.target_url
        or redact_headers(row.headers or {}) != (row.headers or {})
    )


@dataclasses.dataclass(kw_only=True)
class StatsReport:
    """What one worker reports for one consumer."""

    consumer_id: str
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    replies: int = 0  # answers published to reply_to
    replies_unroutable: int = 0  # answers no queue took
    filtered: int = 0  # messages the filter was false for: acked, not delivered
    filter_errors: int = 0  # messages the filter failed on: acked, not delivered
    in_flight: int = 0
    circuit: str = CircuitState.CLOSED
    status: str = RunnerStatus.CONSUMING
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


#: A report's columns in ``consumer_stats``, besides the keys and ``updated_at``.
_STATS_COLUMNS = tuple(f.name for f in dataclasses.fields(StatsReport) if f.name != "consumer_id")


def _row_values(report: StatsReport) -> dict[str, Any]:
    """*report* as the values of its row; enums (statuses, circuit states) as their text."""
    values = {name: getattr(report, name) for name in _STATS_COLUMNS}
    values["consumer_id"] = report.consumer_id
    for name in ("status", "circuit"):
        values[name] = str(values[name])
    return values


_EDITABLE = {f.name for f in dataclasses.fields(ConsumerSpec)} - {
    "id",
    "version",
    "created_at",
    "updated_at",
    *_SEALED,
}


class ConsumerStore:
    """Consumer definitions; credentials are encrypted with *cipher* on the way in and
    opened on the way out."""

    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    def prepare(self) -> None:
        """Run once at start, after the migrations: refuse a wrong ``SECRET_KEY``
        (:class:`~workerrmq.errors.ConfigError`), then encrypt what is still plaintext."""
        self.cipher.check(self.db)
        self.seal_plaintext()

    def seal_plaintext(self) -> int:
        """Encrypt credentials stored in plaintext (rows from before encryption) and
        re-encrypt tokens of an earlier key under ``SECRET_KEY``; how many rows changed."""
        changed = 0
        with self.db.session() as session:
            for row in session.scalars(select(ConsumerDef)):
                if _in_plaintext(row):
                    _seal(row, self.cipher, _opened(row, self.cipher))
                    changed += 1
                elif row.credentials and (rotated := self.cipher.rotate(row.credentials)):
                    row.credentials = rotated
                    changed += 1
        return changed

    def create(self, values: Mapping[str, Any]) -> ConsumerSpec:
        values = dict(values)
        values.setdefault("retry_on", list(DEFAULTS["retry_on"]))
        values.setdefault("dead_letter_queue", dead_letter_queue_for(values["queue"]))
        row = ConsumerDef(**{k: v for k, v in values.items() if k in _EDITABLE})
        _seal(row, self.cipher, {"headers": {}, **values})
        try:
            with self.db.session() as session:
                self._check_name(session, row)
                session.add(row)
                session.flush()
                return _spec(row, self.cipher)
        except IntegrityError:
            raise Conflict(f"a consumer named {values['name']!r} already exists") from None

    def get(self, ref: str) -> ConsumerSpec:
        """The consumer whose id or name is *ref*."""
        with self.db.session() as session:
            return _spec(self._row(session, ref), self.cipher)

    def list(self, *, queue: str | None = None) -> list[ConsumerSpec]:
        """Every consumer (of *queue*), oldest first."""
        return self.page(queue=queue)[0]

    def page(
        self, *, queue: str | None = None, offset: int = 0, limit: int | None = None
    ) -> tuple[builtins.list[ConsumerSpec], int]:
        """*limit* consumers (of *queue*) from *offset*, oldest first, and how many there are."""
        with self.db.session() as session:
            query = select(ConsumerDef).order_by(ConsumerDef.created_at, ConsumerDef.id)
            count = select(func.count()).select_from(ConsumerDef)
            if queue:
                query = query.where(ConsumerDef.queue == queue)
                count = count.where(ConsumerDef.queue == queue)
            rows = list(session.scalars(query.offset(offset).limit(limit)))
            total = len(rows) if offset == 0 and limit is None else session.scalar(count) or 0
            return [_spec(row, self.cipher) for row in rows], total

    def revision(self) -> tuple[Any, ...]:
        """A fingerprint of every definition that changes whenever one is created, updated
        or deleted: a worker compares it to the last one it saw and skips reading (and
        decrypting) thousands of unchanged definitions."""
        with self.db.session() as session:
            row = session.execute(
                select(
                    func.count(),
                    func.sum(ConsumerDef.version),
                    func.max(ConsumerDef.updated_at),
                    func.max(ConsumerDef.created_at),
                )
            ).one()
            return tuple(row)

    def versions(self) -> dict[str, tuple[int, dt.datetime]]:
        """Each definition's version and update time, by id, oldest first (as :meth:`list`):
        every change of a definition moves both, so a worker reads (and decrypts) again only
        the definitions whose pair moved (:meth:`some`)."""
        with self.db.session() as session:
            rows = session.execute(
                select(ConsumerDef.id, ConsumerDef.version, ConsumerDef.updated_at).order_by(
                    ConsumerDef.created_at, ConsumerDef.id
                )
            )
            return {cid: (version, as_utc(updated_at)) for cid, version, updated_at in rows}

    def some(self, ids: Iterable[str]) -> dict[str, ConsumerSpec]:
        """The definitions of *ids*, by id; those that do not exist are left out."""
        wanted = builtins.list(ids)
        found: dict[str, ConsumerSpec] = {}
        with self.db.session() as session:
            for first in range(0, len(wanted), _CHUNK):
                chunk = wanted[first : first + _CHUNK]
                for row in session.scalars(select(ConsumerDef).where(ConsumerDef.id.in_(chunk))):
                    found[row.id] = _spec(row, self.cipher)
        return found

    def update(self, ref: str, changes: Mapping[str, Any]) -> ConsumerSpec:
        """Apply *changes* and bump the version, so running workers pick them up; changes
        that leave every value as it was bump nothing (and restart nothing)."""
        try:
            with self.db.session() as session:
                row = self._row(session, ref)
                opened = _opened(row, self.cipher)
                changed = {
                    k: v
                    for k, v in changes.items()
                    if k in _EDITABLE and k not in _SEALED and getattr(row, k) != v
                }
                sealed = {k: changes[k] for k in _SEALED if k in changes and opened[k] != changes[k]}
                if not changed and not sealed:
                    return _spec(row, self.cipher)
                for key, value in changed.items():
                    setattr(row, key, value)
                if sealed:
                    _seal(row, self.cipher, {**opened, **sealed})
                self._check_name(session, row)
                row.version += 1
                row.updated_at = utcnow()
                session.flush()
                return _spec(row, self.cipher)
        except IntegrityError:
            raise Conflict(f"a consumer named {changes.get('name')!r} already exists") from None

    def delete(self, ref: str) -> ConsumerSpec:
        with self.db.session() as session:
            row = self._row(session, ref)
            spec = _spec(row, self.cipher)
            session.execute(delete(ConsumerStats).where(ConsumerStats.consumer_id == row.id))
            session.delete(row)
            return spec

    # -- statistics ---------------------------------------------------------------------

    def report(self, worker_id: str, reports: Iterable[StatsReport]) -> None:
        """Store *worker_id*'s current figures (running totals since it started) for the
        consumers of *reports*; those of consumers deleted meanwhile are dropped.

        A worker sends only the consumers whose figures changed: its heartbeat (see
        :meth:`stats_of`) keeps the rows of the others live. The rows are written with one
        UPDATE and one INSERT for all (executemany), not an ORM object each.
        """
        reports = builtins.list(reports)
        if not reports:
            return
        now = utcnow()
        ids = [report.consumer_id for report in reports]
        with self.db.session() as session:
            known: set[str] = set()  # consumers that still exist
            present: set[str] = set()  # and of those, the ones this worker has a row for
            for first in range(0, len(ids), _CHUNK):
                mine = and_(ConsumerStats.consumer_id == ConsumerDef.id, ConsumerStats.worker_id == worker_id)
                found = session.execute(
                    select(ConsumerDef.id, ConsumerStats.consumer_id)
                    .outerjoin(ConsumerStats, mine)
                    .where(ConsumerDef.id.in_(ids[first : first + _CHUNK]))
                )
                for consumer_id, row_of in found:
                    known.add(consumer_id)
                    if row_of is not None:
                        present.add(consumer_id)
            updates: builtins.list[dict[str, Any]] = []
            inserts: builtins.list[dict[str, Any]] = []
            for report in reports:
                if report.consumer_id not in known:
                    continue
                values = _row_values(report)
                values["updated_at"] = now
                if report.consumer_id in present:
                    updates.append(values)
                else:
                    values["worker_id"] = worker_id
                    inserts.append(values)
            # Executed as plain SQL on the session's connection: a list of parameters makes
            # each statement one executemany.
            connection = session.connection()
            if updates:
                for values in updates:
                    values["_consumer"] = values.pop("consumer_id")
                # SET takes the columns of the parameters (every one but the key).
                statement = update(ConsumerStats).where(
                    ConsumerStats.worker_id == worker_id, ConsumerStats.consumer_id == bindparam("_consumer")
                )
                connection.execute(statement, updates)
            if inserts:
                connection.execute(insert(ConsumerStats), inserts)

    def mark_stopped(self, worker_id: str) -> None:
        """Record that *worker_id* runs none of its consumers any more (it stops): every row
        of it in one statement, however many consumers it ran."""
        with self.db.session() as session:
            session.execute(
                update(ConsumerStats)
                .where(ConsumerStats.worker_id == worker_id)
                .values(status=RunnerStatus.STOPPED.value, in_flight=0, updated_at=utcnow())
            )

    def stats(self, consumer_id: str) -> dict[str, Any]:
        """Figures for one consumer, summed over every worker that ran it.

        Totals count every worker that ever reported; in-flight counts, status, circuit
        state and latency only come from live rows: those written recently, and those of a
        worker whose heartbeat is recent and that has not stopped (a worker writes a
        consumer's row only when its figures change, so an idle consumer's row stays as it
        was).
        """
        return self.stats_of([consumer_id])[consumer_id]

    def stats_of(self, consumer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """:meth:`stats` for many consumers, in two queries."""
        wanted = builtins.list(consumer_ids)
        rows: dict[str, builtins.list[ConsumerStats]] = {cid: [] for cid in wanted}
        now = utcnow()
        with self.db.session() as session:
            query = select(ConsumerStats)
            if len(wanted) <= 500:
                query = query.where(ConsumerStats.consumer_id.in_(wanted))
            for row in session.scalars(query):
                if row.consumer_id in rows:
                    rows[row.consumer_id].append(row)
            alive = _alive(session, now)
        return {cid: summarize(found, now, alive) for cid, found in rows.items()}

    @staticmethod
    def _check_name(session: Any, row: ConsumerDef) -> None:
        """Refuse a name that is another consumer's id: ``/consumers/<ref>`` looks ids up
        first, so that consumer could never be reached by its name."""
        if row.name is None or row.name == row.id:
            return
        with session.no_autoflush:
            other = session.get(ConsumerDef, row.name)
        if other is not None and other is not row:
            raise Conflict(f"name: {row.name!r} is the id of another consumer")

    @staticmethod
    def _row(session: Any, ref: str) -> ConsumerDef:
        row = session.get(ConsumerDef, ref)
        if row is None:
            row = session.scalar(select(ConsumerDef).where(ConsumerDef.name == ref))
        if row is None:
            raise NotFound(f"consumer {ref!r} not found")
        return row


def _alive(session: Any, now: dt.datetime) -> frozenset[str]:
    """The workers whose heartbeat is within :data:`STATS_FRESH_FOR` and that have not stopped."""
    since = now - STATS_FRESH_FOR
    beating = session.execute(
        select(WorkerRecord.id, WorkerRecord.last_heartbeat).where(WorkerRecord.stopped_at.is_(None))
    )
    return frozenset(worker_id for worker_id, heartbeat in beating if as_utc(heartbeat) >= since)


def summarize(
    rows: list[ConsumerStats], now: dt.datetime, alive: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """*rows* (one consumer's, one per worker) summed up; a row is live if it was written
    within :data:`STATS_FRESH_FOR` or its worker is among *alive*."""
    live = [r for r in rows if r.worker_id in alive or now - as_utc(r.updated_at) <= STATS_FRESH_FOR]
    running = sorted(r.worker_id for r in live if r.status != RunnerStatus.STOPPED)
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
        "filtered": sum(r.filtered for r in rows),
        "filter_errors": sum(r.filter_errors for r in rows),
        "replies": sum(r.replies for r in rows),
        "replies_unroutable": sum(r.replies_unroutable for r in rows),
        "in_flight": sum(r.in_flight for r in live),
        "workers": len(running),
        "running_on": running,
        "status": sorted({r.status for r in live}) or ["not running"],
        "circuit": next(
            (state for state in (CircuitState.OPEN, CircuitState.HALF_OPEN) if state in circuits),
            CircuitState.CLOSED,
        ).value,
        "last_error": last.last_error if last else None,
        "last_error_at": as_utc(last.last_error_at).isoformat() if last and last.last_error_at else None,
        # Across workers the median of medians is an estimate; p99 takes the worst.
        "latency_p50_ms": sorted(p50)[len(p50) // 2] if p50 else None,
        "latency_p99_ms": max(p99) if p99 else None,
    }
