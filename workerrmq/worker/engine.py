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
import gc
import logging
import operator
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
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
from workerrmq.core.status import CircuitState, ConsumerState, RunnerStatus
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
_SETTLE_WAIT = 120.0  # seconds the health watch waits at most for the consumers' start
#: The worker process's garbage collector thresholds (Python's: 700, 10, 10). Each consumer
#: is a few hundred long-lived objects; at the default the collector walked the whole growing
#: heap twenty times while 10,000 consumers started (12 of 25 s of the worker's CPU), and
#: again now and then while idle (a few seconds each time).
_GC_THRESHOLDS = (50_000, 10, 10)
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
        # What was last written of each consumer's figures, and when (monotonic): a report
        # writes only the figures that changed (see _report).
        self._written: dict[str, tuple[tuple[Any, ...], float]] = {}
        # The definitions last read, with the store's revision then and when.
        self._specs: list[ConsumerSpec] = []
        self._revision: tuple[Any, ...] | None = None
        self._read_at = 0.0
        # The last placement: of which definitions, among which workers, and its result.
        self._placed: tuple[list[ConsumerSpec], tuple[str, ...], dict[str, ConsumerSpec]] | None = None
        # What the last round placed here, when a round last looked at every runner, whether
        # one should now, and the runners to look at in the rounds between (see _reconcile).
        self._wanted: dict[str, ConsumerSpec] | None = None
        self._swept = 0.0
        self._trouble = False
        self._suspects: set[str] = set()
        # Each definition of the last placement with what it placed here (None: nothing).
        self._placements: dict[str, tuple[ConsumerSpec, ConsumerSpec | None]] = {}
        self.connected = asyncio.Event()
        self._settled = asyncio.Event()  # set once a round has started every consumer placed here
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
            watch = asyncio.create_task(self._after_start(self.health_watch.run))
            sampler = asyncio.create_task(self.history.run())
            # They only look on: they stop first, before the connections they use close under
            # them (a look cut short by a closing connection fails with a bare Exception).
            lookers = asyncio.create_task(self._cancel_on_stop(watch, sampler))
            try:
                await self._connect_forever()
            finally:
                await self._http.aclose()  # the consumers are stopped: no delivery is left
                reporter.cancel()
                lookers.cancel()
                watch.cancel()
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                if writer is not None:
                    writer.cancel()  # it writes what is left first
                    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                        await asyncio.wait_for(writer, 15)
                for task in (lookers, watch, sampler):
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
                    except Exception as exc:  # noqa: BLE001 - a stop does not fail for a looker
                        log.warning("worker %s: %r at stop", self.worker_id, exc)
                await self._report(last=True)
                if site is not None:
                    await site.cleanup()
        with contextlib.suppress(WorkerRMQError):
            await asyncio.to_thread(self.registry.stopped, self.worker_id)
        log.info("worker %s stopped", self.worker_id)

    async def _after_start(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run *work* once the consumers have started (at most :data:`_SETTLE_WAIT` seconds
        on): the health watch's look is a passive declare of every dead-letter queue, each
        missing one costing a channel, which slowed thousands of consumers' start."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), _SETTLE_WAIT)
        await work()

    async def _cancel_on_stop(self, *tasks: asyncio.Task[None]) -> None:
        assert self._stopping is not None
        await self._stopping.wait()
        for task in tasks:
            task.cancel()

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
        self._trouble = True  # every consumer is to be started (again): look at them all
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                await self._reconcile()
                self._settled.set()
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
        self._on_trouble()

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
        everything = self._look_at_everything(wanted)
        # Otherwise only the runners that did not start, and the ordered ones (whose queue
        # can be refused to them without a word), can need anything: with thousands of
        # consumers, looking at every runner each round was much of an idle worker's CPU.
        look = list(self.runners) if everything else list(self._suspects)
        retune = []
        for cid in look:
            runner = self.runners.get(cid)
            if runner is None:
                continue
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
        candidates = wanted.keys() if everything else look
        new = [
            wanted[cid]
            for cid in candidates
            if cid in wanted and cid not in self.runners and cid not in draining
        ]
        refused: list[str] = []
        if len(new) > 1 and self._pool is not None:
            await self._pool.reserve(len(new))  # spread over every connection they need
        # Each start is a few round trips to the broker: overlap many, and begin the next
        # as soon as one is done (a batch would wait for its slowest start).
        window = asyncio.Semaphore(_STARTS_IN_FLIGHT)

        async def start(spec: ConsumerSpec) -> None:
            async with window:
                await self._start(spec, refused)

        await asyncio.gather(*(start(spec) for spec in new))
        if refused:
            log.warning("%d consumers cannot run here: %s", len(refused), refused[0])
        looked = self.runners.keys() if everything else [*look, *(spec.id for spec in new)]
        self._suspects = {
            cid
            for cid in looked
            if (runner := self.runners.get(cid)) is not None and (runner.spec.ordered or not runner.healthy)
        }

    def _look_at_everything(self, wanted: dict[str, ConsumerSpec]) -> bool:
        """Whether this round looks at every runner: the placed definitions changed, a runner
        or a connection reported trouble, or the last such round is :data:`_FULL_READ_EVERY`
        seconds old."""
        now = time.monotonic()
        everything = wanted is not self._wanted or self._trouble or now - self._swept >= _FULL_READ_EVERY
        self._wanted = wanted
        if everything:
            self._trouble, self._swept = False, now
        return everything

    def _on_trouble(self) -> None:
        """A runner's channel or consumer went away: look at every runner now."""
        self._trouble = True
        if self._poke is not None:
            self._poke.set()

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
        if runner.spec.ordered:
            self._on_trouble()  # its successor may start now

    async def _start(self, spec: ConsumerSpec, refused: list[str]) -> None:
        assert self._http is not None and self._poke is not None and self._pool is not None
        stats = self.stats.setdefault(spec.id, StatsReport(consumer_id=spec.id))
        runner = ConsumerRunner(
            spec,
            http=self._http,
            stats=stats,
            on_trouble=self._on_trouble,
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
        """Every definition and the alive workers. While the store's revision stays the same
        nothing is read; when it moves, and every :data:`_FULL_READ_EVERY` seconds, each
        definition's version and update time are, and only the definitions whose pair moved
        are read (and their credentials decrypted): with thousands of consumers, reading them
        all was most of an idle worker's CPU. A definition that did not move is the same
        object as before, so that nothing downstream compares it again."""
        alive = self.registry.alive()
        revision = self.store.revision()
        now = time.monotonic()
        if revision != self._revision or now - self._read_at >= _FULL_READ_EVERY:
            versions = self.store.versions()
            known = {spec.id: spec for spec in self._specs}
            moved = [
                cid
                for cid, (version, updated_at) in versions.items()
                if (old := known.get(cid)) is None or old.version != version or old.updated_at != updated_at
            ]
            read = self.store.some(moved) if moved else {}
            specs = [spec for cid in versions if (spec := read.get(cid) or known.get(cid)) is not None]
            if moved or len(specs) != len(self._specs):
                self._specs = specs  # else the same list as before: the placement is reused whole
            self._revision, self._read_at = revision, now
        return self._specs, alive

    def _placed_here(self, specs: list[ConsumerSpec], alive: list[str]) -> dict[str, ConsumerSpec]:
        """The running consumers this worker should run, each with its share of concurrency;
        the same objects as last time while neither *specs* nor *alive* changed (the same
        dict while *specs* is the same list), so that reconciling skips them."""
        among = tuple(sorted(alive))
        if self._placed is not None and self._placed[1] == among:
            if self._placed[0] is specs:
                return self._placed[2]
            before = self._placements
        else:
            before = {}
        if self.worker_id not in alive:
            alive = [*alive, self.worker_id]
        placed, placements = {}, {}
        for spec in specs:
            last = before.get(spec.id)
            share = last[1] if last is not None and last[0] is spec else self._place(spec, alive)
            placements[spec.id] = (spec, share)
            if share is not None:
                placed[spec.id] = share
        self._placed, self._placements = (specs, among, placed), placements
        return placed

    def _place(self, spec: ConsumerSpec, alive: list[str]) -> ConsumerSpec | None:
        """*spec* with this worker's share of its concurrency, or None if it runs elsewhere."""
        if spec.state != ConsumerState.RUNNING:
            return None
        # Order holds only with a single consumer on the queue.
        instances = 1 if spec.ordered else spec.instances
        chosen = chosen_workers(spec.id, instances, alive)
        if self.worker_id not in chosen:
            return None
        return dataclasses.replace(spec, concurrency=share_of(spec.concurrency, len(chosen)))

    async def _stop_all(self, *, graceful: bool) -> None:
        """Stop every runner, the draining ones included. *graceful*: let deliveries in
        flight finish where their channel still can ack them. The channels stay open: the
        connections' close, which follows, closes them all at once."""
        runners, self.runners = list(self.runners.values()), {}
        stops = [r.stop(grace=None if graceful and r.healthy else 0, close_channel=False) for r in runners]
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
        assert self._stopping is not None
        while True:
            await asyncio.sleep(self.report_interval)
            if self._stopping.is_set():
                return  # the last report comes once every consumer has stopped
            await self._report()

    def _write_report(self, reports: list[StatsReport], last: bool = False) -> None:
        # The heartbeat (one row) keeps this worker's statistics rows live, those of its idle
        # consumers included, which are not rewritten (ConsumerStore.stats_of).
        self.registry.heartbeat(self.worker_id, self.identity)
        self.store.report(self.worker_id, reports)
        if last:
            self.store.mark_stopped(self.worker_id)

    async def _report(self, *, last: bool = False) -> None:
        """Write the figures that changed since they were last written: an idle consumer
        writes nothing. A consumer whose circuit is not closed is rewritten every third of
        STATS_FRESH_FOR all the same: the health watch takes open circuits from fresh rows.

        *last*: the worker stops; only the totals that moved are written row by row, and
        every row is then marked stopped in one statement (not thousands of statuses).
        """
        # One pass over every consumer: with thousands, each pass is felt in idle CPU.
        draining = {r.spec.id: r for r in self._draining.values()}
        now, refresh = time.monotonic(), STATS_FRESH_FOR.total_seconds() / 3
        reports, written, consuming = [], {}, 0
        for cid, stats in self.stats.items():
            runner = self.runners.get(cid)
            if runner is not None:
                runner.report()
                consuming += stats.status == RunnerStatus.CONSUMING
            elif (runner := draining.get(cid)) is not None:
                runner.report()
            elif not last:
                stats.in_flight, stats.status = 0, RunnerStatus.STOPPED
            figures = _figures(stats)
            before = self._written.get(cid)
            if (
                before is None
                or before[0] != figures
                or (stats.circuit != CircuitState.CLOSED and now - before[1] >= refresh)
            ):
                reports.append(dataclasses.replace(stats))  # as it is now, not as the write finds it
                written[cid] = (figures, now)
        metrics.CONSUMERS_RUNNING.set(consuming)
        # One write at a time: cancelling a report does not stop its thread, and two
        # writes of a new consumer's first figures would both insert its row.
        if self._writing is not None:
            await asyncio.wait([self._writing])
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._write_report, reports, last))
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
    gc.set_threshold(*_GC_THRESHOLDS)
    loop = new_event_loop()
    try:
        loop.run_until_complete(engine.run(handle_signals=True))
    except ConfigError as exc:
        log.critical("worker %s cannot start: %s", engine.worker_id, exc.message)
        raise SystemExit(2) from None
    finally:
        loop.close()
        # The process ends now: collecting thousands of consumers' objects one by one at
        # its exit took seconds of a stop (10,000 consumers: 3.5 s); they go with it.
        gc.freeze()
