"""Batches: a consumer with ``batch`` sends up to ``max_messages`` messages in one request
(real broker, real endpoint); a failed batch ends as single retries, nothing lost."""

from __future__ import annotations

import base64
import json

import pika
from standardwebhooks.webhooks import Webhook

from tests.support import wait_for
from workerrmq.worker.batch import BATCH_BYTES_MAX

SECRET = "whsec_" + base64.b64encode(b"batch-test-secret-0123456789").decode()


def publish_many(amqp, queue: str, bodies: list[bytes], **properties) -> list[str]:
    """Publish *bodies* with ids b-0, b-1, ...; returns the ids."""
    amqp.confirm_delivery()
    ids = []
    for n, body in enumerate(bodies):
        ids.append(f"b-{n}")
        amqp.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(delivery_mode=2, message_id=f"b-{n}", headers={"n": n}, **properties),
            mandatory=True,
        )
    return ids


def is_batch(received) -> bool:
    return received.headers["X-WorkerRMQ-Message-Id"].startswith("batch_")


def items(received) -> list[dict]:
    if received.headers["Content-Type"] == "application/x-ndjson":
        return [json.loads(line) for line in received.body.decode().splitlines()]
    return json.loads(received.body)


def drained(amqp, queue: str) -> bool:
    return amqp.queue_declare(queue, passive=True).method.message_count == 0


def test_a_batch_of_100_is_one_signed_request(settings, start_engine, endpoint, make_consumer, amqp):
    worker = start_engine(settings)
    consumer, queue = make_consumer(
        endpoint.url,
        batch={"max_messages": 100, "max_wait_ms": 20_000},
        concurrency=1,
        signing_secret=SECRET,
    )
    runner = worker.runner(consumer["id"])
    ids = publish_many(
        amqp, queue, [json.dumps({"n": n}).encode() for n in range(100)], content_type="application/json"
    )

    wait_for(endpoint.count, what="the batch")
    # The endpoint records a request before it answers, and the queue's count leaves out
    # the messages the worker holds unacked: neither says the worker has the answer yet.
    wait_for(lambda: runner.stats.delivered == 100, what="the batch's answer")
    wait_for(lambda: runner.report().in_flight == 0, what="the batch's deliveries done")
    worker.stop()
    assert drained(amqp, queue)  # acked: the stop would have handed back what was not
    assert endpoint.count() == 1
    request = endpoint.received[0]
    assert request.headers["Content-Type"] == "application/json"
    got = items(request)
    assert [item["id"] for item in got] == ids
    assert got[7]["body"] == {"n": 7} and "base64" not in got[7]
    assert got[7]["headers"] == {"n": 7} and got[7]["routing_key"] == queue
    assert got[7]["content_type"] == "application/json"
    # Signed over the exact bytes, with the batch's id as webhook-id.
    Webhook(SECRET).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == request.headers["X-WorkerRMQ-Message-Id"]


def test_max_wait_sends_a_partial_batch(settings, start_engine, endpoint, make_consumer, amqp):
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, batch={"max_messages": 100, "max_wait_ms": 100})
    worker.runner(consumer["id"])
    ids = publish_many(amqp, queue, [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}'], content_type="application/json")

    # Only the wait can send them: the batch never fills.
    wait_for(lambda: sum(len(items(r)) for r in endpoint.received) == 3, what="the partial batch")
    assert all(is_batch(r) for r in endpoint.received)
    assert sorted(item["id"] for r in endpoint.received for item in items(r)) == ids
    wait_for(lambda: drained(amqp, queue), what="the messages acked")


def test_ndjson_with_bodies_that_are_not_json(settings, start_engine, endpoint, make_consumer, amqp):
    worker = start_engine(settings)
    consumer, queue = make_consumer(
        endpoint.url, batch={"max_messages": 3, "max_wait_ms": 20_000, "encoding": "ndjson"}
    )
    worker.runner(consumer["id"])
    bodies = [b'{"multi":\n "line"}', b"\x00\xffnot json", b"[1, 2]"]
    publish_many(amqp, queue, bodies)

    wait_for(endpoint.count, what="the batch")
    request = endpoint.received[0]
    assert request.headers["Content-Type"] == "application/x-ndjson"
    lines = request.body.decode().splitlines()
    assert len(lines) == 3
    got = items(request)
    assert got[0]["body"] == {"multi": "line"} and "base64" not in got[0]
    assert got[1]["base64"] is True and base64.b64decode(got[1]["body_base64"]) == bodies[1]
    assert "body" not in got[1]
    assert got[2]["body"] == [1, 2]


def test_a_failing_batch_ends_as_single_retries_nothing_lost(
    settings, start_engine, endpoint, make_consumer, amqp
):
    """The endpoint refuses the batch; alone, every message is taken except a poison one,
    which is dead-lettered by itself."""

    def respond(received):
        if is_batch(received):
            return 500, {}
        return (400, {}) if received.message_id == "b-3" else (200, {})

    endpoint.respond = respond
    worker = start_engine(settings)
    consumer, queue = make_consumer(
        endpoint.url,
        batch={"max_messages": 10, "max_wait_ms": 20_000},
        max_attempts=3,
        initial_delay=0.05,
        max_delay=0.25,
    )
    runner = worker.runner(consumer["id"])
    ids = publish_many(amqp, queue, [json.dumps({"n": n}).encode() for n in range(10)])

    wait_for(lambda: runner.stats.delivered == 9 and runner.stats.dead_lettered == 1, what="the singles")
    wait_for(lambda: drained(amqp, queue), what="the queue drained")
    batches = [r for r in endpoint.received if is_batch(r)]
    singles = [r for r in endpoint.received if not is_batch(r)]
    assert len(batches) == 1 and len(items(batches[0])) == 10
    assert sorted(endpoint.delivered_ids()) == sorted(set(ids) - {"b-3"})
    assert all(r.headers["X-WorkerRMQ-Attempt"] == "2" for r in singles)  # the batch was attempt 1
    assert [r.message_id for r in singles].count("b-3") == 1  # a 400 alone is not retried
    method, props, body = amqp.basic_get(f"{queue}.dlq", auto_ack=True)
    assert method is not None and props.message_id == "b-3" and body == b'{"n": 3}'
    assert amqp.basic_get(f"{queue}.dlq", auto_ack=True)[0] is None


def test_a_stop_sends_the_partial_batch(settings, start_engine, endpoint, make_consumer, amqp):
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, batch={"max_messages": 100, "max_wait_ms": 60_000})
    runner = worker.runner(consumer["id"])
    publish_many(amqp, queue, [b"{}", b"{}", b"{}"])
    wait_for(lambda: runner.report().in_flight == 3, what="the batch collecting")

    worker.stop()
    assert endpoint.count() == 1 and len(items(endpoint.received[0])) == 3
    assert drained(amqp, queue)


def test_a_batch_is_sent_once_its_bodies_reach_the_byte_cap(
    settings, start_engine, endpoint, make_consumer, amqp
):
    """Big bodies make several requests of at most about BATCH_BYTES_MAX, not one huge one."""
    worker = start_engine(settings)
    consumer, queue = make_consumer(
        endpoint.url, batch={"max_messages": 1000, "max_wait_ms": 20_000}, concurrency=2
    )
    worker.runner(consumer["id"])
    size = BATCH_BYTES_MAX // 4 + 1  # four of these pass the cap
    ids = publish_many(amqp, queue, [bytes([65 + n]) * size for n in range(8)])

    wait_for(lambda: sum(len(items(r)) for r in endpoint.received) == 8, what="every message sent")
    wait_for(lambda: drained(amqp, queue), what="the messages acked")
    assert all(is_batch(r) for r in endpoint.received)
    assert [len(items(r)) for r in endpoint.received] == [4, 4]
    assert sorted(item["id"] for r in endpoint.received for item in items(r)) == ids
