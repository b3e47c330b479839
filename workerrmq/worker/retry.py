"""Where a failed delivery goes: a delay queue (to come back later) or the dead-letter queue.

Delay queues are tiered by wait (see :data:`~workerrmq.core.policy.DELAY_TIERS`).
Each tier is a fanout exchange and a durable queue of that name, whose fixed
TTL dead-letters messages through the default exchange with their original
routing key, which is the source queue's name. All messages in a tier wait
the same time, so expiry at the head never blocks another message.
"""

from __future__ import annotations

import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.commands import Basic

from workerrmq.core import protocol
from workerrmq.core.policy import DELAY_TIERS

__all__ = ["FailureRouter", "RouteFailed", "copy_message", "tier_name"]

log = logging.getLogger(__name__)


class RouteFailed(Exception):
    """The broker did not confirm the republish; the message must not be acked."""


def tier_name(seconds: float) -> str:
    return f"workerrmq.delay.{round(seconds * 1000)}ms"


def copy_message(
    message: AbstractIncomingMessage, headers: dict[str, Any], message_id: str | None
) -> aio_pika.Message:
    """*message* as a new persistent message with *headers*, to publish again."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        user_id=None,  # the broker checks user_id against our login; drop it
    )


class FailureRouter:
    """Republishes failed messages with publisher confirms, on its own channel."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        # Queues whose home node was down when declared (a cluster): they exist, so they are
        # not declared again on this connection, which would fail the same way.
        self.unavailable: set[str] = set()

    @classmethod
    async def open(cls, connection: aio_pika.abc.AbstractConnection) -> FailureRouter:
        """Declare the delay tiers. In a cluster, a tier whose home node is down is skipped:
        it exists, and until its node is back a retry to it is unroutable, so the failed
        message is not acked and comes back (see :class:`RouteFailed`)."""
        channel = await connection.channel(publisher_confirms=True)
        for seconds in DELAY_TIERS:
            name = tier_name(seconds)
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
            try:
                queue = await channel.declare_queue(
                    name,
                    durable=True,
                    arguments={"x-message-ttl": round(seconds * 1000), "x-dead-letter-exchange": ""},
                )
            except aiormq.exceptions.ChannelNotFoundEntity as exc:  # "home node ... is down"
                log.warning("delay queue %s unavailable: %s", name, exc.args[0] if exc.args else exc)
                channel = await connection.channel(publisher_confirms=True)  # the error closed it
                continue
            await queue.bind(exchange)
        return cls(channel)

    def note_unavailable(self, queue: str, exc: aiormq.exceptions.ChannelNotFoundEntity) -> bool:
        """Remember *queue* if *exc* says its home node is down; True if it did."""
        reason = str(exc.args[0] if exc.args else exc)
        if "home node" not in reason:
            return False
        log.warning("queue %s unavailable, not declared again on this connection: %s", queue, reason)
        self.unavailable.add(queue)
        return True

    async def retry(
        self,
        message: AbstractIncomingMessage,
        *,
        queue: str,
        message_id: str,
        attempts: int,
        tier: float,
    ) -> None:
        """Send *message* back to *queue* after *tier* seconds, counting *attempts* made."""
        headers = protocol.retry_headers(message.headers, attempts)
        exchange = await self.channel.get_exchange(tier_name(tier), ensure=False)
        await self._confirm(exchange, copy_message(message, headers, message_id), queue)

    async def dead_letter(
        self,
        message: AbstractIncomingMessage,
        *,
        dlq: str,
        source_queue: str,
        message_id: str,
        attempts: int,
        status: int | None,
        error: str,
        consumer: str,
    ) -> None:
        """Park *message* in *dlq* with why it failed in its headers."""
        headers = protocol.dead_letter_headers(
            message.headers,
            attempts=attempts,
            source_queue=source_queue,
            consumer=consumer,
            status=status,
            error=error,
        )
        await self._confirm(self.channel.default_exchange, copy_message(message, headers, message_id), dlq)

    async def _confirm(
        self, exchange: aio_pika.abc.AbstractExchange, message: aio_pika.Message, routing_key: str
    ) -> None:
        try:
            result = await exchange.publish(message, routing_key, mandatory=True, timeout=10)
        except Exception as exc:
            raise RouteFailed(f"republish failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(result, Basic.Ack):
            raise RouteFailed(f"republish to {routing_key!r} was not routed")
