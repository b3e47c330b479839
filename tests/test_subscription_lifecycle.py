"""A ``source`` consumer's life beside its own queue ``wrmq.<name>``: a rename is refused (the
queue is named after the consumer), and deleting the queue with the consumer lets the
deliveries in flight end as they would have; real RabbitMQ, a real worker and endpoint."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.endpoint import Endpoint
from tests.support import wait_for
from workerrmq.errors import NotFound


@pytest.fixture
def fanout(client, admin, mgmt) -> Iterator[str]:
    name = f"t-life-{uuid.uuid4().hex[:10]}"
    response = client.post("/api/v1/exchanges", json={"name": name, "type": "fanout"}, headers=admin)
    assert response.status_code == 201, response.json
    yield name
    with contextlib.suppress(NotFound):
        mgmt.delete_exchange(name, if_unused=False)


@pytest.fixture
def subscriber(client, admin, mgmt, fanout) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create a consumer of *fanout* with a source; its queues are deleted after the test."""
    names: list[str] = []

    def make(target_url: str = "http://127.0.0.1:9/", **fields: Any) -> dict[str, Any]:
        names.append(f"life-{uuid.uuid4().hex[:10]}")
        body = {"name": names[-1], "source": {"exchange": fanout, "binding_keys": [""]}, **fields}
        response = client.post("/api/v1/consumers", json={**body, "target_url": target_url}, headers=admin)
        assert response.status_code == 201, response.json
        return response.json  # type: ignore[no-any-return]

    yield make
    for name in names:
        for queue in (f"wrmq.{name}", f"wrmq.{name}.dlq"):
            with contextlib.suppress(NotFound):
                mgmt.delete_queue(queue, if_empty=False, if_unused=False)


def test_renaming_a_source_consumer_is_refused(client, admin, mgmt, subscriber):
    consumer = subscriber()
    renamed = client.patch(
        f"/api/v1/consumers/{consumer['id']}", json={"name": "another-name"}, headers=admin
    )
    assert renamed.status_code == 400
    assert renamed.json["error"]["field"] == "name"
    assert f"wrmq.{consumer['name']}" in renamed.json["error"]["message"]
    assert client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).json["name"] == consumer["name"]
    assert client.get("/api/v1/consumers/another-name", headers=admin).status_code == 404
    mgmt.get_queue(consumer["queue"])
    # Sent back as read, the name is no change.
    same = client.patch(f"/api/v1/consumers/{consumer['id']}", json={"name": consumer["name"]}, headers=admin)
    assert same.status_code == 200, same.json


@pytest.mark.parametrize(("status", "outcome"), [(200, "delivered"), (500, "dead_lettered")])
def test_deleting_the_queue_lets_a_delivery_in_flight_end(
    settings, client, admin, mgmt, amqp, fanout, subscriber, start_engine, status, outcome
):
    with Endpoint() as endpoint:
        endpoint.delay = 1.0  # the request is in flight while the queue is deleted
        endpoint.respond = lambda _r: (status, {})
        consumer = subscriber(endpoint.url, max_attempts=1)
        worker = start_engine(settings)
        worker.runner(consumer["id"])
        published = client.post(
            f"/api/v1/exchanges/{fanout}/messages", json={"routing_key": "", "body": "hi"}, headers=admin
        )
        assert published.status_code == 201, published.json
        wait_for(lambda: endpoint.count() == 1, what="the request to reach the endpoint")

        deleted = client.delete(f"/api/v1/consumers/{consumer['id']}?delete_queue=true", headers=admin)
        assert deleted.status_code == 204
        with pytest.raises(NotFound):
            mgmt.get_queue(consumer["queue"])

        # The worker waited for the answer and recorded what became of the message.
        stats = worker.engine.stats[consumer["id"]]
        wait_for(lambda: getattr(stats, outcome) == 1, what=f"the message to be {outcome}")
        assert endpoint.received[0].status == status
        if status == 500:  # its last attempt failed: it waits in the dead-letter queue, kept
            dead = amqp.queue_declare(consumer["dead_letter_queue"], passive=True).method
            assert dead.message_count == 1
        assert "stop failed" not in worker.log_text()
