"""/api/v1/queues: create, list, get, delete, purge, bindings, consumers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pika
import pytest

from tests.support import wait_for


def create(client, headers, name, **extra):
    return client.post("/api/v1/queues", json={"name": name, **extra}, headers=headers)


def ready_count(amqp, name: str) -> int:
    return amqp.queue_declare(name, passive=True).method.message_count


def put(amqp, name: str, *bodies: bytes) -> None:
    for body in bodies:
        amqp.basic_publish("", name, body)
    wait_for(lambda: ready_count(amqp, name) == len(bodies), timeout=5, what="messages queued")


def test_create_is_201_then_idempotent_200_then_409_on_other_settings(client, admin, queue_name):
    name = queue_name()
    first = create(client, admin, name)
    assert first.status_code == 201
    assert first.json["name"] == name
    assert first.json["type"] == "classic"
    assert first.json["durable"] is True
    assert create(client, admin, name).status_code == 200
    assert create(client, admin, name, durable=True, type="classic").status_code == 200

    conflict = create(client, admin, name, arguments={"message_ttl": 1000})
    assert conflict.status_code == 409
    assert conflict.json["error"]["code"] == "conflict"
    assert name in conflict.json["error"]["message"]
    assert create(client, admin, name, durable=False).status_code == 409


def test_create_non_durable(client, admin, queue_name):
    name = queue_name()
    response = create(client, admin, name, durable=False)
    assert response.status_code == 201
    assert client.get(f"/api/v1/queues/{name}", headers=admin).json["durable"] is False


def test_quorum_queue(client, admin, queue_name, amqp):
    name = queue_name("quorum")
    response = create(client, admin, name, type="quorum")
    assert response.status_code == 201
    assert response.json["type"] == "quorum"
    assert client.get(f"/api/v1/queues/{name}", headers=admin).json["type"] == "quorum"
    # The broker agrees: declaring it as a classic queue is refused as inequivalent.
    assert create(client, admin, name, type="classic").status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"type": "quorum", "durable": False},
        {"type": "quorum", "arguments": {"max_priority": 5}},
    ],
)
def test_quorum_rules(client, admin, queue_name, body):
    response = create(client, admin, queue_name(), **body)
    assert response.status_code == 400
    assert response.json["error"]["field"] in ("durable", "arguments")


def test_arguments_are_applied_and_shown(client, admin, queue_name, amqp):
    name = queue_name()
    dlq = name + ".dlq"
    assert create(client, admin, dlq).status_code == 201
    arguments = {
        "message_ttl": 60000,
        "max_length": 2,
        "overflow": "reject-publish",
        "dead_letter_exchange": "",
        "dead_letter_routing_key": dlq,
        "max_priority": 9,
    }
    response = create(client, admin, name, arguments=arguments)
    assert response.status_code == 201
    assert response.json["arguments"] == arguments
    shown = client.get(f"/api/v1/queues/{name}", headers=admin).json
    assert shown["arguments"] == arguments
    # And the broker enforces them: the queue takes two messages, then refuses.
    results = client.post(
        f"/api/v1/queues/{name}/messages",
        json={"messages": [{"body": i} for i in range(3)]},
        headers=admin,
    ).json["results"]
    assert [r["status"] for r in results].count("published") == 2
    assert ready_count(amqp, name) == 2


def test_dead_letter_exchange_routes_expired_messages(client, admin, queue_name, amqp):
    name = queue_name()
    dlq = name + ".dlq"
    assert create(client, admin, dlq).status_code == 201
    arguments = {"message_ttl": 1, "dead_letter_exchange": "", "dead_letter_routing_key": dlq}
    assert create(client, admin, name, arguments=arguments).status_code == 201
    amqp.basic_publish("", name, b"expires")
    wait_for(lambda: ready_count(amqp, dlq) == 1, timeout=5, what="dead-lettered message")
    assert amqp.basic_get(dlq, auto_ack=True)[2] == b"expires"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"message_ttl": -1}, "arguments.message_ttl"),
        ({"max_length": "ten"}, "arguments.max_length"),
        ({"overflow": "explode"}, "arguments.overflow"),
        ({"max_priority": 0}, "arguments.max_priority"),
        ({"max_priority": 256}, "arguments.max_priority"),
        ({"colour": "blue"}, "arguments.colour"),
    ],
)
def test_invalid_arguments_name_the_field(client, admin, queue_name, arguments, field):
    response = create(client, admin, queue_name(), arguments=arguments)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


def test_list_filters_by_name_and_pages(client, admin, queue_name):
    tag = uuid.uuid4().hex[:8]
    names = sorted(queue_name(f"list-{tag}") for _ in range(3))
    for name in names:
        assert create(client, admin, name).status_code == 201
    other = queue_name("other")
    assert create(client, admin, other).status_code == 201

    listed = client.get(f"/api/v1/queues?name={tag}", headers=admin)
    assert listed.status_code == 200
    page = listed.json
    assert page["total"] == 3
    assert sorted(q["name"] for q in page["items"]) == names
    item = page["items"][0]
    for field in (
        "name",
        "type",
        "durable",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "publish_rate",
        "deliver_rate",
    ):
        assert field in item

    seen = []
    for number in (1, 2):
        paged = client.get(f"/api/v1/queues?name={tag}&page={number}&page_size=2", headers=admin)
        assert paged.status_code == 200
        assert paged.json["page"] == number and paged.json["page_size"] == 2
        assert paged.json["total"] == 3
        seen += [q["name"] for q in paged.json["items"]]
    assert sorted(seen) == names
    assert len(seen) == 3

    # Unfiltered, they are listed too, on whichever page (the broker may hold many queues).
    listed_names: set[str] = set()
    number = 1
    while True:
        everything = client.get(f"/api/v1/queues?page_size=500&page={number}", headers=admin).json
        listed_names |= {q["name"] for q in everything["items"]}
        if number * 500 >= everything["total"]:
            break
        number += 1
    assert {*names, other} <= listed_names


@pytest.mark.parametrize("query", ["page=0", "page_size=0", "page_size=501", "page=x"])
def test_list_rejects_bad_paging(client, admin, query):
    response = client.get(f"/api/v1/queues?{query}", headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] in ("page", "page_size")


def test_get_one_reports_messages(client, admin, queue_name, amqp):
    name = queue_name()
    assert create(client, admin, name).status_code == 201
    put(amqp, name, b"a", b"b")

    def counted():
        queue = client.get(f"/api/v1/queues/{name}", headers=admin).json
        return queue if queue["messages_ready"] == 2 else None

    queue = wait_for(counted, timeout=15, what="management stats")
    assert queue["name"] == name
    assert queue["messages"] == 2
    assert queue["messages_unacknowledged"] == 0
    assert queue["consumers"] == 0


def test_unknown_queue_is_404(client, admin, broker):
    for method, suffix in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/purge"),
        ("GET", "/bindings"),
        ("GET", "/consumers"),
    ]:
        response = client.open(f"/api/v1/queues/no-such-queue-x1{suffix}", method=method, headers=admin)
        assert response.status_code == 404, (method, suffix)
        assert response.json["error"]["code"] == "not_found"


def test_delete(client, admin, queue_name, amqp):
    name = queue_name()
    assert create(client, admin, name).status_code == 201
    response = client.delete(f"/api/v1/queues/{name}", headers=admin)
    assert response.status_code == 204
    assert client.get(f"/api/v1/queues/{name}", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/queues/{name}", headers=admin).status_code == 404


def test_delete_if_empty_refuses_non_empty_queue(client, admin, queue_name, amqp):
    name = queue_name()
    assert create(client, admin, name).status_code == 201
    put(amqp, name, b"keep me")
    refused = client.delete(f"/api/v1/queues/{name}?if_empty=true", headers=admin)
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "conflict"
    assert ready_count(amqp, name) == 1
    assert client.post(f"/api/v1/queues/{name}/purge", headers=admin).status_code == 204
    wait_for(lambda: ready_count(amqp, name) == 0, timeout=5, what="purge")
    assert client.delete(f"/api/v1/queues/{name}?if_empty=true", headers=admin).status_code == 204


def test_delete_if_unused_refuses_queue_with_consumer(client, admin, queue_name, consumer):
    name = queue_name()
    assert create(client, admin, name).status_code == 201
    consumer(name)
    refused = client.delete(f"/api/v1/queues/{name}?if_unused=true", headers=admin)
    assert refused.status_code == 409
    assert client.get(f"/api/v1/queues/{name}", headers=admin).status_code == 200


def test_purge_empties_the_queue(client, admin, queue_name, amqp):
    name = queue_name()
    assert create(client, admin, name).status_code == 201
    put(amqp, name, b"1", b"2", b"3")
    assert client.post(f"/api/v1/queues/{name}/purge", headers=admin).status_code == 204
    wait_for(lambda: ready_count(amqp, name) == 0, timeout=5, what="purged queue")
    assert client.get(f"/api/v1/queues/{name}", headers=admin).status_code == 200


def test_bindings(client, admin, queue_name, amqp):
    name = queue_name()
    base = f"/api/v1/queues/{name}/bindings"
    assert create(client, admin, name).status_code == 201
    assert client.get(base, headers=admin).json == []  # the default exchange's is left out

    bound = client.post(base, json={"exchange": "amq.topic", "routing_key": "orders.*"}, headers=admin)
    assert bound.status_code == 201
    assert bound.json == {"exchange": "amq.topic", "routing_key": "orders.*"}
    listed = client.get(base, headers=admin).json
    assert [(b["exchange"], b["routing_key"]) for b in listed] == [("amq.topic", "orders.*")]

    # The binding is real: a message through amq.topic reaches the queue.
    amqp.basic_publish("amq.topic", "orders.new", b"routed")
    wait_for(lambda: ready_count(amqp, name) == 1, timeout=5, what="routed message")

    gone = client.delete(f"{base}?exchange=amq.topic&routing_key=orders.*", headers=admin)
    assert gone.status_code == 204
    assert client.get(base, headers=admin).json == []
    again = client.delete(f"{base}?exchange=amq.topic&routing_key=orders.*", headers=admin)
    assert again.status_code == 404


def test_binding_to_unknown_exchange_is_404(client, admin, queue_name):
    name = queue_name()
    assert create(client, admin, name).status_code == 201
    response = client.post(
        f"/api/v1/queues/{name}/bindings", json={"exchange": "no-such-exchange-x1"}, headers=admin
    )
    assert response.status_code == 404


def test_binding_needs_an_exchange(client, admin, queue_name):
    name = queue_name()
    response = client.post(f"/api/v1/queues/{name}/bindings", json={"routing_key": "k"}, headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "exchange"


@pytest.fixture
def consumer(broker: str) -> Iterator[Callable[..., str]]:
    """Start pika consumers (each on its own named connection); returns the consumer tag."""
    connections: list[pika.BlockingConnection] = []

    def start(queue: str, name: str = "test-consumer") -> str:
        params = pika.URLParameters(broker)
        params.client_properties = {"connection_name": name}
        connection = pika.BlockingConnection(params)
        connections.append(connection)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=7)
        tag = f"ctag-{uuid.uuid4().hex}"
        return channel.basic_consume(queue, lambda *a: None, consumer_tag=tag)

    yield start
    for connection in connections:
        if connection.is_open:
            connection.close()


def test_consumers_lists_a_pika_consumer(client, admin, queue_name, consumer):
    name = queue_name()
    assert create(client, admin, name).status_code == 201
    assert client.get(f"/api/v1/queues/{name}/consumers", headers=admin).json == []
    tag = consumer(name, "consumers-test")

    def listed():
        found = client.get(f"/api/v1/queues/{name}/consumers", headers=admin).json
        # The channel's details (peer, connection) can trail the consumer by a stats tick.
        return found if found and found[0]["peer_host"] else None

    consumers = wait_for(listed, timeout=15, what="consumer in management API")
    assert len(consumers) == 1
    assert consumers[0]["consumer_tag"] == tag
    assert consumers[0]["ack_required"] is True
    assert consumers[0]["prefetch_count"] == 7
    assert consumers[0]["peer_host"] in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    assert consumers[0]["connection"]
