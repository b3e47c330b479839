"""What the API says while consumers are set to run and no worker is alive.

Consumers are run by worker processes (``workerrmq worker``, or ``workerrmq run``
for the API and a worker together). Without one, publishing still works and
messages wait in their queues, but nothing is delivered. The API says so in
four places:

- ``/readyz`` lists it under ``warnings`` and still answers 200: every API
  process sees the same workers, so a 503 would take them all out of a load
  balancer and turn late deliveries into refused publishes;
- the answers that create a consumer carry it as ``warning``
  (:func:`with_warning`);
- the log, once a minute from one thread per process (:data:`PERIODIC_LOG`);
- the dashboard shows ``/readyz``'s warnings in a banner.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

from flask import Flask
from marshmallow import fields

from workerrmq.api import consumer_schemas, schemas
from workerrmq.api.services import services
from workerrmq.errors import WorkerRMQError
from workerrmq.store.workers import WorkerRegistry

__all__ = [
    "warning",
    "with_warning",
    "ConsumerCreated",
    "SeedConsumerCreated",
    "PeriodicLog",
    "PERIODIC_LOG",
    "init_app",
]

log = logging.getLogger("workerrmq.api")

WARNING_FIELD = fields.String(
    metadata={"description": "set while no worker is alive: the consumer delivers nothing until one starts"}
)


def warning(registry: WorkerRegistry) -> str | None:
    """The warning to give, or None while a worker is alive or no consumer is running.

    Raises :class:`~workerrmq.errors.DatabaseUnavailable` if the database is down.
    """
    count = registry.running_without_worker()
    if not count:
        return None
    consumers = "1 running consumer delivers" if count == 1 else f"{count} running consumers deliver"
    return (
        f"no worker is alive: {consumers} nothing until one starts "
        "('workerrmq worker', or 'workerrmq run' for the API and a worker together)"
    )


def with_warning(answer: dict[str, Any]) -> dict[str, Any]:
    """*answer* with a ``warning`` field while no worker is alive (for the views that
    create consumers; their response schema needs the field: :class:`ConsumerCreated`)."""
    try:
        text = warning(services().workers)
    except WorkerRMQError:
        return answer  # the consumer was saved; the answer does not depend on this check
    return {**answer, "warning": text} if text else answer


class ConsumerCreated(consumer_schemas.Consumer):
    """A new consumer, with a warning while no worker is alive to run it."""

    warning = WARNING_FIELD


class SeedConsumerCreated(schemas.SeedMessage):
    """The seed's answer to ``POST /createConsumer``, with the same warning."""

    warning = WARNING_FIELD


class PeriodicLog:
    """Logs the warning every *interval* seconds while it holds, for every database an
    app of this process uses: one thread per process, however many requests come.

    :meth:`watch` is cheap once a registry is watched; call it from each request so
    that a process forked after the app was built (Gunicorn's ``preload_app``)
    starts its own thread.
    """

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._registries: weakref.WeakValueDictionary[str, WorkerRegistry] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()  # each thread has its own
        self.thread: threading.Thread | None = None

    @property
    def watched(self) -> list[WorkerRegistry]:
        """The registries checked now: one per database of this process's apps."""
        return list(self._registries.values())

    def watch(self, registry: WorkerRegistry) -> None:
        """Check *registry*'s database from now on (until the registry is garbage)."""
        key = str(registry.db.url)
        if self._pid == os.getpid() and self._registries.get(key) is registry:
            return
        with self._lock:
            self._registries[key] = registry
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._stop = threading.Event()
                self.thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="workerrmq-no-worker-log", daemon=True
                )
                self.thread.start()

    def stop(self) -> None:
        """End the thread (tests; a process's own log lives as long as the process)."""
        self._stop.set()
        self._pid = None

    def check(self) -> None:
        """Log the warning once for each watched database where it holds."""
        for registry in list(self._registries.values()):
            try:
                text = warning(registry)
            except WorkerRMQError:
                continue  # the database is down: /readyz and the routes say so
            if text:
                log.warning(text)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("checking for alive workers failed")


def init_app(app: Flask) -> None:
    """Have the process's :data:`PERIODIC_LOG` watch *app*'s workers, from its first
    request on (so that it runs in the process that serves, not in one that forks)."""
    registry: WorkerRegistry = app.extensions["workerrmq"].workers
    app.before_request(lambda: PERIODIC_LOG.watch(registry))


#: The process's one periodic log (see :func:`init_app`).
PERIODIC_LOG = PeriodicLog()
