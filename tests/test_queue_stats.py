"""Queue figures that do not lag: the ready count and the consumer count are read live over
AMQP (a passive declare), where the management API's are a sample up to 5 s old; and each
view says which it is with ``stats_age_seconds``."""

from __future__ import annotations

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
