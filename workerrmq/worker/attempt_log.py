"""The worker's side of the attempt log: each attempt noted in memory, written in batches.

:meth:`AttemptLog.note` is all a delivery pays: a tuple of what it was given and the time,
appended to a list (cut to the columns' sizes and converted when written). The engine runs
:meth:`AttemptLog.run`, which writes what was noted every ``interval`` seconds, or sooner
once ``batch`` rows wait, and prunes the log now and then. The buffer is bounded: while
the database is down, attempts beyond ``limit`` are dropped and counted, never waited for.

Where the batches are written depends on the database. A server (PostgreSQL) is written
from a thread, which waits on the network. A SQLite file is written on the event loop
itself, in one transaction that never waits for a lock, a few rows at a time: measured in
the relay benchmark, a thread that takes the GIL for every row it binds cost the
deliveries 10 to 20 % of their throughput (the event loop waits for the GIL at every
turn), where the same writes on the loop cost about 1 %. Each row is converted for the
driver (its time as SQLite's text, most of a row's cost) and inserted in the same turn,
and a turn ends once it took :data:`TURN` seconds: a deliveries' loop is held up for at
about that by the log (measured: 1 ms of CPU at most), where converting a second's 1,000
rows in one turn held it for 8 to 9 ms of CPU, in the tail of the relay's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from workerrmq import metrics
from workerrmq.errors import DatabaseUnavailable, WorkerRMQError
from workerrmq.store.attempts import RESPONSE_MAX, AttemptStore

__all__ = ["AttemptLog"]

log = logging.getLogger(__name__)

#: Rows a SQLite log converts and inserts at a time (about 15 µs each) ...
SLICE = 16
#: ... and seconds of them in one turn of the event loop, after which the deliveries go on.
TURN = 0.0005
#: Seconds before a write that found the SQLite file locked by another writer is tried again.
LOCKED_PAUSE = 0.05
#: Seconds a stopping log keeps trying to write what is left while SQLite is locked.
FINAL_WAIT = 2.0


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
        self._locked = False  # the last write found SQLite locked by another writer
        path = store.sqlite_file()
        self._on_loop = _LoopWriter(store, path) if path is not None else None

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
            try:
                # What is left, tried again for a moment while another writer holds SQLite's lock.
                deadline = time.monotonic() + FINAL_WAIT
                await asyncio.shield(self.flush())
                while self._locked and self._rows and time.monotonic() < deadline:
                    await asyncio.shield(self.flush())
            finally:
                if self._on_loop is not None:
                    self._on_loop.close()

    async def flush(self) -> None:
        """Write every attempt noted so far; on a database error keep them (up to the bound)
        for the next try."""
        self._full.clear()
        self._locked = False
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            if self._on_loop is not None:
                await self._on_loop.write(rows, self.worker)
            else:
                await asyncio.to_thread(self._write, rows)
        except asyncio.CancelledError:
            if self._on_loop is not None:
                self._rows[:0] = rows  # rolled back: the final flush writes them
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
            if isinstance(exc, _Locked):
                self._locked = True
                await asyncio.sleep(LOCKED_PAUSE)  # another writer is at it: a moment, then again
                return
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


class _Locked(DatabaseUnavailable):
    """Another connection holds the SQLite file's write lock."""


class _LoopWriter:
    """Writes batches of attempts into a SQLite file from the event loop, :data:`TURN`
    seconds of rows a turn, in one transaction.

    Its own connection never waits: a write lock held by another writer fails the batch
    at once (:class:`_Locked`; the rows are kept and tried again a moment later), and it
    commits without an fsync (``synchronous=NORMAL``: in WAL mode the log survives a
    crash of the worker, not of the machine) and leaves checkpoints to the other
    connections, which commit from threads. Other writers wait for its transaction, a few
    milliseconds, as they would for any."""

    def __init__(self, store: AttemptStore, path: str) -> None:
        self.store = store
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA wal_autocheckpoint=0")
            self._connection = connection
        return self._connection

    async def write(self, rows: list[tuple[Any, ...]], worker: str) -> None:
        """Insert *rows* (as :meth:`AttemptLog.note` keeps them) as written by *worker*;
        all or none."""
        dialect = self.store.db.engine.dialect
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise (_Locked if "locked" in str(exc) else DatabaseUnavailable)(f"attempt log: {exc}") from None
        try:
            turn = time.perf_counter()
            for start in range(0, len(rows), SLICE):
                sql, params = self.store.for_driver(
                    dialect, [_record(row, worker) for row in rows[start : start + SLICE]]
                )
                connection.executemany(sql, params)
                if time.perf_counter() - turn >= TURN:
                    await asyncio.sleep(0)  # deliveries go on
                    turn = time.perf_counter()
            connection.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise DatabaseUnavailable(f"attempt log: {exc}") from None
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
