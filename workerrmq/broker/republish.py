"""Where a failed delivery goes, and how dead letters come back: every republish, in one place.

A message that must be tried again waits in a delay queue; one that cannot be
delivered goes to its consumer's dead-letter queue; a replay moves dead letters
back to their queue. Each is a new publish of the delivered message (its body and
properties, with the headers of :mod:`workerrmq.core.protocol`) on an aiormq channel
with publisher confirms, and ``mandatory``: the caller acks the original only once
the broker confirmed the copy, and a copy no queue takes is a failure
(:class:`RepublishFailed`), never a silent drop.

Delay queues are tiered by wait (see :data:`~workerrmq.core.policy.DELAY_TIERS`).
Each tier is a fanout exchange and a durable queue of that name, whose fixed TTL
dead-letters messages through the default exchange with their original routing
key, which is the source queue's name. All messages in a tier wait the same time,
so expiry at the head never blocks another message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from workerrmq.core import protocol
from workerrmq.core.policy import DELAY_TIERS

__all__ = [
    "DIRECT_REPLY_TO",
    "Republisher",
    "RepublishFailed",
    "Sifted",
    "Unroutable",
    "copied_properties",
    "move",
    "sift",
    "tier_name",
]

log = logging.getLogger(__name__)
_TIMEOUT = 10.0  # seconds a republish may wait for its confirm
_MOVE_BATCH = 100
_closing: set[asyncio.Task[Any]] = set()  # closes under way, held until done


class RepublishFailed(Exception):
    """The broker did not confirm the republish; the message must not be acked."""


class Unroutable(RepublishFailed):
    """The broker returned the publish: no queue took it."""


#: A reply to a name of RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``) starts with this.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to."


def tier_name(seconds: float) -> str:
    """The exchange and queue of the delay tier of *seconds*."""
    return f"workerrmq.delay.{round(seconds * 1000)}ms"


def copied_properties(
    message: DeliveredMessage, headers: Mapping[str, Any], message_id: str | None
) -> Basic.Properties:
    """*message*'s properties for a persistent copy with *headers* and *message_id*.

    The expiration is dropped (a retry must not expire while it waits), and so is the
    user id, which the broker checks against the login that publishes the copy.
    """
    original = message.header.properties
    return Basic.Properties(
        headers=dict(headers),
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        delivery_mode=2,
        priority=original.priority,
        correlation_id=original.correlation_id,
        reply_to=original.reply_to,
        message_id=message_id,
        timestamp=original.timestamp,
        message_type=original.message_type,
        app_id=original.app_id,
    )


async def _confirmed(
    channel: aiormq.abc.AbstractChannel,
    body: bytes,
    properties: Basic.Properties,
    *,
    exchange: str,
    routing_key: str,
    timeout: float = _TIMEOUT,
) -> None:
    """Publish and wait for the confirm; :class:`RepublishFailed` unless the broker acked
    it and a queue took it."""
    try:
        result = await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=True,
            timeout=timeout,
        )
    except aiormq.exceptions.PublishError:
        raise Unroutable(f"republish to {routing_key!r} was not routed") from None
    except Exception as exc:  # noqa: BLE001 - whatever it was, the message is not safe yet
        raise RepublishFailed(f"republish failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(result, Basic.Ack):
        raise RepublishFailed(f"republish to {routing_key!r} was not confirmed")


class Republisher:
    """Sends a connection's failed messages to a delay queue or a dead-letter queue, on
    a channel of its own with publisher confirms."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, *, url: str | None = None) -> None:
        self.channel = channel
        self._url = url  # the broker's, for the connection of direct replies (opened at first use)
        self._direct: aiormq.abc.AbstractConnection | None = None
        self._direct_channel: aiormq.abc.AbstractChannel | None = None
        # Queues whose home node was down when declared (a cluster): they exist, so they are
        # not declared again on this connection, which would fail the same way.
        self.unavailable: set[str] = set()

    @classmethod
    async def open(cls, connection: AbstractConnection) -> Republisher:
        """Declare the delay tiers. In a cluster, a tier whose home node is down is skipped:
        it exists, and until its node is back a retry to it is unroutable, so the failed
        message is not acked and comes back (see :class:`RepublishFailed`)."""
        channel = await _amqp(connection).channel(publisher_confirms=True)
        for seconds in DELAY_TIERS:
            name = tier_name(seconds)
            await channel.exchange_declare(name, exchange_type="fanout", durable=True)
            try:
                await channel.queue_declare(
                    name,
                    durable=True,
                    arguments={"x-message-ttl": round(seconds * 1000), "x-dead-letter-exchange": ""},
                )
            except aiormq.exceptions.ChannelNotFoundEntity as exc:  # "home node ... is down"
                log.warning("delay queue %s unavailable: %s", name, exc.args[0] if exc.args else exc)
                channel = await _amqp(connection).channel(publisher_confirms=True)  # the error closed it
                continue
            await channel.queue_bind(name, name)
        republisher = cls(channel, url=str(_amqp(connection).url))
        connection.close_callbacks.add(lambda *_: republisher._close_direct())
        return republisher

    def note_unavailable(self, queue: str, exc: aiormq.exceptions.ChannelNotFoundEntity) -> bool:
        """Remember *queue* if *exc* says its home node is down; True if it did."""
        reason = str(exc.args[0] if exc.args else exc)
        if "home node" not in reason:
            return False
        log.warning("queue %s unavailable, not declared again on this connection: %s", queue, reason)
        self.unavailable.add(queue)
        return True

    async def retry(
        self, message: DeliveredMessage, *, queue: str, message_id: str, attempts: int, tier: float
    ) -> None:
        """Send *message* back to *queue* after *tier* seconds, counting *attempts* made."""
        headers = protocol.retry_headers(message.header.properties.headers, attempts)
        await _confirmed(
            self.channel,
            message.body,
            copied_properties(message, headers, message_id),
            exchange=tier_name(tier),
            routing_key=queue,
        )

    async def reply(
        self, reply_to: str, body: bytes, *, content_type: str | None, correlation_id: str | None
    ) -> bool:
        """Publish *body*, an endpoint's answer, to the queue *reply_to* (through the default
        exchange) with *correlation_id*, and wait for the broker's confirm. True once a queue
        took it, False if none did (the message is acked all the same: it was delivered);
        :class:`RepublishFailed` if the broker did not confirm it.

        A direct reply-to name is not a queue: RabbitMQ returns a ``mandatory`` publish to
        it even when its client gets it, so it is published without, on a connection of
        its own (see :meth:`_reply_direct`). A confirm then says the broker took it, not
        that the client, which may have gone, got it.
        """
        properties = Basic.Properties(
            content_type=content_type, correlation_id=correlation_id, delivery_mode=2
        )
        if reply_to.startswith(DIRECT_REPLY_TO):
            return await self._reply_direct(reply_to, body, properties)
        try:
            await _confirmed(self.channel, body, properties, exchange="", routing_key=reply_to)
        except Unroutable:
            return False
        return True

    async def _reply_direct(self, reply_to: str, body: bytes, properties: Basic.Properties) -> bool:
        """Publish to a direct reply-to name, on a connection apart from the deliveries'.

        RabbitMQ 3.x closes the whole connection (541 INTERNAL_ERROR) on a name it cannot
        decode, which any publisher can put in ``reply_to``: here that closes only this
        connection. A reply that met such a close is tried once more on a new connection
        (the close may have been another reply's doing); closed again, its name is taken
        for the culprit: not routed.
        """
        for tries_left in (1, 0):
            channel = await self._open_direct()
            try:
                result = await channel.basic_publish(
                    body, exchange="", routing_key=reply_to, properties=properties, timeout=_TIMEOUT
                )
            except aiormq.exceptions.ConnectionInternalError:
                self._close_direct()
                if tries_left:
                    continue
                log.warning("the broker closed the connection on reply_to %r; the reply is dropped", reply_to)
                return False
            except Exception as exc:  # noqa: BLE001 - whatever it was, the reply is not safe yet
                self._close_direct()
                raise RepublishFailed(f"reply failed: {type(exc).__name__}: {exc}") from None
            if not isinstance(result, Basic.Ack):
                raise RepublishFailed("the reply was not confirmed")
            return True
        return False  # not reached: the second try returns

    async def _open_direct(self) -> aiormq.abc.AbstractChannel:
        channel = self._direct_channel
        if channel is not None and not channel.is_closed:
            return channel
        if self._url is None:
            raise RepublishFailed("no broker URL to open a connection for direct replies")
        self._close_direct()
        try:
            self._direct = await aiormq.connect(
                self._url, client_properties={"connection_name": "workerrmq replies"}
            )
            channel = await self._direct.channel(publisher_confirms=True)
        except Exception as exc:  # noqa: BLE001 - the broker is in trouble: the message comes back
            self._close_direct()
            raise RepublishFailed(f"no connection for the reply: {type(exc).__name__}: {exc}") from None
        self._direct_channel = channel
        return channel

    def _close_direct(self) -> None:
        connection, self._direct, self._direct_channel = self._direct, None, None
        if connection is not None and not connection.is_closed:
            try:
                task = asyncio.get_running_loop().create_task(connection.close())
            except RuntimeError:  # no loop runs any more: the connection goes with it
                return
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    async def dead_letter(
        self,
        message: DeliveredMessage,
        *,
        dlq: str,
        source_queue: str,
        message_id: str,
        attempts: int,
        status: int | None,
        error: str,
        consumer: str,
    ) -> None:
        """Put *message* in the dead-letter queue *dlq*, with why it failed in its headers."""
        headers = protocol.dead_letter_headers(
            message.header.properties.headers,
            attempts=attempts,
            source_queue=source_queue,
            consumer=consumer,
            status=status,
            error=error,
        )
        await _confirmed(
            self.channel,
            message.body,
            copied_properties(message, headers, message_id),
            exchange="",
            routing_key=dlq,
        )


async def move(
    channel: aiormq.abc.AbstractChannel,
    source: str,
    dest: str,
    limit: int | None,
    *,
    headers: Callable[[Mapping[str, Any] | None], dict[str, Any]],
    timeout: float = _TIMEOUT,
) -> int:
    """Move up to *limit* messages (all when None) from queue *source* to queue *dest*
    on *channel* (publisher confirms on), each with ``headers(its headers)`` (for a
    replay: :func:`workerrmq.core.protocol.replay_headers`).

    A message leaves *source* only after *dest* confirmed its copy; one *dest* did not
    take goes back to *source* and ends the move with :class:`RepublishFailed`. A
    missing *source* raises ``aiormq.exceptions.ChannelNotFoundEntity``. Returns how
    many moved.
    """
    await channel.queue_declare(source, passive=True, timeout=timeout)
    moved = 0
    while limit is None or moved < limit:
        wanted = _MOVE_BATCH if limit is None else min(_MOVE_BATCH, limit - moved)
        batch = await _take(channel, source, wanted, timeout)
        if not batch:
            break
        results = await asyncio.gather(
            *(
                _confirmed(
                    channel,
                    m.body,
                    copied_properties(
                        m,
                        headers(m.header.properties.headers),
                        m.header.properties.message_id or None,
                    ),
                    exchange="",
                    routing_key=dest,
                    timeout=timeout,
                )
                for m in batch
            ),
            return_exceptions=True,
        )
        for message, result in zip(batch, results, strict=True):
            tag = message.delivery_tag
            assert tag is not None  # a delivery (not a return) always has one
            if result is None:
                await channel.basic_ack(tag)
                moved += 1
            else:
                await channel.basic_nack(tag, requeue=True)
        if any(result is not None for result in results):
            raise RepublishFailed(f"queue {dest!r} did not take the messages")
    return moved


@dataclasses.dataclass(frozen=True)
class Sifted:
    """What a :func:`sift` did: how many messages it looked at, matched and moved (or
    discarded), and how many the source queue holds after it."""

    seen: int
    matched: int
    moved: int
    remaining: int


async def sift(
    channel: aiormq.abc.AbstractChannel,
    source: str,
    dest: str | None,
    match: Callable[[DeliveredMessage], bool],
    limit: int | None,
    *,
    headers: Callable[[Mapping[str, Any] | None], dict[str, Any]],
    timeout: float = _TIMEOUT,
) -> Sifted:
    """Move the messages of queue *source* that *match* to queue *dest* (up to *limit*;
    all when None), or discard them when *dest* is None, in one pass over the messages
    *source* holds when it starts; the others stay where they are.

    The others are never republished: each is taken (``basic.get``, unacked) and held,
    only its delivery tag kept, until the pass ends, when one ``basic.nack`` (multiple,
    requeue) hands them all back. RabbitMQ puts a requeued message back at its place, so
    they keep their order, and if the process dies mid-pass the broker hands them back
    the same way: none is lost or copied. A matching message is acked only once *dest*
    confirmed its copy, one at a time: a process that dies between a confirm and its ack
    leaves at most that one message in both queues. Messages dead-lettered during the
    pass are not looked at. Raises as :func:`move` does.
    """
    declared = await channel.queue_declare(source, passive=True, timeout=timeout)
    todo = declared.message_count or 0
    seen = matched = moved = 0
    last_held: int | None = None
    try:
        while seen < todo:
            message = await channel.basic_get(source, no_ack=False, timeout=timeout)
            if not isinstance(message.delivery, Basic.GetOk):
                break
            seen += 1
            tag = message.delivery.delivery_tag
            assert tag is not None  # a basic.get-ok always has one
            selected = match(message)
            matched += selected
            if not selected or (limit is not None and moved >= limit):
                last_held = tag  # stays: handed back at the end of the pass
                continue
            if dest is not None:
                properties = copied_properties(
                    message, headers(message.header.properties.headers), message.header.properties.message_id
                )
                try:
                    await _confirmed(channel, message.body, properties, exchange="", routing_key=dest)
                except RepublishFailed:
                    last_held = tag  # handed back below, in its place
                    raise
            await channel.basic_ack(tag)
            moved += 1
    finally:
        if last_held is not None and not channel.is_closed:
            await channel.basic_nack(last_held, multiple=True, requeue=True)
    return Sifted(
        seen=seen,
        matched=matched,
        moved=moved,
        remaining=await _depth(channel, source, seen - moved, timeout),
    )


async def _depth(channel: aiormq.abc.AbstractChannel, queue: str, at_least: int, timeout: float) -> int:
    """How many messages *queue* holds, once the *at_least* just handed back are counted:
    the queue takes a requeue after the channel answered, so an early count misses some."""
    deadline = asyncio.get_running_loop().time() + min(timeout, 5.0)
    while True:
        declared = await channel.queue_declare(queue, passive=True, timeout=timeout)
        count = declared.message_count or 0
        if count >= at_least or asyncio.get_running_loop().time() >= deadline:
            return count
        await asyncio.sleep(0.01)


async def _take(
    channel: aiormq.abc.AbstractChannel, queue: str, count: int, timeout: float
) -> list[DeliveredMessage]:
    """Up to *count* messages from *queue*, unacked."""
    taken = []
    for _ in range(count):
        message = await channel.basic_get(queue, no_ack=False, timeout=timeout)
        if not isinstance(message.delivery, Basic.GetOk):
            break
        taken.append(message)
    return taken


def _amqp(connection: AbstractConnection) -> aiormq.abc.AbstractConnection:
    """aiormq's connection under aio-pika's."""
    transport = connection.transport
    if transport is None:
        raise aiormq.exceptions.ConnectionClosed(320, "the connection is closed")
    return transport.connection
