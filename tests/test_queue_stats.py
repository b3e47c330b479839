"""Queue figures that do not lag: the ready count and the consumer count are read live over
AMQP (a passive declare), where the management API's are a sample up to 5 s old; and each
view says which it is with ``stats_age_seconds``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pika

from tests.support import wait_for
from workerrmq.errors import BrokerUnavailable
from workerrmq.services.queues import QueueService


def put(amqp, name: str, count: int) -> None:
    for n in range(count):
        amqp.basic_publish("", name, f"m{n}".encode())
    wait_for(
        lambda: amqp.queue_declare(name, passive=True).method.message_count == count,
        timeout=5,
        what="messages queued",
    )


def test_depth_and_consumers_are_read_live_right_after_a_change(client, admin, queue_name, broker, amqp):
    name, idle = queue_name(), queue_name()
    for queue in (name, idle):
        assert client.post("/api/v1/queues", json={"name": queue}, headers=admin).status_code == 201
    # Straight after: the management API still holds its sample of the empty queues for a few
    # seconds (its statistics interval), so these figures can only come from the broker itself.
    put(amqp, name, 3)
    one = client.get(f"/api/v1/queues/{name}", headers=admin).json
    assert (one["messages_ready"], one["messages"], one["stats_age_seconds"]) == (3, 3, 0)
    other = pika.BlockingConnection(pika.URLParameters(broker))
    try:
        other.channel().basic_consume(idle, lambda *_: None)
        [listed] = client.get(f"/api/v1/queues?name={idle}", headers=admin).json["items"]
        assert (listed["consumers"], listed["stats_age_seconds"]) == (1, 0)
    finally:
        other.close()
    assert client.get(f"/api/v1/queues/{idle}", headers=admin).json["consumers"] == 0
    amqp.queue_purge(name)
    put(amqp, name, 2)
    [listed] = client.get(f"/api/v1/queues?name={name}", headers=admin).json["items"]
    assert (listed["messages_ready"], listed["messages"]) == (2, 2)


def test_without_the_broker_the_sample_stands_and_says_so(mgmt, queue_name, amqp):
    """AMQP unreachable while the management API answers: the sampled figures, labelled null."""
    name = queue_name()
    amqp.queue_declare(name, durable=True)

    def unreachable(_names: Sequence[str]) -> dict[str, tuple[int, int]]:
        raise BrokerUnavailable("RabbitMQ unreachable (test)")

    queues = QueueService(mgmt, unreachable)
    assert queues.get(name)["stats_age_seconds"] is None
    assert all(q["stats_age_seconds"] is None for q in queues.list(name=name)["items"])
    assert QueueService(mgmt).get(name)["stats_age_seconds"] is None  # no AMQP at all


def test_a_long_listing_is_the_sample_throughout(mgmt, queue_name, amqp):
    """Past live_max queues a listing reads nothing live: a dashboard polling 500 queues every
    few seconds would otherwise make 500 passive declares each time."""
    prefix = f"long-{uuid.uuid4().hex[:10]}"
    for _ in range(3):
        amqp.queue_declare(queue_name(prefix), durable=True)  # deleted by the fixture
    asked: list[Sequence[str]] = []

    def counts(names: Sequence[str]) -> dict[str, tuple[int, int]]:
        asked.append(names)
        return {name: (0, 0) for name in names}

    def listed(service: QueueService) -> list[object]:
        items = wait_for(
            lambda: (found := service.list(name=prefix)["items"]) and len(found) == 3 and found,
            timeout=15,
            what="the three queues in the management API's listing",
        )
        return [q["stats_age_seconds"] for q in items]

    assert listed(QueueService(mgmt, counts, live_max=3)) == [0, 0, 0]
    assert len(asked) >= 1
    asked.clear()
    assert listed(QueueService(mgmt, counts, live_max=2)) == [None, None, None]
    assert asked == []
