"""The worker process: runs every enabled consumer and keeps them running.

Each consumer has a channel of its own, on one of the worker's connections
(:mod:`~workerrmq.worker.connections` opens as many as the channels need). When
a connection drops, the consumers on it are rebuilt on another; when the broker
is gone, every consumer is rebuilt once it is back. Unacked messages of a lost
connection go back to their queues on the broker's side, so none is lost.
Consumer definitions come from the database, re-read on a control message
and every ``reconcile_interval`` seconds; while the database is down the
worker keeps running what it has. A consumer that is stopped or changed drains
its deliveries in flight in the background: no change waits on another consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import operator
import os
import signal
import socket
import time
import uuid
from typing import Any

import aio_pika
import aiohttp
import aiormq
import orjson
from aiohttp import web
from aiormq.abc import DeliveredMessage

from workerrmq import __version__, metrics
from workerrmq.broker.control import CONTROL_EXCHANGE
from workerrmq.broker.management import ManagementClient
from workerrmq.core.consumer import ConsumerSpec
from workerrmq.core.credentials import redact_url
from workerrmq.core.status import ConsumerState, RunnerStatus
from workerrmq.errors import ConfigError, WorkerRMQError
from workerrmq.guard import GuardedResolver
from workerrmq.loop import new_event_loop
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.attempts import AttemptStore
from workerrmq.store.consumers import STATS_FRESH_FOR, ConsumerStore, StatsReport
from workerrmq.store.crypto import Cipher
from workerrmq.store.history import HistoryStore
from workerrmq.store.workers import WorkerIdentity, WorkerRegistry
from workerrmq.worker.alerts import HealthWatch, Notifier
from workerrmq.worker.attempt_log import AttemptLog
from workerrmq.worker.connections import ConnectionPool, Link, NoCapacity
from workerrmq.worker.consumer import ConsumerRunner
from workerrmq.worker.delivery import DeliveryRequest, definition_problem
from workerrmq.worker.history import HistorySampler
from workerrmq.worker.placement import chosen_workers, share_of
from workerrmq.worker.transport import Transport

__all__ = ["Engine"]

log = logging.getLogger(__name__)
_STARTS_IN_FLIGHT = 200  # consumers being started at once (each a few round trips to the broker)
_FULL_READ_EVERY = 60.0  # seconds: definitions are read in full at least this often
_BROKER_ERRORS = (OSError, TimeoutError, aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException)
# What a running consumer takes without a restart; any other change restarts it.
_RETUNABLE = frozenset({"concurrency", "instances", "state", "version", "created_at", "updated_at"})


def _needs_restart(running: ConsumerSpec, wanted: ConsumerSpec) -> bool:
    """True if *wanted* differs from *running* in more than :data:`_RETUNABLE` fields."""
    return any(
        getattr(running, f.name) != getattr(wanted, f.name)
        for f in dataclasses.fields(ConsumerSpec)
        if f.name not in _RETUNABLE
    )


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        reconcile_interval: float = 5.0,
        report_interval: float = 2.0,
        reconnect_delay: float = 1.0,
        health_interval: float = 2.0,
        history_step: float = 10.0,
        reqwest: bool | None = None,
    ) -> None:
        self.settings = settings
        # Deliveries through pyreqwest (else all through aiohttp); by default as HTTP_CLIENT says.
        self.reqwest = settings.http_client == "reqwest" if reqwest is None else reqwest
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.identity = WorkerIdentity(self.worker_id, socket.gethostname(), os.getpid(), __version__)
        self.db = Database(settings.database_url)
        self.store = ConsumerStore(self.db, Cipher.from_settings(settings))
        self.registry = WorkerRegistry(self.db)
        self.attempt_log = (
            AttemptLog(
                AttemptStore(self.db),
                worker=self.worker_id,
                sample_success=settings.attempt_log_sample_success,
                max_age=dt.timedelta(seconds=settings.attempt_log_max_age),
                max_per_consumer=settings.attempt_log_max_per_consumer,
            )
            if settings.attempt_log
            else None
        )
        self.reconcile_interval = reconcile_interval
        self.report_interval = report_interval
        self.reconnect_delay = reconnect_delay
        self.runners: dict[str, ConsumerRunner] = {}
        # Runners taken out of service, finishing their deliveries in flight.
        self._draining: dict[asyncio.Future[None], ConsumerRunner] = {}
        self._pool: ConnectionPool | None = None
        # Running totals per consumer; they outlive runner restarts.
        self.stats: dict[str, StatsReport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._poke: asyncio.Event | None = None
        self._http: Transport | None = None
        self._writing: asyncio.Future[None] | None = None  # the statistics write under way
        # What was last written of each consumer's figures, and in which round: a report
        # writes only the figures that changed, and each consumer's row at least every
        # _REFRESH_ROUNDS rounds so that it stays fresh (STATS_FRESH_FOR).
        self._written: dict[str, tuple[Any, ...]] = {}
        self._rounds = 0
        # The definitions last read, with the store's revision then and when.
        self._specs: list[ConsumerSpec] = []
        self._revision: tuple[Any, ...] | None = None
        self._read_at = 0.0
        # The last placement: of which definitions, among which workers, and its result.
        self._placed: tuple[list[ConsumerSpec], tuple[str, ...], dict[str, ConsumerSpec]] | None = None
        self.connected = asyncio.Event()
        self.health_port: int | None = None
        # The dashboard's 15 minutes of statistics, one sample every *history_step* seconds.
        management = ManagementClient(
            settings.rabbitmq_management_url,
            settings.vhost,
            timeout=settings.broker_timeout,
            ca_file=settings.rabbitmq_management_ca_file,
        )
        self.history = HistorySampler(
            HistoryStore(self.db), worker_id=self.worker_id, management=management, step=history_step
        )
        notifier = Notifier(settings.notify_url, settings.notify_secret) if settings.notify_url else None
        self.health_watch = HealthWatch(
            worker_id=self.worker_id,
            db=self.db,
            registry=self.registry,
            pool=lambda: self._pool,
            notifier=notifier,
            interval=health_interval,
        )

    # -- control from outside --------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool | None:
        """The worker's AMQP connections; None until it first connects."""
        return self._pool

    def request_stop(self) -> None:
        """Begin a graceful stop; safe from any thread or a signal handler."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def run(self, *, handle_signals: bool = False) -> None:
        """Run until :meth:`request_stop` (or SIGTERM/SIGINT with *handle_signals*)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._poke = asyncio.Event()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stopping.set)
        if not await self._prepare_database():
            return
        guard = self.settings.block_private_targets
        connector = aiohttp.TCPConnector(
            limit=0, ttl_dns_cache=60, resolver=GuardedResolver() if guard else None
        )
        site = await self._serve_health()
        # No cookie jar: a cookie one endpoint sets must not ride along on later deliveries.
        async with aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=DeliveryRequest,
        ) as session:
            # Made here, on this process's loop: pyreqwest starts its thread with the first client.
            self._http = Transport(session, guard=guard, reqwest=self.reqwest)
            reporter = asyncio.create_task(self._report_forever())
            # The attempt log's writer: deliveries only append to its buffer.
            writer = asyncio.create_task(self.attempt_log.run()) if self.attempt_log else None
            watch = asyncio.create_task(self.health_watch.run())
            sampler = asyncio.create_task(self.history.run())
            try:
                await self._connect_forever()
            finally:
                await self._http.aclose()  # the consumers are stopped: no delivery is left
                reporter.cancel()
                watch.cancel()
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                if writer is not None:
                    writer.cancel()  # it writes what is left first
                    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                        await asyncio.wait_for(writer, 15)
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                await self._report()
                if site is not None:
                    await site.cleanup()
        with contextlib.suppress(WorkerRMQError):
            await asyncio.to_thread(self.registry.stopped, self.worker_id)
        log.info("worker %s stopped", self.worker_id)

    async def _prepare_database(self) -> bool:
        """Migrate, check SECRET_KEY and register, waiting for the database; False if
        stopped meanwhile. Raises :class:`ConfigError` for a wrong SECRET_KEY."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.db.migrate)
                await asyncio.to_thread(self.store.prepare)
                await asyncio.to_thread(self.registry.register, self.identity)
                return True
            except ConfigError:
                raise
            except WorkerRMQError as exc:
                log.warning("%s; retrying in 5s", exc.message)
                await self._wait(5)
        return False

    # -- connection supervision ----------------------------------------------------------------

    async def _connect_forever(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            pool = ConnectionPool(
                self.settings.rabbitmq_urls,
                timeout=self.settings.broker_timeout,
                name=f"workerrmq-worker {self.worker_id}",
                max_connections=self.settings.worker_max_connections,
                on_lost=self._on_link_lost,
            )
            try:
                await pool.any_link()
            except Exception as exc:  # noqa: BLE001 - a broker still booting fails in odd ways
                log.warning(
                    "broker unreachable (%s); retrying in %.0fs", type(exc).__name__, self.reconnect_delay
                )
                await self._wait(self.reconnect_delay)
                continue
            self._pool = pool
            try:
                await self._serve()
            except _BROKER_ERRORS as exc:
                log.warning("broker connection lost (%s); reconnecting", type(exc).__name__)
            except Exception:
                log.exception("unexpected error; reconnecting")
            finally:
                self.connected.clear()
                await self._stop_all(graceful=self._stopping.is_set())
                await pool.close()
            if not self._stopping.is_set():
                await self._wait(self.reconnect_delay)

    async def _serve(self) -> None:
        """Reconcile until stopped; raises when the broker is gone (no connection can be had)."""
        assert self._stopping is not None and self._poke is not None
        control = await self._listen_for_changes()
        self.connected.set()
        log.info("worker %s connected", self.worker_id)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                await self._reconcile()
                poke = asyncio.ensure_future(self._poke.wait())
                await asyncio.wait(
                    {control, stopping, poke},
                    timeout=self.reconcile_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                poke.cancel()
                self._poke.clear()
                if stopping.done():
                    return
                if control.done():
                    # Only the consumers of the lost connection are rebuilt; if no new
                    # connection can be had, the broker is gone and this raises.
                    self.connected.clear()
                    control = await self._listen_for_changes()
                    self.connected.set()
        finally:
            stopping.cancel()

    async def _listen_for_changes(self) -> asyncio.Future[Any]:
        """Take control messages on a channel of the pool; returns its closing future."""
        assert self._pool is not None
        self._pool.prune()
        try:
            _, channel = await self._pool.open_channel()
        except NoCapacity as exc:
            raise aiormq.exceptions.ConnectionClosed(320, exc.message) from None
        await channel.exchange_declare(CONTROL_EXCHANGE, exchange_type="fanout", durable=True)
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        assert declared.queue is not None
        await channel.queue_bind(declared.queue, CONTROL_EXCHANGE)
        await channel.basic_consume(declared.queue, self._on_control, no_ack=True)
        # Tell the other workers, so they hand over their share of the work now.
        joined = orjson.dumps({"worker_id": self.worker_id, "action": "joined"})
        await channel.basic_publish(joined, exchange=CONTROL_EXCHANGE, routing_key="")
        return channel.closing

    async def _on_control(self, _message: DeliveredMessage) -> None:
        if self._poke is not None:
            self._poke.set()

    def _on_link_lost(self, link: Link) -> None:
        log.warning("worker %s: connection %d lost; its consumers move", self.worker_id, link.index)
        if self._poke is not None:
            self._poke.set()

    async def _wait(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- consumers --------------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Make the running consumers match the definitions. Nothing here waits for a
        consumer's deliveries: outdated runners drain in the background."""
        try:
            specs, alive = await asyncio.to_thread(self._read_definitions)
        except WorkerRMQError as exc:
            log.warning(
                "cannot read consumer definitions (%s); keeping %d running", exc.message, len(self.runners)
            )
            return
        wanted = self._placed_here(specs, alive)
        retune = []
        for cid, runner in list(self.runners.items()):
            spec = wanted.get(cid)
            if spec is runner.spec and runner.healthy:
                continue  # the same placed definition as last round: nothing changed
            if spec is None or not runner.healthy or _needs_restart(runner.spec, spec):
                del self.runners[cid]
                self._drain(runner)
            elif spec != runner.spec:
                retune.append(runner.adopt(spec))
        await asyncio.gather(*retune)
        draining = {r.spec.id for r in self._draining.values() if r.spec.ordered}
        # An ordered consumer's new runner waits for its old one: one delivery at a time.
        new = [spec for cid, spec in wanted.items() if cid not in self.runners and cid not in draining]
        refused: list[str] = []
        # Each start is a few round trips to the broker: overlap many, and begin the next
        # as soon as one is done (a batch would wait for its slowest start).
        window = asyncio.Semaphore(_STARTS_IN_FLIGHT)

        async def start(spec: ConsumerSpec) -> None:
            async with window:
                await self._start(spec, refused)

        await asyncio.gather(*(start(spec) for spec in new))
        if refused:
            log.warning("%d consumers cannot run here: %s", len(refused), refused[0])

    def _drain(self, runner: ConsumerRunner) -> None:
        """Stop *runner* in the background, letting its deliveries in flight finish."""
        # A runner whose channel died cannot ack any more: no point waiting for it.
        task = asyncio.ensure_future(runner.stop(grace=None if runner.healthy else 0))
        self._draining[task] = runner
        task.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Future[None]) -> None:
        runner = self._draining.pop(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("consumer %s: stop failed: %r", runner.spec.name, task.exception())
        if runner.spec.ordered and self._poke is not None:
            self._poke.set()  # its successor may start now

    async def _start(self, spec: ConsumerSpec, refused: list[str]) -> None:
        assert self._http is not None and self._poke is not None and self._pool is not None
        stats = self.stats.setdefault(spec.id, StatsReport(consumer_id=spec.id))
        runner = ConsumerRunner(
            spec,
            http=self._http,
            stats=stats,
            on_trouble=self._poke.set,
            guard=self.settings.block_private_targets,
            attempt_log=self.attempt_log,
        )
        self.runners[spec.id] = runner
        if (problem := definition_problem(spec)) is not None:
            runner.invalid(problem)
            log.warning("consumer %s: not started, its definition is invalid: %s", spec.name, problem)
            return
        try:
            link, channel = await self._pool.open_channel()
            started = await runner.start(channel, link.republisher)
        except NoCapacity as exc:
            runner.refuse(exc.message)
            refused.append(exc.message)
            return
        except _BROKER_ERRORS as exc:
            await runner.stop(grace=0)
            runner.start_failed(f"{type(exc).__name__}: {exc}")
            log.warning("consumer %s: cannot start (%s); retrying", spec.name, exc)
            return
        if started:
            log.info("consumer %s: consuming %s -> %s", spec.name, spec.queue, redact_url(spec.target_url))
        else:
            log.warning("consumer %s: queue %r does not exist; retrying", spec.name, spec.queue)

    def _read_definitions(self) -> tuple[list[ConsumerSpec], list[str]]:
        """Every definition and the alive workers. The definitions are read (and their
        credentials decrypted) only when the store's revision moved, or every
        :data:`_FULL_READ_EVERY` seconds: with thousands of consumers that read is most of an
        idle worker's CPU."""
        alive = self.registry.alive()
        revision = self.store.revision()
        now = time.monotonic()
        if revision != self._revision or now - self._read_at >= _FULL_READ_EVERY:
            self._specs, self._revision, self._read_at = self.store.list(), revision, now
        return self._specs, alive

    def _placed_here(self, specs: list[ConsumerSpec], alive: list[str]) -> dict[str, ConsumerSpec]:
        """The running consumers this worker should run, each with its share of concurrency;
        the same objects as last time while neither *specs* nor *alive* changed."""
        among = tuple(sorted(alive))
        if self._placed is not None and self._placed[0] is specs and self._placed[1] == among:
            return self._placed[2]
        if self.worker_id not in alive:
            alive = [*alive, self.worker_id]
        placed = {}
        for spec in specs:
            if spec.state != ConsumerState.RUNNING:
                continue
            # Order holds only with a single consumer on the queue.
            instances = 1 if spec.ordered else spec.instances
            chosen = chosen_workers(spec.id, instances, alive)
            if self.worker_id in chosen:
                share = share_of(spec.concurrency, len(chosen))
                placed[spec.id] = dataclasses.replace(spec, concurrency=share)
        self._placed = (specs, among, placed)
        return placed

    async def _stop_all(self, *, graceful: bool) -> None:
        """Stop every runner, the draining ones included. *graceful*: let deliveries in
        flight finish where their channel still can ack them."""
        runners, self.runners = list(self.runners.values()), {}
        stops = [r.stop(grace=None if graceful and r.healthy else 0) for r in runners]
        # Draining runners whose channel died need not finish their deliveries either.
        stops += [r.stop(grace=0) for r in self._draining.values() if not (graceful and r.healthy)]
        await asyncio.gather(*stops, *self._draining, return_exceptions=True)

    # -- health and metrics ------------------------------------------------------------------------

    async def _serve_health(self) -> web.AppRunner | None:
        """``/healthz``, ``/readyz`` and ``/metrics`` on ``WORKER_BIND``."""
        if not self.settings.worker_bind:
            return None
        app = web.Application()
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", _metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, _, port = self.settings.worker_bind.rpartition(":")
        site = web.TCPSite(runner, host, int(port))
        await site.start()
        self.health_port = runner.addresses[0][1]
        log.info("worker %s serves health and metrics on %s:%s", self.worker_id, host, self.health_port)
        return runner

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = {"broker": "ok" if self.connected.is_set() else "not connected"}
        try:
            await asyncio.to_thread(self.db.ping)
            checks["database"] = "ok"
        except WorkerRMQError as exc:
            checks["database"] = exc.message
        ready = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
        )

    # -- statistics ----------------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            await self._report()

    def _write_report(self, reports: list[StatsReport]) -> None:
        self.registry.heartbeat(self.worker_id, self.identity)
        self.store.report(self.worker_id, reports)

    async def _report(self) -> None:
        metrics.CONSUMERS_RUNNING.set(sum(r.status == RunnerStatus.CONSUMING for r in self.runners.values()))
        draining = {r.spec.id: r for r in self._draining.values()}
        for cid, stats in self.stats.items():
            runner = self.runners.get(cid) or draining.get(cid)
            if runner is not None:
                runner.report()
            else:
                stats.in_flight, stats.status = 0, RunnerStatus.STOPPED
        # Only the figures that changed since they were last written, and each consumer's
        # unchanged ones in turn, so that its row stays fresh: with thousands of idle
        # consumers, rewriting every row each round was most of the worker's idle CPU.
        self._rounds += 1
        every = max(1, int(STATS_FRESH_FOR.total_seconds() / 3 / self.report_interval))
        turn = self._rounds % every
        reports, written = [], {}
        for i, (cid, stats) in enumerate(self.stats.items()):
            figures = _figures(stats)
            if i % every == turn or self._written.get(cid) != figures:
                reports.append(stats)
                written[cid] = figures
        # One write at a time: cancelling a report does not stop its thread, and two
        # writes of a new consumer's first figures would both insert its row.
        if self._writing is not None:
            await asyncio.wait([self._writing])
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._write_report, reports))
        self._writing.add_done_callback(_retrieve)
        try:
            await asyncio.shield(self._writing)
        except WorkerRMQError as exc:
            log.debug("could not report statistics: %s", exc.message)
        else:
            self._written.update(written)


#: A report's figures, to see whether they changed since they were last written.
_figures = operator.attrgetter(*(f.name for f in dataclasses.fields(StatsReport)))


def _retrieve(write: asyncio.Future[None]) -> None:
    """Mark a write's error as seen when the report that awaited it was cancelled."""
    if not write.cancelled():
        write.exception()


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _metrics(_request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})


def run_worker(settings: Settings) -> None:
    """Run one worker in this process until SIGTERM or SIGINT."""
    engine = Engine(settings)
    log.info("worker %s (WorkerRMQ %s) starting", engine.worker_id, __version__)
    loop = new_event_loop()
    try:
        loop.run_until_complete(engine.run(handle_signals=True))
    except ConfigError as exc:
        log.critical("worker %s cannot start: %s", engine.worker_id, exc.message)
        raise SystemExit(2) from None
    finally:
        loop.close()
