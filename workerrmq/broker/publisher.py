"""Publishing over AMQP with publisher confirms, for the API.

The AMQP client (aio-pika) runs on one event loop per process: the loop the API's
server runs on (:meth:`Publisher.serve_on`), or else one in a background thread of
its own. Flask handlers run in threads: they hand their messages to that loop and
wait for the broker's confirms (:meth:`Publisher.publish`); code on the loop awaits
them (:meth:`Publisher.publish_async`), with no thread in between. Either way, every
publish the API reports as done is one the broker has taken responsibility for. The
connection is opened on first use and again after it drops, so a broker restart
needs no API restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import struct
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, Literal, TypeVar

import aio_pika
import aiormq
from pamqp.commands import Basic

from workerrmq.broker import republish
from workerrmq.broker.connect import connect_first, is_alive
from workerrmq.core.dead_letters import DeadLetterSelector
from workerrmq.core.protocol import replay_headers
from workerrmq.errors import BrokerUnavailable, InvalidInput, NotFound
from workerrmq.loop import new_event_loop

__all__ = ["OutgoingMessage", "Outcome", "Publisher"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Outcome = Literal["published", "unroutable", "rejected"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutgoingMessage:
    routing_key: str
    body: bytes
    message_id: str
    content_type: str | None = None
    headers: dict[str, Any] | None = None
    correlation_id: str | None = None
    priority: int | None = None
    expiration: int | None = None  # milliseconds
    persistent: bool = True

    def properties(self) -> aiormq.spec.Basic.Properties:
        return aiormq.spec.Basic.Properties(
            headers=self.headers,
            content_type=self.content_type,
            message_id=self.message_id,
            correlation_id=self.correlation_id,
            priority=self.priority,
            expiration=str(self.expiration) if self.expiration is not None else None,
            delivery_mode=2 if self.persistent else 1,
        )


class Publisher:
    """Thread-safe publisher; one per process (it re-creates itself after a fork)."""

    def __init__(self, urls: Sequence[str], *, timeout: float = 5.0, name: str = "workerrmq-api") -> None:
        self.urls = tuple(urls)  # several brokers: the first that answers is used
        self.timeout = timeout
        self.name = name
        self._guard = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._lock: asyncio.Lock | None = None
        self._own_loop = True  # False once serve_on gave it the server's loop

    def serve_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish from *loop*, the event loop this process serves on (run by the
        calling thread), instead of from a thread of its own: the server awaits
        :meth:`publish_async` there, and the other threads' calls hop to it.

        Call it before the loop runs, once per process (after any fork).
        """
        with self._guard:
            self._pid = os.getpid()
            self._loop = loop
            self._own_loop = False
            self._connection = self._channel = None
            self._lock = None

    # -- public, called from any thread ------------------------------------------------

    def publish(self, exchange: str, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """Publish *messages* to *exchange* and wait for every confirm.

        Returns one outcome per message: ``published`` (confirmed), ``unroutable``
        (no queue took it) or ``rejected`` (the broker nacked it). Raises
        :class:`NotFound` for an unknown exchange and :class:`BrokerUnavailable`
        when the broker cannot be reached in time.
        """
        return self._run(self._publish(exchange, messages))

    async def publish_async(self, exchange: str, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        """:meth:`publish`, awaited on the loop given to :meth:`serve_on`."""
        return await self._publish(exchange, messages)

    def broadcast(self, exchange: str, body: bytes) -> None:
        """Publish *body* to the fanout *exchange* (declared if missing); no queue needed."""
        self._run(self._broadcast(exchange, body))

    def replay(
        self, source: str, dest: str, limit: int | None, *, timeout: float = 300.0
    ) -> republish.Sifted:
        """Move up to *limit* dead letters (all when None) from queue *source* back to queue
        *dest*, their attempts starting again (see :func:`workerrmq.broker.republish.move`).

        Raises :class:`NotFound` when *source* does not exist or *dest* takes no message.
        Returns how many moved, and how many *source* holds after.
        """
        return self._run(self._replay(source, dest, limit), timeout=timeout)

    def sift(
        self,
        source: str,
        dest: str | None,
        selector: DeadLetterSelector,
        limit: int | None,
        *,
        timeout: float = 300.0,
    ) -> republish.Sifted:
        """Move the dead letters of queue *source* that *selector* picks (up to *limit*)
        back to queue *dest*, or discard them when *dest* is None; the others stay in
        *source*, in their order (see :func:`workerrmq.broker.republish.sift`).

        Raises :class:`NotFound` when *source* does not exist or *dest* takes no message.
        """
        return self._run(self._sift(source, dest, selector, limit), timeout=timeout)

    def queue_counts(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Each queue's ready messages and consumers as the broker holds them now (a
        passive declare answers both), where the management API's figures are a sample
        up to its statistics interval old. A queue that cannot be asked (gone, or exclusive
        to another connection) is left out.

        Raises :class:`BrokerUnavailable` when the broker cannot be asked in time.
        """
        return self._run(self._queue_counts(names))

    def ping(self) -> None:
        """Raise :class:`BrokerUnavailable` unless an AMQP channel is open or can be opened."""
        self._run(self._ensure_channel())

    def close(self) -> None:
        with self._guard:
            loop, self._loop = self._loop, None
        if loop is None or self._pid != os.getpid():
            return
        if not self._own_loop:  # the server's loop: it ends with the server
            if loop.is_running() and not _runs_on(loop):
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(self.timeout)
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(self.timeout)
        loop.call_soon_threadsafe(loop.stop)

    async def aclose(self) -> None:
        """:meth:`close`, awaited on the loop given to :meth:`serve_on` (which
        :meth:`close` leaves to the server): the server's stop calls it once requests are
        done, so the connection is closed while that loop still runs, not left to the
        interpreter's exit."""
        with self._guard:
            self._loop = None
        await self._close()

    # -- event-loop side ------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        loop = self._get_loop()
        if _runs_on(loop):
            coro.close()
            raise RuntimeError("a blocking publisher call on the publisher's own loop would never return")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout or self.timeout * 2)
        except TimeoutError:
            future.cancel()
            raise BrokerUnavailable("RabbitMQ did not confirm in time") from None

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._connection = self._channel = None
                self._loop = new_event_loop()
                self._own_loop = True
                self._lock = None
                threading.Thread(
                    target=self._loop.run_forever, name="workerrmq-publisher", daemon=True
                ).start()
            return self._loop

    async def _ensure_channel(self) -> aio_pika.abc.AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:  # the common case, without the lock
            return channel
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            try:
                if self._connection is None or not is_alive(self._connection):
                    self._connection = await connect_first(self.urls, timeout=self.timeout, name=self.name)
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=False
                )
            except Exception as exc:  # noqa: BLE001 - a broker still booting fails in odd ways
                await self._drop_connection()
                raise BrokerUnavailable(f"RabbitMQ unreachable ({type(exc).__name__})") from None
            return self._channel

    async def _publish(self, exchange: str, messages: Sequence[OutgoingMessage]) -> list[Outcome]:
        channel = await self._ensure_channel()
        if exchange:
            await self._check_exchange(exchange)
        # aiormq's publish, without waiting for each frame to be written: the
        # confirms are what is waited for, all together, under one deadline.
        underlay = await channel.get_underlay_channel()

        def publish(m: OutgoingMessage) -> Coroutine[Any, Any, Any]:
            return underlay.basic_publish(
                m.body,
                exchange=exchange,
                routing_key=m.routing_key,
                properties=m.properties(),
                mandatory=True,
                wait=False,  # type: ignore[call-arg]  # aiormq's Channel takes it; the ABC omits it
            )

        results: list[Any]
        try:
            async with asyncio.timeout(self.timeout):
                if len(messages) == 1:  # awaited here: no task for the one message
                    try:
                        results = [await publish(messages[0])]
                    except Exception as exc:  # noqa: BLE001 - judged below, as gather hands them back
                        results = [exc]
                else:
                    results = await asyncio.gather(*map(publish, messages), return_exceptions=True)
        except TimeoutError:
            await self._drop_connection()
            raise BrokerUnavailable("RabbitMQ did not confirm in time") from None
        outcomes: list[Outcome] = []
        for result in results:
            if isinstance(result, Basic.Ack):
                outcomes.append("published")
            elif isinstance(result, aiormq.abc.DeliveredMessage):
                outcomes.append("unroutable")
            elif isinstance(result, aiormq.exceptions.DeliveryError):
                outcomes.append("rejected")
            elif isinstance(result, TypeError | ValueError | OverflowError | struct.error):
                # Refused while encoding, before anything was sent: the input's fault.
                raise InvalidInput(f"a message cannot be encoded for AMQP: {result}")
            else:
                log.warning("publish failed: %s", type(result).__name__)
                await self._drop_connection()
                raise BrokerUnavailable(
                    f"RabbitMQ connection lost while publishing ({type(result).__name__})"
                )
        if "rejected" in outcomes:
            # After a cluster node dies, a quorum queue can nack every later publish on the
            # channel that published to its old leader: the next publish opens a new channel.
            stale, self._channel = self._channel, None
            if stale is not None:
                with contextlib.suppress(Exception):  # it is being thrown away
                    await asyncio.wait_for(stale.close(), self.timeout)
        return outcomes

    async def _broadcast(self, exchange: str, body: bytes) -> None:
        channel = await self._ensure_channel()
        try:
            target = await channel.declare_exchange(
                exchange, aio_pika.ExchangeType.FANOUT, durable=True, timeout=self.timeout
            )
            await target.publish(aio_pika.Message(body), "", mandatory=False, timeout=self.timeout)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            await self._drop_connection()
            raise BrokerUnavailable(f"RabbitMQ unreachable ({type(exc).__name__})") from None

    async def _replay(self, source: str, dest: str, limit: int | None) -> republish.Sifted:
        async with self._moving(source, dest) as amqp:
            moved = await republish.move(
                amqp, source, dest, limit, headers=replay_headers, timeout=self.timeout
            )
            after = await amqp.queue_declare(source, passive=True, timeout=self.timeout)
        return republish.Sifted(seen=moved, matched=moved, moved=moved, remaining=after.message_count or 0)

    async def _sift(
        self, source: str, dest: str | None, selector: DeadLetterSelector, limit: int | None
    ) -> republish.Sifted:
        def match(message: aiormq.abc.DeliveredMessage) -> bool:
            properties = message.header.properties
            return selector.matches(properties.message_id, properties.headers)

        async with self._moving(source, dest or source) as amqp:
            return await republish.sift(
                amqp, source, dest, match, limit, headers=replay_headers, timeout=self.timeout
            )

    @contextlib.asynccontextmanager
    async def _moving(self, source: str, dest: str) -> AsyncIterator[aiormq.abc.AbstractChannel]:
        """A channel of its own with publisher confirms, closed after the move; the move's
        failures as WorkerRMQ's errors."""
        await self._ensure_channel()
        assert self._connection is not None
        try:
            async with self._connection.channel(publisher_confirms=True) as channel:
                yield await channel.get_underlay_channel()
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise NotFound(f"queue {source!r} not found") from None
        except republish.RepublishFailed:
            raise NotFound(f"queue {dest!r} did not take the messages") from None
        except (
            OSError,
            TimeoutError,
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
        ) as exc:
            raise BrokerUnavailable(
                f"RabbitMQ connection lost while moving messages ({type(exc).__name__})"
            ) from None

    async def _queue_counts(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """On a channel of their own: a queue that cannot be asked closes the channel."""
        await self._ensure_channel()
        assert self._connection is not None
        counts: dict[str, tuple[int, int]] = {}
        probe: aio_pika.abc.AbstractChannel | None = None
        try:
            for name in names:
                if probe is None or probe.is_closed:
                    probe = await self._connection.channel(publisher_confirms=False)
                try:
                    queue = await probe.declare_queue(name, passive=True, timeout=self.timeout)
                except aiormq.exceptions.ChannelClosed:  # gone, or another connection's exclusive one
                    continue
                declared = queue.declaration_result
                counts[name] = (declared.message_count or 0, declared.consumer_count or 0)
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"RabbitMQ unreachable ({type(exc).__name__})") from None
        finally:
            if probe is not None and not probe.is_closed:
                with contextlib.suppress(Exception):  # done with it either way
                    await probe.close()
        return counts

    async def _check_exchange(self, exchange: str) -> None:
        """Passive declare on a throwaway channel, so a 404 cannot close the shared one."""
        assert self._connection is not None
        try:
            async with self._connection.channel() as probe:
                await probe.declare_exchange(exchange, passive=True, timeout=self.timeout)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise NotFound(f"exchange {exchange!r} not found") from None
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"RabbitMQ unreachable ({type(exc).__name__})") from None

    async def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):  # it is being thrown away
                await asyncio.wait_for(connection.close(), self.timeout)

    async def _close(self) -> None:
        await self._drop_connection()


def _runs_on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is the one running *loop*."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
