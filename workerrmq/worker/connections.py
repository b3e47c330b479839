"""The worker's AMQP connections: as many as its channels need, each within its limit.

A connection carries at most the ``channel_max`` it negotiated with the broker
(RabbitMQ's default is 2,047); one channel past that and the broker closes the
whole connection, taking every consumer on it along. So each consumer gets its
channel from a :class:`ConnectionPool`, which puts it on a connection with room
and opens another connection when all are full, up to ``max_connections``.

Each connection is a :class:`Link`: the connection and the republisher that sends
the failed messages of the consumers on it to a delay or dead-letter queue. A lost
link takes only its own consumers with it; the engine restarts them on the links that
are left, or on new ones.
When no more channels can be had (the worker's own limit, or the broker refusing
another connection: ``connection_max``, a user's or vhost's limit), opening a
channel raises :class:`NoCapacity` with the reason, and the consumers that hold
channels already keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, KeysView, Sequence

import aiormq
from aio_pika.abc import AbstractConnection

from workerrmq.broker.connect import connect_first, is_alive
from workerrmq.broker.republish import Republisher
from workerrmq.errors import WorkerRMQError

__all__ = ["ConnectionPool", "Link", "NoCapacity"]

log = logging.getLogger(__name__)
_NO_LIMIT = 65535  # a channel_max of 0 means the broker sets none: the protocol's own
_REFUSAL_HOLD = 5.0  # after the broker refused a connection, seconds before asking again
_COOLING = 5.0  # seconds a closed channel's number rests before it is used again


class NoCapacity(WorkerRMQError):
    """No channel can be had for one more consumer; the message says why."""

    status = 503
    code = "no_capacity"


class Link:
    """One AMQP connection with its republisher and the channels it carries."""

    def __init__(
        self, connection: AbstractConnection, republisher: Republisher, index: int, *, timeout: float = 10.0
    ) -> None:
        self.connection = connection
        self.timeout = timeout
        self.republisher = republisher
        self.index = index
        amqp = self._amqp()
        self.channel_max = amqp.connection_tune.channel_max or _NO_LIMIT
        self._opening: set[int] = set()  # numbers taken by channels being opened
        self._last = 0  # the number given last: numbers are handed out in turn
        self._closed_at: dict[int, float] = {}  # numbers of channels closed lately

    def _amqp(self) -> aiormq.abc.AbstractConnection:
        transport = self.connection.transport
        if transport is None:
            raise aiormq.exceptions.ConnectionClosed(320, "the connection is closed")
        return transport.connection

    @property
    def alive(self) -> bool:
        return is_alive(self.connection)

    @property
    def free(self) -> int:
        """Channels this connection can still open (0 once it is closed)."""
        if not self.alive:
            return 0
        # Counted without building the union of every number in use: with thousands of
        # channels, each consumer's start asked this of every full connection.
        channels = self._amqp().channels
        taken = len(channels) + sum(1 for n in self._opening if n not in channels)
        taken += sum(1 for n in self._closed_at if n not in channels and n not in self._opening)
        return max(0, self.channel_max - taken)

    async def open_channel(self) -> aiormq.abc.AbstractChannel:
        """A new channel numbered within ``channel_max``; raises :class:`NoCapacity` if full.

        aiormq would count on from the highest number in use, which after enough
        openings and closings passes ``channel_max``. Numbers are handed out in turn
        instead, and a closed channel's number rests a while: aiormq frees it when the
        broker's Channel.Close arrives, before its Close-Ok has left, and a Channel.Open
        of that number in between makes the broker close the whole connection.
        """
        amqp = self._amqp()
        number = self._next_number(amqp.channels.keys(), self._opening)
        self._opening.add(number)
        try:
            # No publisher confirms: a consumer's channel publishes nothing (failed messages
            # go through the link's republisher), and Confirm.Select is one more round trip
            # per consumer at start.
            channel = await amqp.channel(number, publisher_confirms=False, timeout=self.timeout)
        finally:
            self._opening.discard(number)
        channel.closing.add_done_callback(lambda _: self._closed_at.__setitem__(number, time.monotonic()))
        return channel

    def _next_number(self, open_: KeysView[int], opening: set[int]) -> int:
        # Looked up in place: a union of the numbers in use, built for each channel, was
        # thousands of elements copied per consumer's start.
        if self._closed_at:
            now = time.monotonic()
            self._closed_at = {n: t for n, t in self._closed_at.items() if now - t < _COOLING}
        for step in range(1, self.channel_max + 1):
            number = (self._last + step - 1) % self.channel_max + 1
            if number not in open_ and number not in opening and number not in self._closed_at:
                self._last = number
                return number
        raise NoCapacity(f"connection {self.index} is full ({self.channel_max} channels)")

    async def close(self) -> None:
        """Close the connection, and with it every channel it carries, in one exchange with
        the broker. Frames handed to the connection before (acks among them) go out first:
        closing drops what is still queued, so the answer to one more method, which the
        connection sends after them, is waited for."""
        try:
            if self.alive:
                with contextlib.suppress(Exception):
                    await self.republisher.channel.basic_qos(prefetch_count=0, timeout=self.timeout)
        finally:
            with contextlib.suppress(Exception):
                await self.connection.close()


class ConnectionPool:
    """The links of one worker; opens another when every open one is full."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float,
        name: str,
        max_connections: int,
        on_lost: Callable[[Link], None] = lambda _link: None,
    ) -> None:
        self.urls = urls
        self.timeout = timeout
        self.name = name
        self.max_connections = max_connections
        self.links: list[Link] = []
        self._on_lost = on_lost
        self._grow = asyncio.Lock()
        self._opened = 0
        self._refused: tuple[float, str] | None = None
        self._closed = False

    @property
    def alive(self) -> list[Link]:
        return [link for link in self.links if link.alive]

    @property
    def opened(self) -> int:
        """How many connections this pool has opened, reopened ones included."""
        return self._opened

    async def any_link(self) -> Link:
        """An open link, opening one if none is; raises what connecting raised."""
        async with self._grow:
            alive = self.alive
            if alive:
                return alive[0]
            return await self._open()

    async def open_channel(self) -> tuple[Link, aiormq.abc.AbstractChannel]:
        """A channel for one consumer, on a link with room; raises :class:`NoCapacity`."""
        link = self._roomiest()
        if link is None:
            async with self._grow:
                link = self._roomiest()
                if link is None:
                    link = await self._grow_by_one()
        return link, await link.open_channel()

    async def reserve(self, channels: int) -> None:
        """Open, at once, the connections that *channels* more channels will need (within
        ``max_connections``), rather than one at a time as each fills up: a broker opens a
        connection's channels one after another, so thousands of consumers start sooner
        spread over all their connections from the first. A refusal is remembered as in
        :meth:`open_channel`, which then says why."""
        async with self._grow:
            self.prune()
            held = self._refused is not None and time.monotonic() - self._refused[0] < _REFUSAL_HOLD
            if not self.links or held:
                return
            room = sum(link.free for link in self.links)
            per_link = self.links[0].channel_max - 1  # a new link's republisher takes one
            more = min(-(-(channels - room) // per_link), self.max_connections - len(self.links))
            if more <= 0:
                return
            opened = await asyncio.gather(*(self._open() for _ in range(more)), return_exceptions=True)
            failed = [exc for exc in opened if isinstance(exc, BaseException)]
            if failed:
                self._note_refusal(failed[0])

    def prune(self) -> None:
        """Forget the links that were lost (their consumers are restarted elsewhere)."""
        lost = [link for link in self.links if not link.alive]
        self.links = [link for link in self.links if link.alive]
        for link in lost:
            asyncio.ensure_future(link.close())

    async def close(self) -> None:
        self._closed = True
        links, self.links = self.links, []
        await asyncio.gather(*(link.close() for link in links))

    def _roomiest(self) -> Link | None:
        """The link with the most room, None if all are full: consumers started together are
        spread over the links (whose count grows only when all are full)."""
        best, room = None, 0
        for link in self.links:
            free = link.free
            if free > room:
                best, room = link, free
        return best

    async def _grow_by_one(self) -> Link:
        self.prune()
        if len(self.links) >= self.max_connections:
            raise NoCapacity(
                f"worker full: {len(self.links)} connections (WORKER_MAX_CONNECTIONS) of "
                f"{self.links[0].channel_max if self.links else 0} channels each are in use"
            )
        if self._refused is not None and time.monotonic() - self._refused[0] < _REFUSAL_HOLD:
            raise NoCapacity(self._refused[1])
        try:
            return await self._open()
        except Exception as exc:  # noqa: BLE001 - any refusal means the same to the consumer
            raise NoCapacity(self._note_refusal(exc)) from None

    def _note_refusal(self, exc: BaseException) -> str:
        """Remember that the broker refused another connection (see :data:`_REFUSAL_HOLD`);
        the reason, for the consumers that cannot run."""
        reason = f"broker refused connection {len(self.links) + 1}: {type(exc).__name__}: {exc}"
        self._refused = (time.monotonic(), reason[:480])
        log.warning("%s", reason)
        return reason

    async def _open(self) -> Link:
        self._opened += 1
        index = self._opened  # several may be opening at once (reserve)
        connection = await connect_first(self.urls, timeout=self.timeout, name=f"{self.name} #{index}")
        try:
            republisher = await Republisher.open(connection)
            link = Link(connection, republisher, index, timeout=self.timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        connection.close_callbacks.add(lambda *_: self._closed or self._on_lost(link))
        self.links.append(link)
        self._refused = None
        log.info("%s: connection %d open (channel_max %d)", self.name, link.index, link.channel_max)
        return link
