"""Replies: a consumer with ``reply`` publishes the endpoint's 2xx answer to the message's
``reply_to``, with its ``correlation_id``, before the message is acked (real broker, real
endpoint, a pika RPC client)."""

from __future__ import annotations

import uuid

import pika
import pytest

from tests.support import wait_for
from workerrmq.core import protocol
from workerrmq.worker.delivery import REPLY_MAX

ANSWER = (200, {"Content-Type": "application/json"}, b'{"answer": 42}')


def publish(amqp, queue: str, body: bytes, **properties) -> None:
    amqp.confirm_delivery()
    amqp.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties), mandatory=True)


def drained(amqp, queue: str) -> bool:
    """True once *queue* holds nothing, ready or unacked."""
    return amqp.queue_declare(queue, passive=True).method.message_count == 0


@pytest.fixture
def replying(settings, start_engine, endpoint, make_consumer):
    """A running consumer with ``reply: true``; returns (runner, queue)."""
    endpoint.respond = lambda _r: ANSWER
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, reply=True, initial_delay=0.05, max_delay=0.25)
    return worker.runner(consumer["id"]), queue


def test_reply_reaches_a_named_queue_with_the_correlation_id(replying, endpoint, amqp):
    runner, queue = replying
    reply_queue = amqp.queue_declare("", exclusive=True).method.queue
    publish(amqp, queue, b'{"q": 1}', reply_to=reply_queue, correlation_id="corr-1", message_id="m-1")

    method, props, body = wait_for(
        lambda: (got := amqp.basic_get(reply_queue, auto_ack=True))[0] and got, what="the reply"
    )
    assert body == b'{"answer": 42}'
    assert props.correlation_id == "corr-1"
    assert props.content_type == "application/json"
    assert endpoint.received[0].headers["X-WorkerRMQ-Correlation-Id"] == "corr-1"
    wait_for(lambda: drained(amqp, queue), what="the message acked")
    wait_for(lambda: runner.stats.replies == 1, what="the reply counted")  # counted after its confirm
    assert runner.stats.replies_unroutable == 0


def test_reply_reaches_a_direct_reply_to_rpc_client(replying, broker):
    """The RabbitMQ RPC pattern: the client consumes amq.rabbitmq.reply-to (auto-ack) and
    publishes its request with reply_to set to it, on the same channel."""
    runner, queue = replying
    connection = pika.BlockingConnection(pika.URLParameters(broker))
    try:
        channel = connection.channel()
        replies: list[tuple[pika.BasicProperties, bytes]] = []
        channel.basic_consume(
            "amq.rabbitmq.reply-to", lambda _c, _m, props, body: replies.append((props, body)), auto_ack=True
        )
        correlation_id = uuid.uuid4().hex
        channel.basic_publish(
            "",
            queue,
            b'{"q": "direct"}',
            pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=correlation_id),
        )

        def answered() -> bool:
            connection.process_data_events(time_limit=0.1)
            return bool(replies)

        wait_for(answered, what="the direct reply")
    finally:
        connection.close()
    props, body = replies[0]
    assert body == b'{"answer": 42}'
    assert props.correlation_id == correlation_id
    assert props.content_type == "application/json"
    wait_for(lambda: runner.stats.replies == 1, what="the reply counted")  # counted after its confirm


def test_no_reply_to_means_no_reply_and_the_message_is_acked(replying, endpoint, amqp):
    runner, queue = replying
    publish(amqp, queue, b"{}", correlation_id="c-2")
    wait_for(endpoint.count, what="the delivery")
    wait_for(lambda: drained(amqp, queue), what="the message acked")
    assert runner.stats.delivered == 1
    assert runner.stats.replies == 0 and runner.stats.replies_unroutable == 0


def test_unroutable_reply_is_counted_and_the_message_acked(replying, endpoint, amqp):
    runner, queue = replying
    publish(amqp, queue, b"{}", reply_to=f"nobody-{uuid.uuid4().hex}", correlation_id="c-3")
    wait_for(lambda: runner.stats.replies_unroutable == 1, what="the unroutable reply counted")
    wait_for(lambda: drained(amqp, queue), what="the message acked")
    assert endpoint.count() == 1  # acked, not handed back and delivered again
    assert runner.stats.replies == 0


def test_a_reply_to_the_broker_cannot_decode_harms_no_other_message(replying, endpoint, amqp):
    """RabbitMQ 3.x closes the connection on a direct reply-to name it cannot decode: that
    costs the reply (counted unroutable), not the worker's connection nor other messages."""
    runner, queue = replying
    publish(amqp, queue, b"{}", reply_to="amq.rabbitmq.reply-to.g1h2AA==.x", correlation_id="bad")
    wait_for(lambda: runner.stats.replies_unroutable == 1, what="the poisoned reply counted")
    reply_queue = amqp.queue_declare("", exclusive=True).method.queue
    publish(amqp, queue, b"{}", reply_to=reply_queue, correlation_id="after")
    _, props, _ = wait_for(
        lambda: (got := amqp.basic_get(reply_queue, auto_ack=True))[0] and got, what="the next reply"
    )
    assert props.correlation_id == "after"
    wait_for(lambda: drained(amqp, queue), what="both messages acked")
    assert endpoint.count() == 2
    assert runner.status == "consuming"


def test_an_answer_over_the_reply_limit_is_dead_lettered(replying, endpoint, amqp):
    runner, queue = replying
    endpoint.respond = lambda _r: (200, {"Content-Type": "text/plain"}, b"x" * (REPLY_MAX + 1))
    reply_queue = amqp.queue_declare("", exclusive=True).method.queue
    publish(amqp, queue, b"{}", reply_to=reply_queue, message_id="big")
    wait_for(lambda: runner.stats.dead_lettered == 1, what="the message dead-lettered")
    method, props, _ = amqp.basic_get(f"{queue}.dlq", auto_ack=True)
    assert method is not None and props.message_id == "big"
    assert "reply takes at most" in props.headers[protocol.LAST_ERROR]
    assert amqp.basic_get(reply_queue, auto_ack=True)[0] is None
    assert endpoint.count() == 1
