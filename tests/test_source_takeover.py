"""A consumer with a source takes the queue ``wrmq.<its name>`` it finds, rebinds it and may
delete it: such a queue cannot be made any other way through the API, so no one's queue is
taken over by naming a consumer after it. Real RabbitMQ."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from workerrmq.errors import NotFound


def test_a_wrmq_queue_cannot_be_made_but_by_a_source_consumer(client, admin, mgmt) -> None:
    name = f"tk-{uuid.uuid4().hex[:10]}"
    queue = f"wrmq.{name}"
    exchange = f"tk-x-{uuid.uuid4().hex[:8]}"
    try:
        made = client.post("/api/v1/queues", json={"name": queue, "type": "quorum"}, headers=admin)
        assert made.status_code == 400, made.json
        assert made.json["error"]["field"] == "name" and "wrmq." in made.json["error"]["message"]
        plain = client.post(
            "/api/v1/consumers",
            json={
                "name": f"{name}-p",
                "queue": queue,
                "create_queue": True,
                "target_url": "http://127.0.0.1:9/",
            },
            headers=admin,
        )
        assert plain.status_code == 400, plain.json
        assert plain.json["error"]["field"] == "queue"
        with contextlib.suppress(NotFound):
            assert mgmt.get_queue(queue) is None  # nothing was declared
        # The consumer with a source still declares its own.
        assert (
            client.post(
                "/api/v1/exchanges", json={"name": exchange, "type": "topic"}, headers=admin
            ).status_code
            == 201
        )
        own = client.post(
            "/api/v1/consumers",
            json={
                "name": name,
                "source": {"exchange": exchange, "binding_keys": ["a.*"]},
                "target_url": "http://127.0.0.1:9/",
            },
            headers=admin,
        )
        assert own.status_code == 201, own.json
        assert own.json["queue"] == queue
    finally:
        for doomed in (queue, f"{queue}.dlq"):
            with contextlib.suppress(NotFound):
                mgmt.delete_queue(doomed, if_empty=False, if_unused=False)
        with contextlib.suppress(NotFound):
            mgmt.delete_exchange(exchange, if_unused=False)


@pytest.mark.parametrize(
    ("exchange", "why"),
    [
        ("workerrmq.delay.1000ms", "internal exchange"),
        ("workerrmq.control", "internal exchange"),
        ("amq.rabbitmq.trace", "internal exchange"),
        ("amq.default", "takes no bindings"),  # was a 503 "refused WorkerRMQ's credentials"
    ],
)
def test_an_internal_exchange_is_no_source(client, admin, mgmt, exchange: str, why: str) -> None:
    """A consumer bound to a delay tier would get a copy of every consumer's retries; nothing
    is declared for a source refused."""
    name = f"tk-{uuid.uuid4().hex[:10]}"
    try:
        made = client.post(
            "/api/v1/consumers",
            json={
                "name": name,
                "source": {"exchange": exchange, "binding_keys": ["#"]},
                "target_url": "http://127.0.0.1:9/",
            },
            headers=admin,
        )
        assert made.status_code == 400, made.json
        assert made.json["error"]["field"] == "source" and why in made.json["error"]["message"]
        with pytest.raises(NotFound):
            mgmt.get_queue(f"wrmq.{name}")
    finally:
        for doomed in (f"wrmq.{name}", f"wrmq.{name}.dlq"):
            with contextlib.suppress(NotFound):
                mgmt.delete_queue(doomed, if_empty=False, if_unused=False)
