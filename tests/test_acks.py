"""The Settler batches a channel's acks without acking anything it should not: real RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiormq
import pika
import pytest
from aiormq.abc import DeliveredMessage

from tests.support import wait_for
from workerrmq.worker.acks import Settler


@pytest.fixture
def filled_queue(amqp, queue_name) -> Callable[[int], str]:
    """A new queue holding *n* persistent messages with bodies b"0", b"1", ..."""

    def make(n: int) -> str:
        queue = queue_name("acks")
        amqp.queue_declare(queue, durable=True)
        amqp.confirm_delivery()
        for i in range(n):
            amqp.basic_publish("", queue, str(i).encode(), pika.BasicProperties(delivery_mode=2))
        return queue

    return make


async def _get(channel, queue: str, timeout: float = 10) -> bytes:
    """The next ready message of *queue* (polled until *timeout*), taken with no ack."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await channel.basic_get(queue, no_ack=True)
        if got.delivery_tag is not None:
            return got.body
        assert asyncio.get_running_loop().time() < deadline, "nothing came back to the queue"
        await asyncio.sleep(0.02)


async def _consume(broker: str, queue: str, n: int):
    """Open a channel, consume *n* deliveries (unacked); returns (connection, channel, deliveries)."""
    connection = await aiormq.connect(broker)
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=n)
    deliveries: list[DeliveredMessage] = []
    got_all = asyncio.Event()

    async def on_message(message: DeliveredMessage) -> None:
        deliveries.append(message)
        if len(deliveries) == n:
            got_all.set()

    await channel.basic_consume(queue, on_message, no_ack=False)
    await asyncio.wait_for(got_all.wait(), 10)
    return connection, channel, sorted(deliveries, key=lambda m: m.delivery.delivery_tag)


async def _settling(broker: str, queue: str, n: int):
    """:func:`_consume`, with a Settler that tracks every delivery; returns
    (connection, channel, settler, delivery tags)."""
    connection, channel, deliveries = await _consume(broker, queue, n)
    settler = Settler(channel)
    tags = [m.delivery.delivery_tag for m in deliveries]
    for tag in tags:
        settler.track(tag)
    return connection, channel, settler, tags


def _ready(amqp, queue: str) -> int:
    return amqp.queue_declare(queue, passive=True).method.message_count


def test_a_run_at_the_head_is_one_multiple_ack(broker, amqp, filled_queue):
    queue = filled_queue(6)

    async def scenario() -> int:
        connection, _, settler, tags = await _settling(broker, queue, 6)
        for tag in tags[:5]:  # tags 1..5, decided in one loop turn
            settler.ack(tag)
        await settler.flush()
        frames = settler.frames_sent
        await connection.close()  # the undecided sixth goes back to the queue
        return frames

    assert asyncio.run(scenario()) == 1
    wait_for(lambda: _ready(amqp, queue) == 1, timeout=10, what="the unacked message to return")
    _, _, body = amqp.basic_get(queue, auto_ack=True)
    assert body == b"5"


def test_decisions_of_several_loop_turns_share_a_frame(broker, amqp, filled_queue):
    queue = filled_queue(4)

    async def scenario() -> int:
        connection, _, settler, tags = await _settling(broker, queue, 4)
        for tag in tags:  # one per loop turn, as HTTP answers come in
            settler.ack(tag)
            await asyncio.sleep(0)
        await settler.flush()
        await connection.close()
        return settler.frames_sent

    assert asyncio.run(scenario()) == 1
    assert _ready(amqp, queue) == 0


def test_acks_behind_a_slow_delivery_are_not_held_back(broker, amqp, filled_queue):
    queue = filled_queue(6)

    async def scenario() -> None:
        connection, _, settler, tags = await _settling(broker, queue, 6)
        # Tags 1 and 4 are still in flight; 2, 3, 5, 6 are done and must be acked now.
        for tag in (tags[1], tags[2], tags[4], tags[5]):
            settler.ack(tag)
        await settler.flush()
        assert settler.frames_sent == 4
        settler.ack(tags[0])  # the head finishes: acked alone, 4 stays unsettled
        await settler.flush()
        assert settler.frames_sent == 5
        await connection.close()

    asyncio.run(scenario())
    wait_for(lambda: _ready(amqp, queue) == 1, timeout=10, what="the unacked message to return")
    _, _, body = amqp.basic_get(queue, auto_ack=True)
    assert body == b"3"  # the fourth message: nothing else was lost or left over
    assert _ready(amqp, queue) == 0


def test_a_requeue_between_acks_keeps_its_place_in_the_frames(broker, amqp, filled_queue):
    queue = filled_queue(3)

    async def scenario() -> bytes:
        connection, channel, settler, tags = await _settling(broker, queue, 3)
        # Stop consuming first, so that a requeued message stays in the queue for us.
        await channel.basic_cancel(next(iter(channel.consumers)))
        settler.ack(tags[0])
        settler.requeue(tags[1])
        settler.ack(tags[2])
        await settler.flush()
        # ack 1 (multiple), nack 2, ack 3 (multiple): 3 must not swallow the requeued 2.
        assert settler.frames_sent == 3
        body = await _get(channel, queue)
        await connection.close()
        return body

    assert asyncio.run(scenario()) == b"1"
    assert _ready(amqp, queue) == 0


def test_a_skipped_tag_is_requeued_not_acked(broker, amqp, filled_queue):
    queue = filled_queue(3)

    async def scenario() -> bytes:
        connection, channel, deliveries = await _consume(broker, queue, 3)
        await channel.basic_cancel(next(iter(channel.consumers)))
        settler = Settler(channel)
        # Delivery 2 went to a consumer tag the client no longer knew: never seen.
        settler.track(deliveries[0].delivery.delivery_tag)
        settler.track(deliveries[2].delivery.delivery_tag)
        settler.ack(deliveries[0].delivery.delivery_tag)
        settler.ack(deliveries[2].delivery.delivery_tag)
        await settler.flush()
        # While this channel is still open, the skipped message is back in the queue.
        body = await _get(await connection.channel(), queue)
        await connection.close()
        return body

    assert asyncio.run(scenario()) == b"1"
    assert _ready(amqp, queue) == 0
