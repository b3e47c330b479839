"""When a consumer is degraded, and the event that says so. Pure functions, no I/O.

A consumer is **degraded** when, for longer than its ``degraded_after`` seconds,

- its circuit has not closed (open, or half-open with its probe not yet answered 2xx)
  since it opened, or
- its dead-letter queue holds more messages than it did before it grew.

It **recovers** as soon as neither holds: a delivery succeeded and the circuit closed,
and the dead letters were replayed or discarded back down to where they were. A
closed circuit alone is not enough: a worker that restarts starts its consumers'
circuits closed, which says nothing of the endpoint. "Before it grew" is the lowest
depth seen since the dead-letter queue last grew, and 0 for a consumer never looked at
(a consumer that dead-letters from its first message counts too); a replay or discard
that empties the queue brings it back to 0.

A paused consumer delivers nothing, so its circuit does not count.

Whoever watches (:mod:`workerrmq.worker.alerts`) samples the figures every few
seconds and keeps a :class:`HealthRecord` per consumer in the database, so that the
time something started is remembered across watchers and restarts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import Any

from workerrmq.core.status import Health

__all__ = ["DEGRADED", "RECOVERED", "HealthRecord", "assess", "event", "event_id"]

#: The ``type`` of the notification sent when a consumer becomes degraded / recovers.
DEGRADED = "consumer.degraded"
RECOVERED = "consumer.recovered"


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthRecord:
    """What is remembered of one consumer between two looks.

    *reason* is why it is (or last was) degraded; *changed_at* when *health* last
    changed. *circuit_open_since* and *dead_letters_grew_since* are when each
    condition was first seen, None while it does not hold; *dead_letters* is the
    depth the dead-letter queue is compared with; *delivered_mark* the consumer's
    delivered total when its circuit was first seen open.
    """

    health: Health = Health.OK
    reason: str | None = None
    changed_at: dt.datetime | None = None
    circuit_open_since: dt.datetime | None = None
    delivered_mark: int | None = None
    dead_letters: int = 0
    dead_letters_grew_since: dt.datetime | None = None

    @property
    def degraded_since(self) -> dt.datetime | None:
        return self.changed_at if self.health is Health.DEGRADED else None


def assess(
    record: HealthRecord,
    *,
    now: dt.datetime,
    degraded_after: float,
    running: bool,
    circuit_closed: bool,
    delivered: int,
    dead_letters: int | None,
    dead_letter_queue: str,
    last_error: str | None = None,
) -> HealthRecord:
    """The record after a look at the consumer at *now*.

    *running* is False for a paused consumer; *circuit_closed* is False while a
    worker reports its circuit open or half-open; *delivered* is how many messages it
    delivered in all; *dead_letters* is the dead-letter queue's depth, or None if it
    could not be read (the conditions on it then stay as they were).
    """
    circuit_since, mark = record.circuit_open_since, record.delivered_mark
    if not running:
        circuit_since, mark = None, None
    elif not circuit_closed:
        if circuit_since is None:
            circuit_since, mark = now, delivered
    elif mark is None or delivered > mark:
        circuit_since, mark = None, None  # closed by a delivery that succeeded
    baseline, grew_since = record.dead_letters, record.dead_letters_grew_since
    if dead_letters is not None:
        if dead_letters <= baseline:
            baseline, grew_since = dead_letters, None
        else:
            grew_since = grew_since or now
    limit = dt.timedelta(seconds=degraded_after)
    reason = None
    if circuit_since is not None and now - circuit_since >= limit:
        reason = f"circuit open since {_iso(circuit_since)}" + (
            f"; last error: {last_error}" if last_error else ""
        )
    elif grew_since is not None and now - grew_since >= limit:
        grew = f"dead-letter queue {dead_letter_queue} grew "
        if dead_letters is not None:
            reason = f"{grew}from {baseline} to {dead_letters} messages"
        elif record.reason and record.reason.startswith(grew):
            reason = record.reason  # not read this time: as it was
        else:
            reason = f"{grew}beyond {baseline} messages"
    health = Health.DEGRADED if reason else Health.OK
    return HealthRecord(
        health=health,
        reason=reason[:500] if reason else record.reason,
        changed_at=now if health is not record.health else record.changed_at,
        circuit_open_since=circuit_since,
        delivered_mark=mark,
        dead_letters=baseline,
        dead_letters_grew_since=grew_since,
    )


def event(record: HealthRecord, *, consumer_id: str, consumer_name: str) -> dict[str, Any]:
    """The notification for *record*'s latest change: ``consumer.degraded`` with why, or
    ``consumer.recovered`` with the reason it had been degraded for."""
    return {
        "type": DEGRADED if record.health is Health.DEGRADED else RECOVERED,
        "consumer": {"id": consumer_id, "name": consumer_name},
        "reason": record.reason,
        "at": record.changed_at.astimezone(dt.UTC).isoformat() if record.changed_at else None,
    }


def event_id(consumer_id: str, health: Health, changed_at: dt.datetime | None) -> str:
    """The ``webhook-id`` of a notification: the same for every try of one change, so
    a receiver can drop a repeat (a notification may be sent again after a crash)."""
    stamp = _iso(changed_at) if changed_at else ""
    return "alert_" + hashlib.sha256(f"{consumer_id}|{health}|{stamp}".encode()).hexdigest()[:32]


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")
