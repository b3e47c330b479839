"""The worker process: runs every enabled consumer and keeps them running.

It owns one AMQP connection. When that connection drops (broker restart,
network cut) every consumer is rebuilt on a new connection; unacked messages
of the old one go back to their queues on the broker's side, so none is lost.
Consumer definitions come from the database, re-read on a control message
and every ``reconcile_interval`` seconds; while the database is down the
worker keeps running what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import uuid

import aio_pika
import aiohttp
import aiormq
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aiohttp import web

from workerrmq import __version__, metrics
from workerrmq.broker.connect import connect_first
from workerrmq.broker.publisher import is_alive, new_event_loop
from workerrmq.control import CONTROL_EXCHANGE
from workerrmq.credentials import redact_url
from workerrmq.errors import ConfigError, WorkerRMQError
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.consumers import ConsumerSpec, ConsumerStore, StatsReport
from workerrmq.store.crypto import Cipher
from workerrmq.store.workers import WorkerIdentity, WorkerRegistry
from workerrmq.worker.consumer import ConsumerRunner
from workerrmq.worker.delivery import SKIP_AUTO_HEADERS, definition_problem
from workerrmq.worker.guard import GuardedResolver
from workerrmq.worker.placement import chosen_workers, share_of
from workerrmq.worker.retry import FailureRouter

__all__ = ["Engine"]

log = logging.getLogger(__name__)
_START_BATCH = 50  # consumers started at once
_BROKER_ERRORS = (OSError, TimeoutError, aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException)


class Engine:
    def __init__(
        self, settings: Settings, *, reconcile_interval: float = 5.0, report_interval: float = 2.0,
        reconnect_delay: float = 1.0,
    ) -> None:
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.identity = WorkerIdentity(self.worker_id, socket.gethostname(), os.getpid(), __version__)
        self.db = Database(settings.database_url)
        self.store = ConsumerStore(self.db, Cipher.from_settings(settings))
        self.registry = WorkerRegistry(self.db)
        self.reconcile_interval = reconcile_interval
        self.report_interval = report_interval
        self.reconnect_delay = reconnect_delay
        self.runners: dict[str, ConsumerRunner] = {}
        # Running totals per consumer; they outlive runner restarts.
        self.stats: dict[str, StatsReport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._poke: asyncio.Event | None = None
        self._http: aiohttp.ClientSession | None = None
        self._writing: asyncio.Future[None] | None = None  # the statistics write under way
        self.connected = asyncio.Event()
        self.health_port: int | None = None

    # -- control from outside --------------------------------------------------------------

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
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
        ) as http:
            self._http = http
            reporter = asyncio.create_task(self._report_forever())
            try:
                await self._connect_forever()
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
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
            try:
                connection = await connect_first(
                    self.settings.rabbitmq_urls,
                    timeout=self.settings.broker_timeout,
                    name=f"workerrmq-worker {self.worker_id}",
                )
            except Exception as exc:  # noqa: BLE001 - a broker still booting fails in odd ways
                log.warning("broker unreachable (%s); retrying in %.0fs", type(exc).__name__,
                            self.reconnect_delay)
                await self._wait(self.reconnect_delay)
                continue
            try:
                await self._serve(connection)
            except _BROKER_ERRORS as exc:
                log.warning("broker connection lost (%s); reconnecting", type(exc).__name__)
            except Exception:
                log.exception("unexpected error; reconnecting")
            finally:
                self.connected.clear()
                graceful = self._stopping.is_set() and is_alive(connection)
                await self._stop_all(grace=None if graceful else 0)
                with contextlib.suppress(Exception):
                    await connection.close()
            if not self._stopping.is_set():
                await self._wait(self.reconnect_delay)

    async def _serve(self, connection: AbstractConnection) -> None:
        assert self._stopping is not None and self._poke is not None
        router = await FailureRouter.open(connection)
        await self._listen_for_changes(connection)
        log.info("worker %s connected", self.worker_id)
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        closed = asyncio.ensure_future(lost.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                await self._reconcile(connection, router)
                self.connected.set()
                poke = asyncio.ensure_future(self._poke.wait())
                await asyncio.wait(
                    {closed, stopping, poke}, timeout=self.reconcile_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                poke.cancel()
                self._poke.clear()
                if stopping.done():
                    return
                if closed.done():
                    raise aiormq.exceptions.ConnectionClosed(320, "connection closed")
        finally:
            closed.cancel()
            stopping.cancel()

    async def _listen_for_changes(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._on_control, no_ack=True)
        # Tell the other workers, so they hand over their share of the work now.
        await exchange.publish(
            aio_pika.Message(orjson.dumps({"worker_id": self.worker_id, "action": "joined"})), ""
        )

    async def _on_control(self, _message: AbstractIncomingMessage) -> None:
        if self._poke is not None:
            self._poke.set()

    async def _wait(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- consumers --------------------------------------------------------------------------------

    async def _reconcile(self, connection: AbstractConnection, router: FailureRouter) -> None:
        """Make the running consumers match the definitions."""
        try:
            specs, alive = await asyncio.to_thread(self._read_definitions)
        except WorkerRMQError as exc:
            log.warning("cannot read consumer definitions (%s); keeping %d running",
                        exc.message, len(self.runners))
            return
        wanted = self._placed_here(specs, alive)
        outdated = [
            runner for cid, runner in self.runners.items()
            if cid not in wanted or wanted[cid].version != runner.spec.version or not runner.healthy
        ]
        for runner in outdated:
            del self.runners[runner.spec.id]
        # A runner whose channel died cannot ack any more: no point waiting for it.
        await asyncio.gather(*(r.stop(grace=None if r.healthy else 0) for r in outdated))
        new = []
        for cid, spec in wanted.items():
            if cid not in self.runners:
                new.append(spec)
            elif self.runners[cid].spec.concurrency != spec.concurrency:
                await self.runners[cid].set_concurrency(spec.concurrency)
        # Each start is a few round trips to the broker: overlap them, a batch at a time.
        for first in range(0, len(new), _START_BATCH):
            batch = new[first:first + _START_BATCH]
            await asyncio.gather(*(self._start(spec, connection, router) for spec in batch))

    async def _start(
        self, spec: ConsumerSpec, connection: AbstractConnection, router: FailureRouter
    ) -> None:
        assert self._http is not None and self._poke is not None
        stats = self.stats.setdefault(spec.id, StatsReport(consumer_id=spec.id))
        runner = ConsumerRunner(
            spec, connection=connection, router=router, http=self._http, stats=stats,
            on_trouble=self._poke.set, guard=self.settings.block_private_targets,
        )
        self.runners[spec.id] = runner
        if (problem := definition_problem(spec)) is not None:
            runner.invalid(problem)
            log.warning("consumer %s: not started, its definition is invalid: %s", spec.name, problem)
            return
        try:
            started = await runner.start()
        except aiormq.exceptions.ChannelClosed as exc:
            runner.status = f"error: {exc}"[:32]
            log.warning("consumer %s: cannot start (%s); retrying", spec.name, exc)
            return
        if started:
            log.info("consumer %s: consuming %s -> %s", spec.name, spec.queue,
                     redact_url(spec.target_url))
        else:
            log.warning("consumer %s: queue %r does not exist; retrying", spec.name, spec.queue)

    def _read_definitions(self) -> tuple[list[ConsumerSpec], list[str]]:
        return self.store.list(), self.registry.alive()

    def _placed_here(self, specs: list[ConsumerSpec], alive: list[str]) -> dict[str, ConsumerSpec]:
        """The running consumers this worker should run, each with its share of concurrency."""
        if self.worker_id not in alive:
            alive = [*alive, self.worker_id]
        placed = {}
        for spec in specs:
            if spec.state != "running":
                continue
            # Order holds only with a single consumer on the queue.
            instances = 1 if spec.ordered else spec.instances
            chosen = chosen_workers(spec.id, instances, alive)
            if self.worker_id in chosen:
                share = share_of(spec.concurrency, len(chosen))
                placed[spec.id] = dataclasses.replace(spec, concurrency=share)
        return placed

    async def _stop_all(self, *, grace: float | None) -> None:
        runners, self.runners = list(self.runners.values()), {}
        await asyncio.gather(*(r.stop(grace=grace) for r in runners), return_exceptions=True)

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
        log.info("worker %s serves health and metrics on %s:%s", self.worker_id, host,
                 self.health_port)
        return runner

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = {"broker": "ok" if self.connected.is_set() else "not connected"}
        try:
            await asyncio.to_thread(self.db.ping)
            checks["database"] = "ok"
        except WorkerRMQError as exc:
            checks["database"] = exc.message
        ready = all(v == "ok" for v in checks.values())
        return web.json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                                 status=200 if ready else 503)

    # -- statistics ----------------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval)
            await self._report()

    def _write_report(self, reports: list[StatsReport]) -> None:
        self.registry.heartbeat(self.worker_id, self.identity)
        self.store.report(self.worker_id, reports)

    async def _report(self) -> None:
        metrics.CONSUMERS_RUNNING.set(sum(r.status == "consuming" for r in self.runners.values()))
        for cid, stats in self.stats.items():
            runner = self.runners.get(cid)
            if runner is not None:
                runner.report()
            else:
                stats.in_flight, stats.status = 0, "stopped"
        reports = list(self.stats.values())
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
