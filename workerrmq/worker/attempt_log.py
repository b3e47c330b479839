"""The worker's side of the attempt log: each attempt noted in memory, written in batches.

:meth:`AttemptLog.note` is all a delivery pays: a tuple of what it was given and the time,
appended to a list (cut to the columns' sizes and converted when written). The engine runs
:meth:`AttemptLog.run`, which writes what was noted every ``interval`` seconds, or sooner
once ``batch`` rows wait, on a thread (the database never holds the event loop),
and prunes the log now and then. The buffer is bounded: while the database is down,
attempts beyond ``limit`` are dropped and counted, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from workerrmq import metrics
from workerrmq.errors import WorkerRMQError
from workerrmq.store.attempts import RESPONSE_MAX, AttemptStore

__all__ = ["AttemptLog"]

log = logging.getLogger(__name__)


def _record(row: tuple[Any, ...], worker: str) -> tuple[Any, ...]:
    """A row of :meth:`AttemptLog.note` as the store takes it (the columns of
    :data:`~workerrmq.store.attempts.INSERTED`, in order), cut to the columns' sizes."""
    consumer_id, consumer, message_id, attempt, at, seconds, status, error, outcome, response = row
    return (
        consumer_id,
        consumer,
        message_id[:255].replace("\x00", ""),
        attempt,
        dt.datetime.fromtimestamp(at, dt.UTC),
        round(seconds * 1000, 3),
        status,
        error[:64] if error else None,
        outcome,
        response[:RESPONSE_MAX].replace("\x00", "") if response else None,
        worker,
    )


class AttemptLog:
    """Attempts noted by the runners of one worker, waiting to be written."""

    def __init__(
        self,
        store: AttemptStore,
        *,
        worker: str,
        sample_success: float = 1.0,
        max_age: dt.timedelta = dt.timedelta(days=7),
        max_per_consumer: int = 100_000,
        interval: float = 1.0,
        batch: int = 2000,
        limit: int = 50_000,
        prune_every: float = 300.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.worker = worker
        self.sample_success = sample_success
        self.max_age = max_age
        self.max_per_consumer = max_per_consumer
        self.interval = interval
        self.batch = batch
        self.limit = limit
        self.prune_every = prune_every
        self._rng = rng
        self._rows: list[tuple[Any, ...]] = []
        self._full = asyncio.Event()
        self.dropped = 0  # attempts lost to a full buffer since start
        self.written = 0
        self._pruned_at = time.monotonic() - prune_every * rng()  # workers do not prune in step

    def note(
        self,
        *,
        consumer_id: str,
        consumer: str,
        message_id: str,
        attempt: int,
        seconds: float,
        status: int | None,
        error: str | None,
        outcome: str,
        response: str,
    ) -> None:
        """Keep one attempt for the next write; never waits. A successful one is kept
        with the chance ``sample_success``; a full buffer drops it and counts it. The row
        is kept as given, with the time: cutting and converting it is the writer's work,
        on its thread."""
        if outcome == "delivered" and self.sample_success < 1.0 and self._rng() >= self.sample_success:
            return
        rows = self._rows
        if len(rows) >= self.limit:
            self.dropped += 1
            metrics.ATTEMPT_LOG_DROPPED.inc()
            return
        rows.append(
            (
                consumer_id,
                consumer,
                message_id,
                attempt,
                time.time(),
                seconds,
                status,
                error,
                outcome,
                response,
            )
        )
        if len(rows) >= self.batch:
            self._full.set()

    @property
    def waiting(self) -> int:
        """Attempts noted and not yet written."""
        return len(self._rows)

    async def run(self) -> None:
        """Write and prune until cancelled; a cancel writes what is left first (briefly)."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.interval)
                await self.flush()
                if time.monotonic() - self._pruned_at >= self.prune_every:
                    await self.prune()
        finally:
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Write every attempt noted so far; on a database error keep them (up to the bound)
        for the next try."""
        self._full.clear()
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            await asyncio.to_thread(self._write, rows)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a row the database refuses must not stop the log
            if not isinstance(exc, WorkerRMQError):
                self.dropped += len(rows)
                metrics.ATTEMPT_LOG_DROPPED.inc(len(rows))
                log.exception("attempt log: %d attempts refused by the database; dropped", len(rows))
                return
            room = max(0, self.limit - len(self._rows))
            kept = rows[-room:] if room else []
            lost = len(rows) - len(kept)
            self._rows[:0] = kept
            if lost:
                self.dropped += lost
                metrics.ATTEMPT_LOG_DROPPED.inc(lost)
            log.warning(
                "attempt log: cannot write %d attempts (%s); %d kept", len(rows), exc.message, len(kept)
            )
            return
        self.written += len(rows)

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        """Write *rows* as :meth:`note` kept them (on the writer's thread)."""
        worker = self.worker
        self.store.add_tuples([_record(row, worker) for row in rows])

    async def prune(self) -> None:
        """Apply the retention (age, rows per consumer); errors are logged, not raised."""
        self._pruned_at = time.monotonic()
        try:
            pruned = await asyncio.to_thread(
                self.store.prune, max_age=self.max_age, max_per_consumer=self.max_per_consumer
            )
        except WorkerRMQError as exc:
            log.warning("attempt log: cannot prune (%s)", exc.message)
            return
        if pruned:
            log.info("attempt log: pruned %d attempts", pruned)
