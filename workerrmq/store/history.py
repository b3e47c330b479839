"""Statistics history: each consumer's totals and each queue's figures every few seconds,
for the last :data:`RETENTION`.

One row per moment (``stats_samples``), taken by one worker: every worker offers to take
each moment, and the moment being the primary key, a second offer for it fails and is
dropped (:meth:`HistoryStore.add`). So with any number of workers and API processes
there is one series, and an API process only reads it. A consumer's totals are the sums
over ``consumer_stats``, which keeps the rows of stopped workers: they only grow (a
worker that restarts adds a new row from zero), so a rate is a difference of two samples.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from workerrmq.store.db import Database
from workerrmq.store.models import ConsumerDef, ConsumerStats, StatsSample, as_utc

__all__ = ["HISTORY_COUNTERS", "QUEUE_FIGURES", "RETENTION", "HistoryStore", "Sample"]

#: How long samples are kept: the dashboard's window.
RETENTION = dt.timedelta(minutes=15)
#: A consumer's totals in a sample, in this order (sums of ``consumer_stats``).
HISTORY_COUNTERS = ("delivered", "failed", "retried", "dead_lettered", "filtered")
#: A queue's figures in a sample, in this order (the management API's: a count, two rates per second).
QUEUE_FIGURES = ("messages_ready", "publish_rate", "deliver_rate")


class Sample:
    """One stored moment: :data:`HISTORY_COUNTERS` per consumer id, :data:`QUEUE_FIGURES` per queue."""

    __slots__ = ("at", "step", "consumers", "queues")

    def __init__(
        self,
        at: dt.datetime,
        step: float,
        consumers: Mapping[str, Sequence[int]],
        queues: Mapping[str, Sequence[float]],
    ) -> None:
        self.at, self.step, self.consumers, self.queues = at, step, consumers, queues


class HistoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def latest(self) -> dt.datetime | None:
        """The newest moment sampled, by any worker."""
        with self.db.session() as session:
            newest = session.scalar(select(func.max(StatsSample.at)))
        return as_utc(newest) if newest is not None else None

    def totals(self) -> dict[str, list[int]]:
        """Every consumer's :data:`HISTORY_COUNTERS`, summed over the workers that ran it."""
        sums = [func.coalesce(func.sum(getattr(ConsumerStats, name)), 0) for name in HISTORY_COUNTERS]
        with self.db.session() as session:
            rows = session.execute(
                select(ConsumerStats.consumer_id, *sums).group_by(ConsumerStats.consumer_id)
            )
            return {row[0]: [int(v) for v in row[1:]] for row in rows}

    def add(self, sample: Sample, *, worker: str) -> bool:
        """Store *sample* and drop those older than :data:`RETENTION` before it; False if
        another worker stored that moment first (nothing is written then)."""
        cutoff = sample.at - RETENTION
        try:
            with self.db.session() as session:
                session.add(
                    StatsSample(
                        at=sample.at,
                        step=sample.step,
                        worker=worker,
                        consumers=orjson.dumps(dict(sample.consumers)).decode(),
                        queues=orjson.dumps(dict(sample.queues)).decode(),
                    )
                )
                session.flush()
                session.execute(delete(StatsSample).where(StatsSample.at < cutoff))
        except IntegrityError:
            return False
        return True

    def since(self, moment: dt.datetime) -> list[Sample]:
        """The samples taken at or after *moment*, oldest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(StatsSample).where(StatsSample.at >= moment).order_by(StatsSample.at)
            )
            return [
                Sample(as_utc(r.at), r.step, orjson.loads(r.consumers), orjson.loads(r.queues)) for r in rows
            ]

    def consumer_names(self) -> dict[str, str]:
        """Every defined consumer's name by id (deleted ones are not charted)."""
        with self.db.session() as session:
            return {cid: name for cid, name in session.execute(select(ConsumerDef.id, ConsumerDef.name))}

    def consumer_queues(self) -> set[str]:
        """The queues the defined consumers read and dead-letter to: the ones a sample keeps first."""
        with self.db.session() as session:
            rows = session.execute(select(ConsumerDef.queue, ConsumerDef.dead_letter_queue))
            return {name for row in rows for name in row if name}
