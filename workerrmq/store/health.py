"""Each consumer's health (:mod:`workerrmq.core.health`), kept in ``consumer_health``.

The row remembers when trouble started and which change was last notified, so a
watcher that restarts or hands over to another worker neither forgets a condition
nor sends a notification again for a state that did not change. Writes are
compare-and-set: of two watchers that look at once, one writes and the other's
write is dropped, so each change is recorded, and notified, once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from workerrmq.core.health import HealthRecord
from workerrmq.core.status import CircuitState, ConsumerState, Health, RunnerStatus
from workerrmq.store.consumers import STATS_FRESH_FOR
from workerrmq.store.db import Database
from workerrmq.store.models import ConsumerDef, ConsumerHealth, ConsumerStats, as_utc, utcnow

__all__ = ["HealthStore", "Watched", "Claim"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Watched:
    """What a look at one consumer needs, read in one go for every consumer."""

    id: str
    name: str
    dead_letter_queue: str
    degraded_after: float
    running: bool  # not paused
    circuit_closed: bool  # no worker running it reports its circuit open or half-open
    delivered: int  # in all, over every worker that ran it
    last_error: str | None
    record: HealthRecord
    version: int | None  # of the stored record; None: none stored yet


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """A change to notify, taken by one sender (see :meth:`HealthStore.claim`)."""

    consumer_id: str
    consumer_name: str
    record: HealthRecord


def _record(row: ConsumerHealth | None) -> HealthRecord:
    if row is None:
        return HealthRecord()
    return HealthRecord(
        health=Health(row.health),
        reason=row.reason,
        changed_at=_utc(row.changed_at),
        circuit_open_since=_utc(row.circuit_open_since),
        delivered_mark=row.delivered_mark,
        dead_letters=row.dead_letters,
        dead_letters_grew_since=_utc(row.dead_letters_grew_since),
    )


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return as_utc(moment) if moment is not None else None


def _columns(record: HealthRecord) -> dict[str, Any]:
    return {
        "health": record.health.value,
        "reason": record.reason,
        "changed_at": record.changed_at,
        "circuit_open_since": record.circuit_open_since,
        "delivered_mark": record.delivered_mark,
        "dead_letters": record.dead_letters,
        "dead_letters_grew_since": record.dead_letters_grew_since,
    }


class HealthStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def watched(self) -> list[Watched]:
        """Every consumer with its stored record and whether its circuit is closed.

        Reads plain columns only (no credentials are decrypted), three queries in all.
        """
        fresh = utcnow() - STATS_FRESH_FOR
        with self.db.session() as session:
            consumers = session.execute(
                select(
                    ConsumerDef.id,
                    ConsumerDef.name,
                    ConsumerDef.state,
                    ConsumerDef.dead_letter_queue,
                    ConsumerDef.degraded_after,
                ).order_by(ConsumerDef.created_at, ConsumerDef.id)
            ).all()
            delivered: dict[str, int] = {
                cid: int(total or 0)
                for cid, total in session.execute(
                    select(ConsumerStats.consumer_id, func.sum(ConsumerStats.delivered)).group_by(
                        ConsumerStats.consumer_id
                    )
                )
            }
            tripped = session.scalars(
                select(ConsumerStats).where(
                    ConsumerStats.circuit != CircuitState.CLOSED.value,
                    ConsumerStats.status != RunnerStatus.STOPPED.value,
                    ConsumerStats.updated_at >= fresh,
                )
            )
            open_circuits: dict[str, str | None] = {}
            for stats in tripped:
                open_circuits[stats.consumer_id] = open_circuits.get(stats.consumer_id) or stats.last_error
            rows = {row.consumer_id: row for row in session.scalars(select(ConsumerHealth))}
            return [
                Watched(
                    id=c.id,
                    name=c.name,
                    dead_letter_queue=c.dead_letter_queue,
                    degraded_after=c.degraded_after,
                    running=c.state == ConsumerState.RUNNING,
                    circuit_closed=c.id not in open_circuits,
                    delivered=delivered.get(c.id, 0),
                    last_error=open_circuits.get(c.id),
                    record=_record(rows.get(c.id)),
                    version=rows[c.id].version if c.id in rows else None,
                )
                for c in consumers
            ]

    def save(self, watched: Watched, record: HealthRecord, *, notify: bool) -> bool:
        """Store *record* for *watched*'s consumer if nobody changed it since it was read;
        True if it was stored. With *notify*, a change of health is left to be notified
        (:meth:`claim`); without, it counts as notified."""
        values = _columns(record)
        if not notify:
            values["notified"] = record.health.value
        try:
            with self.db.session() as session:
                if watched.version is None:
                    values.setdefault("notified", Health.OK.value)
                    session.add(ConsumerHealth(consumer_id=watched.id, version=1, **values))
                    session.flush()
                    return True
                done = session.execute(
                    update(ConsumerHealth)
                    .where(
                        ConsumerHealth.consumer_id == watched.id, ConsumerHealth.version == watched.version
                    )
                    .values(version=watched.version + 1, **values)
                )
                return bool(done.rowcount)  # type: ignore[attr-defined]
        except IntegrityError:
            return False  # another watcher inserted it first, or the consumer was deleted

    def settle(self) -> None:
        """Count every change as notified (notifications are off: none is owed later)."""
        with self.db.session() as session:
            session.execute(
                update(ConsumerHealth)
                .where(ConsumerHealth.notified != ConsumerHealth.health)
                .values(notified=ConsumerHealth.health, notify_claimed_at=None)
            )

    def claim(self, *, lease: float) -> list[Claim]:
        """Take the changes not yet notified for sending, each by one caller only.

        A claim older than *lease* seconds was left by a sender that died, maybe after
        its event arrived: the consumer's current health is sent again then, even if it
        equals the one last notified (a receiver that got the event drops the repeat by
        its ``webhook-id``; one that did not gets the state as it is now).
        """
        now = utcnow()
        pending = or_(
            and_(
                ConsumerHealth.notified != ConsumerHealth.health, ConsumerHealth.notify_claimed_at.is_(None)
            ),
            ConsumerHealth.notify_claimed_at < now - dt.timedelta(seconds=lease),
        )
        claims = []
        with self.db.session() as session:
            ids = list(session.scalars(select(ConsumerHealth.consumer_id).where(pending)))
        for consumer_id in ids:
            with self.db.session() as session:
                taken = session.execute(
                    update(ConsumerHealth)
                    .where(ConsumerHealth.consumer_id == consumer_id, pending)
                    .values(notify_claimed_at=now)
                )
                if not taken.rowcount:  # type: ignore[attr-defined]
                    continue  # another sender took it
                row = session.get(ConsumerHealth, consumer_id)
                name = session.scalar(select(ConsumerDef.name).where(ConsumerDef.id == consumer_id))
                if row is not None and name is not None:
                    claims.append(Claim(consumer_id=consumer_id, consumer_name=name, record=_record(row)))
        return claims

    def release(self, consumer_id: str) -> None:
        """Free the claim of a send that was stopped: the next look sends it again."""
        with self.db.session() as session:
            session.execute(
                update(ConsumerHealth)
                .where(ConsumerHealth.consumer_id == consumer_id)
                .values(notify_claimed_at=None)
            )

    def notified(self, consumer_id: str, health: Health) -> None:
        """Record that *health* was notified (or given up on) and free the claim."""
        with self.db.session() as session:
            session.execute(
                update(ConsumerHealth)
                .where(ConsumerHealth.consumer_id == consumer_id)
                .values(notified=health.value, notify_claimed_at=None)
            )

    def views(self, consumer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What the API shows of each consumer's health: ``health``, ``degraded_reason``
        and ``degraded_since`` (ISO 8601), ``ok`` for a consumer not looked at yet."""
        wanted = list(consumer_ids)
        with self.db.session() as session:
            query = select(ConsumerHealth)
            if len(wanted) <= 500:
                query = query.where(ConsumerHealth.consumer_id.in_(wanted))
            rows = {row.consumer_id: _record(row) for row in session.scalars(query)}
        return {cid: view(rows.get(cid, HealthRecord())) for cid in wanted}


def view(record: HealthRecord) -> dict[str, Any]:
    """*record* as the API shows it."""
    degraded = record.health is Health.DEGRADED
    since = record.degraded_since
    return {
        "health": record.health.value,
        "degraded_reason": record.reason if degraded else None,
        "degraded_since": since.isoformat() if since is not None else None,
    }
