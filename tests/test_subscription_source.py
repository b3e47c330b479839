"""``source``: a consumer takes every matching message of an exchange through a queue of its
own (``wrmq.<name>``), declared and bound by the API; real RabbitMQ, real endpoints."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.endpoint import Endpoint
from tests.support import wait_for
from workerrmq.errors import NotFound

Post = Callable[..., dict[str, Any]]


@pytest.fixture
def exchange(client, admin, mgmt) -> Iterator[Callable[[str], str]]:
    """Exchanges of a type, made through the API and deleted afterwards."""
    names: list[str] = []

    def make(kind: str = "topic") -> str:
        name = f"t-src-{uuid.uuid4().hex[:10]}"
        response = client.post("/api/v1/exchanges", json={"name": name, "type": kind}, headers=admin)
        assert response.status_code == 201, response.json
        names.append(name)
        return name

    yield make
    for name in names:
        with contextlib.suppress(NotFound):
            mgmt.delete_exchange(name, if_unused=False)


@pytest.fixture
def source_consumer(client, admin, mgmt) -> Iterator[Callable[..., Any]]:
    """Create consumers with a source (returns the response); their queues are deleted afterwards."""
    names: list[str] = []

    def make(source: dict[str, Any], target_url: str = "http://127.0.0.1:9/", **fields: Any) -> Any:
        name = fields.pop("name", f"src-{uuid.uuid4().hex[:10]}")
        names.append(name)
        body = {"name": name, "source": source, "target_url": target_url, **fields}
        return client.post("/api/v1/consumers", json=body, headers=admin)

    yield make
    for name in names:
        for queue in (f"wrmq.{name}", f"wrmq.{name}.dlq"):
            with contextlib.suppress(NotFound):
                mgmt.delete_queue(queue, if_empty=False, if_unused=False)


def publish(client, admin, exchange: str, routing_key: str, body: str, **fields: Any) -> None:
    response = client.post(
        f"/api/v1/exchanges/{exchange}/messages",
        json={"routing_key": routing_key, "body": body, **fields},
        headers=admin,
    )
    assert response.status_code in (201, 404), response.json  # 404: routed to no queue


def bindings(mgmt, queue: str) -> set[tuple[str, str]]:
    return {(b["source"], b["routing_key"]) for b in mgmt.queue_bindings(queue) if b["source"]}


def test_two_consumers_of_one_topic_exchange_each_get_every_matching_message(
    settings, client, admin, mgmt, exchange, source_consumer, start_engine
):
    shop = exchange("topic")
    with Endpoint() as orders, Endpoint() as audit:
        first = source_consumer({"exchange": shop, "binding_keys": ["order.*"]}, orders.url)
        second = source_consumer({"exchange": shop, "binding_keys": ["order.created", "audit.#"]}, audit.url)
        assert first.status_code == 201, first.json
        assert second.status_code == 201, second.json
        queue = first.json["queue"]
        assert queue == f"wrmq.{first.json['name']}"
        assert first.json["source"] == {"exchange": shop, "binding_keys": ["order.*"]}
        declared = mgmt.get_queue(queue)
        assert declared["durable"] and declared["type"] == "quorum"
        assert bindings(mgmt, queue) == {(shop, "order.*")}

        worker = start_engine(settings)
        worker.runner(first.json["id"])
        worker.runner(second.json["id"])
        # Non-matching first: each queue is FIFO, so once the last matching message has
        # arrived, a non-matching one would have been delivered before it.
        publish(client, admin, shop, "user.created", "nobody")
        publish(client, admin, shop, "order.created", "both")
        publish(client, admin, shop, "order.paid", "orders only")
        publish(client, admin, shop, "audit.login.failed", "audit only")

        wait_for(lambda: len(orders.received) >= 2, what="the orders consumer's deliveries")
        wait_for(lambda: len(audit.received) >= 2, what="the audit consumer's deliveries")
        wait_for(lambda: mgmt.get_queue(queue).get("messages", 1) == 0, what="the queue to drain")
        assert sorted(orders.bodies()) == [b"both", b"orders only"]
        assert sorted(audit.bodies()) == [b"audit only", b"both"]
        assert orders.received[0].headers["X-WorkerRMQ-Queue"] == queue


@pytest.mark.parametrize(
    ("match", "expected"),
    [("all", [b"eu and gold"]), ("any", [b"eu only", b"eu and gold", b"gold only"])],
)
def test_a_headers_exchange_matches_all_or_any(
    settings, client, admin, mgmt, exchange, source_consumer, start_engine, endpoint, match, expected
):
    tenants = exchange("headers")
    created = source_consumer(
        {"exchange": tenants, "match": match, "headers": {"region": "eu", "tier": "gold"}}, endpoint.url
    )
    assert created.status_code == 201, created.json
    assert created.json["source"]["match"] == match
    [binding] = [b for b in mgmt.queue_bindings(created.json["queue"]) if b["source"]]
    assert binding["arguments"] == {"x-match": match, "region": "eu", "tier": "gold"}

    worker = start_engine(settings)
    worker.runner(created.json["id"])
    for body, headers in (
        ("neither", {"region": "us"}),
        ("eu only", {"region": "eu"}),
        ("eu and gold", {"region": "eu", "tier": "gold"}),
        ("gold only", {"tier": "gold"}),
        ("last", {"region": "eu", "tier": "gold", "end": True}),
    ):
        publish(client, admin, tenants, "", body, headers=headers)
    wait_for(lambda: b"last" in endpoint.bodies(), what="the last message")
    assert endpoint.bodies() == [*expected, b"last"]


def test_the_exchange_must_exist(client, admin, mgmt, source_consumer):
    missing, name = f"t-src-missing-{uuid.uuid4().hex[:8]}", f"src-{uuid.uuid4().hex[:8]}"
    response = source_consumer({"exchange": missing, "binding_keys": ["#"]}, name=name)
    assert response.status_code == 404
    assert missing in response.json["error"]["message"]
    with pytest.raises(NotFound):
        mgmt.get_queue(f"wrmq.{name}")
    assert client.get("/api/v1/consumers", headers=admin).json["total"] == 0


@pytest.mark.parametrize(
    ("kind", "source", "field"),
    [
        ("topic", {"match": "all", "headers": {"a": "1"}}, "source"),
        ("headers", {"binding_keys": ["a"]}, "source"),
    ],
)
def test_the_binding_must_suit_the_exchange_type(
    client, admin, exchange, source_consumer, kind, source, field
):
    response = source_consumer({"exchange": exchange(kind), **source})
    assert response.status_code == 400, response.json
    assert response.json["error"]["field"] == field
    assert kind in response.json["error"]["message"]


def test_patching_the_source_rebinds_the_queue(client, admin, mgmt, exchange, source_consumer):
    shop, other = exchange("topic"), exchange("direct")
    created = source_consumer({"exchange": shop, "binding_keys": ["a.*", "b.*"]})
    assert created.status_code == 201, created.json
    queue, ref = created.json["queue"], created.json["id"]

    response = client.patch(
        f"/api/v1/consumers/{ref}",
        json={"source": {"exchange": shop, "binding_keys": ["b.*", "c.#"]}},
        headers=admin,
    )
    assert response.status_code == 200, response.json
    assert bindings(mgmt, queue) == {(shop, "b.*"), (shop, "c.#")}
    assert response.json["version"] == 2

    response = client.patch(
        f"/api/v1/consumers/{ref}", json={"source": {"exchange": other, "binding_keys": ["x"]}}, headers=admin
    )
    assert response.status_code == 200, response.json
    assert bindings(mgmt, queue) == {(other, "x")}

    for changes, field in (
        ({"source": None}, "source"),
        ({"queue": "elsewhere"}, "queue"),
        ({"source": {"exchange": f"t-src-gone-{uuid.uuid4().hex[:6]}", "binding_keys": ["x"]}}, None),
    ):
        response = client.patch(f"/api/v1/consumers/{ref}", json=changes, headers=admin)
        assert response.status_code == (404 if field is None else 400), response.json
        assert response.json["error"].get("field") == field
    assert bindings(mgmt, queue) == {(other, "x")}


def test_a_consumer_of_a_queue_cannot_take_a_source(client, admin, make_consumer, exchange):
    consumer, _ = make_consumer("http://127.0.0.1:9/")
    response = client.patch(
        f"/api/v1/consumers/{consumer['id']}",
        json={"source": {"exchange": exchange("topic"), "binding_keys": ["#"]}},
        headers=admin,
    )
    assert response.status_code == 400
    assert response.json["error"]["field"] == "source"


@pytest.mark.parametrize("delete_queue", [False, True])
def test_deleting_the_consumer_deletes_its_queue_only_when_asked(
    client, admin, mgmt, exchange, source_consumer, delete_queue
):
    created = source_consumer({"exchange": exchange("fanout"), "binding_keys": ["#"]})
    assert created.status_code == 201, created.json
    queue = created.json["queue"]
    query = "?delete_queue=true" if delete_queue else ""
    response = client.delete(f"/api/v1/consumers/{created.json['id']}{query}", headers=admin)
    assert response.status_code == 204
    if delete_queue:
        with pytest.raises(NotFound):
            mgmt.get_queue(queue)
    else:
        assert mgmt.get_queue(queue)["name"] == queue


def test_delete_queue_is_refused_for_a_consumer_of_a_queue(client, admin, mgmt, make_consumer):
    consumer, queue = make_consumer("http://127.0.0.1:9/")
    response = client.delete(f"/api/v1/consumers/{consumer['id']}?delete_queue=true", headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "delete_queue"
    assert client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).status_code == 200
    assert mgmt.get_queue(queue)["name"] == queue


def test_a_name_that_is_no_queue_name_is_refused(client, admin, exchange, source_consumer):
    response = source_consumer({"exchange": exchange("topic"), "binding_keys": ["#"]}, name="two words")
    assert response.status_code == 400
    assert response.json["error"]["field"] == "name"
    assert "wrmq.two words" in response.json["error"]["message"]


def test_a_second_consumer_of_the_same_name_leaves_the_first_ones_bindings(
    client, admin, mgmt, exchange, source_consumer
):
    shop = exchange("topic")
    first = source_consumer({"exchange": shop, "binding_keys": ["a"]})
    assert first.status_code == 201
    again = source_consumer({"exchange": shop, "binding_keys": ["b"]}, name=first.json["name"])
    assert again.status_code == 409
    assert bindings(mgmt, first.json["queue"]) == {(shop, "a")}
