"""Marking consumers degraded, and telling someone: the health watch of the workers.

Every few seconds one worker looks at every consumer (:func:`leads`: the same one for
all workers, picked from the alive ones as placement picks a consumer's worker): the
circuit states the workers reported, and each dead-letter queue's depth. A few queues
(:attr:`HealthWatch.declares_at_most`) are read live with a passive declare each; more come
from one request to the management API for every queue (:meth:`ManagementClient.queue_depths`),
whose figures lag by up to the broker's statistics interval, and a queue is then read live
only where that figure could change an assessment (not zero, none yet, or a consumer whose
dead letters are above zero or grew); every queue is when the API does not answer or the
worker has none. :func:`workerrmq.core.health.assess` says whether the consumer is
degraded; the result is stored with a compare-and-set (:mod:`workerrmq.store.health`),
so even two workers that both believe they lead (while the alive list changes) record
each change once.

A change of health is then notified: a signed JSON POST to ``NOTIFY_URL``. The change
is claimed in the database first, so one sender sends it; the send runs in the
background, tried :attr:`Notifier.attempts` times with a doubling wait, and neither
deliveries nor the next look wait for it. A sender that dies leaves its claim, which
another worker (or this one, restarted) takes over once :attr:`Notifier.lease` has
passed; the event keeps its ``webhook-id`` for a receiver to drop a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import aiohttp
import aiormq
import orjson

from workerrmq import __version__
from workerrmq.core.credentials import redact_url
from workerrmq.core.health import HealthRecord, assess, event, event_id
from workerrmq.core.signing import secret_bytes, signature_headers
from workerrmq.core.status import Health
from workerrmq.errors import WorkerRMQError

if TYPE_CHECKING:
    from workerrmq.broker.management import ManagementClient
from workerrmq.store.db import Database
from workerrmq.store.health import Claim, HealthStore, Watched
from workerrmq.store.models import utcnow
from workerrmq.store.workers import WorkerRegistry
from workerrmq.worker.connections import ConnectionPool, NoCapacity
from workerrmq.worker.placement import chosen_workers

__all__ = ["HealthWatch", "Notifier", "leads"]

log = logging.getLogger(__name__)

#: The name placement hashes to pick the worker that watches (any fixed text would do).
_WATCHER = "workerrmq.health-watch"
#: How many times the duration of a look the watch rests before the next.
_REST = 10
_BROKER_ERRORS = (OSError, TimeoutError, aiormq.exceptions.AMQPError)


def leads(worker_id: str, alive: list[str]) -> bool:
    """True if *worker_id* is the one of *alive* that watches the consumers' health."""
    return chosen_workers(_WATCHER, 1, sorted({*alive, worker_id})) == [worker_id]


class Notifier:
    """POSTs health events to one URL, signed with Standard Webhooks when given a secret."""

    attempts = 5
    timeout = 10.0  # seconds per try
    first_wait = 1.0  # seconds before the second try, doubling after each

    def __init__(self, url: str, secret: str = "") -> None:
        self.url = url
        self._key = secret_bytes(secret) if secret else None

    @property
    def lease(self) -> float:
        """Seconds a claim holds: longer than every try and wait of one send."""
        waits = sum(self.first_wait * 2**n for n in range(self.attempts - 1))
        return self.attempts * self.timeout + waits + 60

    async def send(self, http: aiohttp.ClientSession, claim: Claim) -> bool:
        """Send *claim*'s event until a 2xx, at most :attr:`attempts` times; never raises."""
        body = orjson.dumps(
            event(claim.record, consumer_id=claim.consumer_id, consumer_name=claim.consumer_name)
        )
        message_id = event_id(claim.consumer_id, claim.record.health, claim.record.changed_at)
        failure = ""
        for attempt in range(1, self.attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": f"WorkerRMQ/{__version__}"}
            if self._key is not None:
                headers.update(signature_headers(self._key, message_id, int(time.time()), body))
            else:
                headers["webhook-id"] = message_id
            try:
                async with http.post(
                    self.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        return True
                    failure = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                failure = type(exc).__name__
            if attempt < self.attempts:
                await asyncio.sleep(self.first_wait * 2 ** (attempt - 1))
        log.warning(
            "could not notify %s that consumer %s is %s after %d tries (%s); giving up",
            redact_url(self.url),
            claim.consumer_name,
            claim.record.health,
            self.attempts,
            failure,
        )
        return False


class HealthWatch:
    """One worker's part: look every *interval* seconds if it leads, and notify."""

    #: Up to this many dead-letter queues are read live, each with a passive declare, rather
    #: than from the management API: quicker than its answer of every queue of the virtual
    #: host, which takes seconds when it holds thousands.
    declares_at_most = 200

    def __init__(
        self,
        *,
        worker_id: str,
        db: Database,
        registry: WorkerRegistry,
        pool: Callable[[], ConnectionPool | None],
        notifier: Notifier | None,
        interval: float = 2.0,
        management: ManagementClient | None = None,
    ) -> None:
        """*management* gives each look every queue's depth in one request (see the module)."""
        self.worker_id = worker_id
        self.management = management
        self.store = HealthStore(db)
        self.registry = registry
        self.notifier = notifier
        self.interval = interval
        self._pool = pool
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._http: aiohttp.ClientSession | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self.looks = 0  # checks finished, led or not (tests wait on it)

    async def run(self) -> None:
        """Look until cancelled; a failed look (database or broker away) is tried again."""
        # No cookie jar, no SSRF guard: NOTIFY_URL is the operator's, not an API user's.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            self._http = http
            try:
                took = 0.0
                while True:
                    # With thousands of consumers a look takes a while (one management API
                    # answer of every queue, and a passive declare for each without its
                    # figure): rest ten times that long, so the watch stays under a tenth of
                    # the time of an otherwise idle worker. A
                    # consumer is degraded after minutes (degraded_after, 300 s by
                    # default), so a look every 20 s at that scale still sees it in time.
                    await asyncio.sleep(max(self.interval, _REST * took))
                    started = time.monotonic()
                    try:
                        await self.check()
                    except WorkerRMQError as exc:
                        log.debug("health watch: %s", exc.message)
                    except _BROKER_ERRORS as exc:
                        log.debug("health watch: broker: %r", exc)
                        self._channel = None
                    took = time.monotonic() - started
                    self.looks += 1
            finally:
                for task in list(self._sends):
                    task.cancel()
                await asyncio.gather(*self._sends, return_exceptions=True)
                if self._channel is not None and not self._channel.is_closed:
                    with contextlib.suppress(Exception):
                        await self._channel.close()

    async def check(self) -> None:
        """One look at every consumer, if this worker leads; then send what is owed."""
        alive = await asyncio.to_thread(self.registry.alive)
        if not leads(self.worker_id, alive):
            return
        watched = await asyncio.to_thread(self.store.watched)
        depths = await self._depths(watched)
        now = utcnow()
        changes = []
        for item in watched:
            record = assess(
                item.record,
                now=now,
                degraded_after=item.degraded_after,
                running=item.running,
                circuit_closed=item.circuit_closed,
                delivered=item.delivered,
                dead_letters=depths.get(item.dead_letter_queue),
                dead_letter_queue=item.dead_letter_queue,
                last_error=item.last_error,
            )
            if record != item.record:
                changes.append((item, record))
        if changes:
            await asyncio.to_thread(self._save, changes)
        if self.notifier is None:
            await asyncio.to_thread(self.store.settle)
            return
        for claim in await asyncio.to_thread(self.store.claim, lease=self.notifier.lease):
            task = asyncio.create_task(self._notify(claim))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def _save(self, changes: list[tuple[Watched, HealthRecord]]) -> None:
        for item, record in changes:
            if not self.store.save(item, record, notify=self.notifier is not None):
                continue  # changed by another watcher meanwhile: the next look sees it
            if record.health is item.record.health:
                continue
            if record.health is Health.DEGRADED:
                log.warning("consumer %s is degraded: %s", item.name, record.reason)
            else:
                log.info("consumer %s recovered", item.name)

    @property
    def sending(self) -> int:
        """Notifications being sent now."""
        return len(self._sends)

    async def _notify(self, claim: Claim) -> None:
        assert self.notifier is not None and self._http is not None
        try:
            await self.notifier.send(self._http, claim)
        except asyncio.CancelledError:
            # The worker stops: hand the change back at once rather than when the claim lapses.
            with contextlib.suppress(WorkerRMQError):
                await asyncio.to_thread(self.store.release, claim.consumer_id)
            raise
        try:
            await asyncio.to_thread(self.store.notified, claim.consumer_id, claim.record.health)
        except WorkerRMQError as exc:
            # The claim stays: once it lapses the event is sent again, with the same webhook-id.
            log.debug("health watch: %s", exc.message)

    async def _depths(self, watched: list[Watched]) -> dict[str, int]:
        """The depth of each dead-letter queue of *watched* that exists (none without a
        broker connection). Past :attr:`declares_at_most` queues, the management API's figure
        where it is zero and no consumer of that queue has dead letters on record; else, and
        for every queue when the API does not answer, read live."""
        queues = sorted({w.dead_letter_queue for w in watched})
        listed = await self._listed() if len(queues) > self.declares_at_most else None
        if listed is None:
            return await self._declared(queues)
        # Figures that lag could hide a fall (a replay) or the last of a growth: read those live.
        live = {
            w.dead_letter_queue for w in watched if w.record.dead_letters or w.record.dead_letters_grew_since
        }
        depths: dict[str, int] = {}
        unsure = []
        for name in queues:
            if name not in listed:
                continue  # no such queue (yet): unknown, as a failed passive declare says
            depth = listed[name]
            if depth == 0 and name not in live:
                depths[name] = 0
            else:
                unsure.append(name)
        return depths | await self._declared(unsure)

    async def _listed(self) -> dict[str, int | None] | None:
        """Every queue's depth from the management API, None without one or an answer."""
        if self.management is None:
            return None
        try:
            return await asyncio.to_thread(self.management.queue_depths)
        except WorkerRMQError as exc:
            log.debug("health watch: management API: %s; reading the queues one by one", exc.message)
            return None

    async def _declared(self, queues: Iterable[str]) -> dict[str, int]:
        """The live depth of each of *queues* that exists, through passive declares (none
        without a broker connection)."""
        pool = self._pool()
        depths: dict[str, int] = {}
        if pool is None:
            return depths
        for name in queues:
            if self._channel is None or self._channel.is_closed:
                try:
                    _, self._channel = await pool.open_channel()
                except NoCapacity:
                    return depths
            try:
                declared = await self._channel.queue_declare(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                self._channel = None  # the broker closed it; a queue not declared yet counts as unknown
                continue
            if declared.message_count is not None:
                depths[name] = declared.message_count
        return depths
