"""The seed's routes answer with the seed's shapes (extra fields allowed)."""

from __future__ import annotations

import json

from tests.support import wait_for
from workerrmq.api.responses import ResponseMessages


def test_create_get_publish_delete(client, admin, queue_name, amqp):
    name = queue_name("seed")
    created = client.post("/createQueue", json={"queueName": name}, headers=admin)
    assert created.status_code == 200
    assert created.json == {"message": "Queue has been created successfully."}
    assert created.json["message"] == ResponseMessages.QUEUE_CREATED
    again = client.post("/createQueue", json={"queueName": name}, headers=admin)
    assert again.status_code == 200  # idempotent, as declaring a queue is

    listed = client.get("/getQueues", headers=admin)
    assert listed.status_code == 200
    assert isinstance(listed.json, list)
    assert all(isinstance(q["queueName"], str) for q in listed.json)
    [entry] = [q for q in listed.json if q["queueName"] == name]
    assert entry["durable"] is True and entry["type"] == "classic"

    one = client.get(f"/getQueue?queueName={name}", headers=admin)
    assert one.status_code == 200
    assert one.json["queueName"] == name
    assert {"messages_ready", "consumers", "durable"} <= one.json.keys()

    published = client.post("/messagePublish", json={"queueName": name, "message": "Hello"}, headers=admin)
    assert published.status_code == 200
    assert published.json == {"message": "Message has been published successfully."}
    method, properties, body = amqp.basic_get(name, auto_ack=True)
    assert body == b"Hello"
    assert properties.delivery_mode == 2

    deleted = client.post("/deleteQueue", json={"queueName": name}, headers=admin)
    assert deleted.status_code == 200
    assert deleted.json == {"message": "Queue has been deleted successfully."}
    assert client.get(f"/getQueue?queueName={name}", headers=admin).status_code == 404
    assert name not in [q["queueName"] for q in client.get("/getQueues", headers=admin).json]


def test_message_publish_with_json_message(client, admin, queue_name, amqp):
    name = queue_name("seed")
    assert client.post("/createQueue", json={"queueName": name}, headers=admin).status_code == 200
    message = {"orderId": 7, "lines": [{"sku": "A", "qty": 2}]}
    published = client.post("/messagePublish", json={"queueName": name, "message": message}, headers=admin)
    assert published.status_code == 200
    body = wait_for(lambda: amqp.basic_get(name, auto_ack=True)[2], timeout=5, what="message")
    assert json.loads(body) == message


def test_get_queues_lists_every_new_queue(client, admin, queue_name):
    names = [queue_name("seedall") for _ in range(3)]
    for name in names:
        created = client.post("/createQueue", json={"queueName": name}, headers=admin)
        assert created.status_code == 200
    everything = {q["queueName"] for q in client.get("/getQueues", headers=admin).json}
    assert set(names) <= everything


def test_seed_errors(client, admin, queue_name):
    missing = client.post("/createQueue", json={}, headers=admin)
    assert missing.status_code == 400
    assert missing.json["error"]["field"] == "queueName"
    no_message = client.post("/messagePublish", json={"queueName": "x"}, headers=admin)
    assert no_message.status_code == 400
    assert no_message.json["error"]["field"] == "message"
    null_message = client.post("/messagePublish", json={"queueName": "x", "message": None}, headers=admin)
    assert null_message.status_code == 400
    unknown = queue_name("seed-missing")
    assert client.get(f"/getQueue?queueName={unknown}", headers=admin).status_code == 404
    deleted = client.post("/deleteQueue", json={"queueName": unknown}, headers=admin)
    assert deleted.status_code == 404
    unroutable = client.post("/messagePublish", json={"queueName": unknown, "message": "x"}, headers=admin)
    assert unroutable.status_code == 404
    assert client.get("/getQueue", headers=admin).json["error"]["field"] == "queueName"
    bad = client.post("/createQueue", json={"queueName": "no spaces"}, headers=admin)
    assert bad.status_code == 400 and bad.json["error"]["field"] == "queueName"


def test_seed_routes_need_keys(client, make_key):
    read = make_key("read")
    publish = make_key("publish")
    assert client.get("/getQueues").status_code == 401
    assert client.get("/getConsumers", headers=read).status_code == 200
    assert client.post("/createQueue", json={"queueName": "x"}, headers=publish).status_code == 403
    assert client.post("/deleteQueue", json={"queueName": "x"}, headers=publish).status_code == 403
    assert (
        client.post("/messagePublish", json={"queueName": "x", "message": "m"}, headers=read).status_code
        == 403
    )
