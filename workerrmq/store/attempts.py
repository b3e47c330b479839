"""The attempt log: every delivery attempt, as the workers made it.

The workers write it in batches (:meth:`AttemptStore.add`), off the delivery path, and
prune it (:meth:`AttemptStore.prune`): by age, and to a number of rows per consumer.
The API reads it a page at a time, newest first (:meth:`AttemptStore.page`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Result, and_, delete, func, or_, select, text

from workerrmq.store.db import Database
from workerrmq.store.models import AttemptRow, as_utc, utcnow

__all__ = ["INSERTED", "AttemptFilter", "AttemptStore", "OUTCOMES", "RESPONSE_MAX"]

#: What became of the message after an attempt: delivered; to be tried again; sent to the
#: dead-letter queue; or back to its queue unacked (its retry or dead-letter republish was
#: not confirmed by the broker).
OUTCOMES = ("delivered", "retry", "dead_lettered", "failed")
#: Characters of an error's answer kept per attempt.
RESPONSE_MAX = 1024
#: The columns :meth:`AttemptStore.add` fills, in the order of its statement.
INSERTED = (
    "consumer_id",
    "consumer",
    "message_id",
    "attempt",
    "at",
    "duration_ms",
    "status",
    "error",
    "outcome",
    "response",
    "worker",
)
# Any constant will do: the same in every WorkerRMQ process, other than the migration lock's.
_PG_PRUNE_LOCK = 0x41545450


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptFilter:
    """Which attempts to list; every condition given must hold.

    *status* is an HTTP status (``"503"``), ``delivered``, ``failed`` (any attempt that
    was not delivered), or an error kind (``timeout``, ``connection``, ``HTTP 503``).
    """

    consumer_id: str | None = None
    message_id: str | None = None
    status: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.consumer_id is not None:
            found.append(AttemptRow.consumer_id == self.consumer_id)
        if self.message_id is not None:
            found.append(AttemptRow.message_id == self.message_id)
        if self.since is not None:
            found.append(AttemptRow.at >= self.since)
        if self.until is not None:
            found.append(AttemptRow.at < self.until)
        if self.status is not None:
            found.append(_status_condition(self.status))
        return found


def _status_condition(status: str) -> ColumnElement[bool]:
    if status.isascii() and status.isdigit():
        return AttemptRow.status == int(status)
    if status == "delivered":
        return AttemptRow.outcome == "delivered"
    if status == "failed":
        return AttemptRow.outcome != "delivered"
    return func.lower(AttemptRow.error) == status.lower()


class AttemptStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert: tuple[Dialect, str, list[tuple[int, Callable[[Any], Any]]]] | None = None

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert *rows*, dicts of :class:`~workerrmq.store.models.AttemptRow`'s columns but ``id``."""
        self.add_tuples([tuple(row[name] for name in INSERTED) for row in rows])

    def add_tuples(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert *rows*, tuples of the columns in :data:`INSERTED`'s order, in one executemany.

        The workers call this for every attempt, so it skips SQLAlchemy's per-row parameter
        building (most of the cost, measured): the statement is compiled once per dialect and
        the rows go to the driver as they are, but for the columns whose type converts its
        values on this dialect (SQLite keeps datetimes as text)."""
        if not rows:
            return
        with self.db.session() as session:
            connection = session.connection()
            sql, params = self.for_driver(connection.dialect, rows)
            connection.exec_driver_sql(sql, params)

    def for_driver(
        self, dialect: Dialect, rows: Sequence[tuple[Any, ...]]
    ) -> tuple[str, list[tuple[Any, ...]]]:
        """The INSERT for *dialect*'s driver and *rows* as its parameters."""
        sql, processors = self._insert_for(dialect)
        if not processors:
            return sql, list(rows)
        converted: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(row)
            for index, process in processors:
                values[index] = process(values[index])
            converted.append(tuple(values))
        return sql, converted

    def sqlite_file(self) -> str | None:
        """The database file, if the log is kept in SQLite in a file (the workers then write it
        on their event loop: :class:`~workerrmq.worker.attempt_log.AttemptLog`)."""
        url = self.db.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return url.database

    def _insert_for(self, dialect: Dialect) -> tuple[str, list[tuple[int, Callable[[Any], Any]]]]:
        """The INSERT for *dialect*'s driver, and the bind processors of the columns that have one."""
        if self._insert is None or self._insert[0] is not dialect:
            mark = "?" if dialect.paramstyle == "qmark" else "%s"
            table = AttemptRow.__table__
            marks = ", ".join([mark] * len(INSERTED))
            sql = f"INSERT INTO {AttemptRow.__tablename__} ({', '.join(INSERTED)}) VALUES ({marks})"
            processors: list[tuple[int, Callable[[Any], Any]]] = []
            for index, name in enumerate(INSERTED):
                process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                if process is not None:
                    processors.append((index, process))
            self._insert = (dialect, sql, processors)
        return self._insert[1], self._insert[2]

    def page(
        self, where: AttemptFilter, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the attempts *where* picks, newest first, and how many it picks."""
        conditions = where.conditions()
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(AttemptRow).where(*conditions)) or 0
            rows = session.scalars(
                select(AttemptRow)
                .where(*conditions)
                .order_by(AttemptRow.at.desc(), AttemptRow.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
        return [_view(row) for row in rows], total

    def prune(self, *, max_age: dt.timedelta, max_per_consumer: int, now: dt.datetime | None = None) -> int:
        """Delete the attempts older than *max_age*, then each consumer's oldest beyond
        *max_per_consumer*; returns how many went. On PostgreSQL one process prunes at a
        time (the others return 0 at once); SQLite takes one writer at a time anyway."""
        cutoff = (now or utcnow()) - max_age
        with self.db.session() as session:
            if self.db.url.get_backend_name() == "postgresql":
                locked = session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PG_PRUNE_LOCK})
                if not locked:
                    return 0
            pruned = _deleted(session.execute(delete(AttemptRow).where(AttemptRow.at < cutoff)))
            crowded = session.scalars(
                select(AttemptRow.consumer_id)
                .group_by(AttemptRow.consumer_id)
                .having(func.count() > max_per_consumer)
            ).all()
            for consumer_id in crowded:
                # The newest row beyond the limit: it and every older one go.
                edge = session.execute(
                    select(AttemptRow.at, AttemptRow.id)
                    .where(AttemptRow.consumer_id == consumer_id)
                    .order_by(AttemptRow.at.desc(), AttemptRow.id.desc())
                    .offset(max_per_consumer)
                    .limit(1)
                ).one()
                older = or_(AttemptRow.at < edge.at, and_(AttemptRow.at == edge.at, AttemptRow.id <= edge.id))
                pruned += _deleted(
                    session.execute(delete(AttemptRow).where(AttemptRow.consumer_id == consumer_id, older))
                )
        return pruned


def _deleted(result: Result[Any]) -> int:
    """Rows a DELETE removed."""
    return int(getattr(result, "rowcount", 0) or 0)


def _view(row: AttemptRow) -> dict[str, Any]:
    """An attempt as the API shows it."""
    return {
        "message_id": row.message_id,
        "consumer_id": row.consumer_id,
        "consumer": row.consumer,
        "attempt": row.attempt,
        "at": as_utc(row.at).isoformat(),
        "duration_ms": row.duration_ms,
        "status": row.status,
        "error": row.error,
        "outcome": row.outcome,
        "response": row.response,
        "worker": row.worker,
    }
