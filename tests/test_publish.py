"""Publishing to queues and exchanges, checked against what reaches the broker."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from tests.support import json_error, wait_for
from workerrmq.api import create_app


@pytest.fixture
def queue(make_queue) -> str:
    """A queue with priorities up to 10."""
    return make_queue("pub", arguments={"max_priority": 10})


def get(amqp, name: str):
    """The next message of *name*, waiting briefly for it."""

    def fetch():
        method, properties, body = amqp.basic_get(name, auto_ack=True)
        return (properties, body) if method is not None else None

    return wait_for(fetch, timeout=5, what=f"a message on {name}")


def publish(client, auth, queue: str, **message):
    return client.post(f"/api/v1/queues/{queue}/messages", json=message, headers=auth)


def test_single_message_with_every_property(client, admin, queue, amqp):
    response = publish(
        client,
        admin,
        queue,
        body_base64=base64.b64encode(b"\x00\xffraw\x80bytes\n").decode(),
        content_type="application/x-custom",
        headers={"x-tenant": "acme", "attempt": 3, "nested": {"a": [1, 2]}},
        message_id="msg-1",
        correlation_id="corr-7",
        priority=5,
        expiration=60000,
        persistent=True,
    )
    assert response.status_code == 201
    assert response.json == {"message_id": "msg-1", "status": "published"}
    properties, body = get(amqp, queue)
    assert body == b"\x00\xffraw\x80bytes\n"
    assert properties.content_type == "application/x-custom"
    assert properties.headers == {"x-tenant": "acme", "attempt": 3, "nested": {"a": [1, 2]}}
    assert properties.message_id == "msg-1"
    assert properties.correlation_id == "corr-7"
    assert properties.priority == 5
    assert properties.expiration == "60000"
    assert properties.delivery_mode == 2


def test_not_persistent(client, admin, queue, amqp):
    assert publish(client, admin, queue, body="transient", persistent=False).status_code == 201
    properties, body = get(amqp, queue)
    assert body == b"transient"
    assert properties.delivery_mode == 1


def test_persistent_is_the_default(client, admin, queue, amqp):
    assert publish(client, admin, queue, body="kept").status_code == 201
    assert get(amqp, queue)[0].delivery_mode == 2


def test_string_body_is_utf8_text(client, admin, queue, amqp):
    text = "grüße, 世界 ✓"
    assert publish(client, admin, queue, body=text).status_code == 201
    properties, body = get(amqp, queue)
    assert body == text.encode("utf-8")
    assert properties.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize("value", [{"order": 42, "items": ["a", "b"]}, [1, 2, 3], 17, True, None])
def test_json_body_is_application_json(client, admin, queue, amqp, value):
    assert publish(client, admin, queue, body=value).status_code == 201
    properties, body = get(amqp, queue)
    assert properties.content_type == "application/json"
    assert json.loads(body) == value


def test_base64_body_is_byte_exact(client, admin, queue, amqp):
    raw = bytes(range(256)) * 3
    response = publish(client, admin, queue, body_base64=base64.b64encode(raw).decode())
    assert response.status_code == 201
    properties, body = get(amqp, queue)
    assert body == raw
    assert properties.content_type == "application/octet-stream"


def test_invalid_base64_is_400(client, admin, queue):
    response = publish(client, admin, queue, body_base64="not base64!!")
    assert response.status_code == 400
    assert response.json["error"]["field"] == "body_base64"


def test_message_id_is_generated(client, admin, queue, amqp):
    first = publish(client, admin, queue, body="a").json["message_id"]
    second = publish(client, admin, queue, body="b").json["message_id"]
    assert first and second and first != second
    assert get(amqp, queue)[0].message_id == first
    assert get(amqp, queue)[0].message_id == second


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({}, "body"),
        ({"body": "x", "body_base64": "eA=="}, "body_base64"),
        ({"body": "x", "priority": 256}, "priority"),
        ({"body": "x", "expiration": -1}, "expiration"),
        ({"body": "x", "persistent": "sometimes"}, "persistent"),
        ({"body": "x", "headers": "not a dict"}, "headers"),
        ({"body": "x", "message_id": ""}, "message_id"),
        ({"body": "x", "messages": [{"body": 1}]}, "messages"),
    ],
)
def test_invalid_message_names_the_field(client, admin, queue, message, field):
    response = publish(client, admin, queue, **message)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


def test_batch_reports_each_message(client, admin, queue, amqp):
    response = client.post(
        f"/api/v1/queues/{queue}/messages",
        json={
            "messages": [
                {"body": "one", "message_id": "m1"},
                {"body": {"two": 2}},
                {"body_base64": base64.b64encode(b"\x01\x02").decode()},
            ]
        },
        headers=admin,
    )
    assert response.status_code == 200
    result = response.json
    assert result["published"] == 3 and result["failed"] == 0
    assert [r["status"] for r in result["results"]] == ["published"] * 3
    assert result["results"][0]["message_id"] == "m1"
    bodies = [get(amqp, queue)[1] for _ in range(3)]
    assert bodies == [b"one", b'{"two":2}', b"\x01\x02"]


def test_batch_with_partly_refused_messages(client, admin, queue_name, amqp):
    name = queue_name()
    arguments = {"max_length": 1, "overflow": "reject-publish"}
    assert (
        client.post("/api/v1/queues", json={"name": name, "arguments": arguments}, headers=admin).status_code
        == 201
    )
    response = client.post(
        f"/api/v1/queues/{name}/messages", json={"messages": [{"body": 1}, {"body": 2}]}, headers=admin
    )
    assert response.status_code == 200
    assert response.json["published"] == 1 and response.json["failed"] == 1
    assert sorted(r["status"] for r in response.json["results"]) == ["published", "rejected"]


def test_batch_over_the_cap_is_400_naming_messages(make_settings, queue_name, amqp):
    app = create_app(make_settings(max_batch=3, bootstrap_api_key="wrmq_cap-test-admin-key"))
    try:
        client = app.test_client()
        admin = {"Authorization": "Bearer wrmq_cap-test-admin-key"}
        name = queue_name()
        assert client.post("/api/v1/queues", json={"name": name}, headers=admin).status_code == 201
        ok = client.post(
            f"/api/v1/queues/{name}/messages",
            json={"messages": [{"body": i} for i in range(3)]},
            headers=admin,
        )
        assert ok.status_code == 200
        over = client.post(
            f"/api/v1/queues/{name}/messages",
            json={"messages": [{"body": i} for i in range(4)]},
            headers=admin,
        )
        assert over.status_code == 400
        assert over.json["error"]["field"] == "messages"
        assert "3" in over.json["error"]["message"]
        assert amqp.queue_declare(name, passive=True).method.message_count == 3
    finally:
        app.extensions["workerrmq"].close()


def test_empty_batch_is_400(client, admin, queue):
    response = client.post(f"/api/v1/queues/{queue}/messages", json={"messages": []}, headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "messages"


def test_unroutable_single_message_is_404(client, admin, broker):
    response = publish(client, admin, f"missing-{uuid.uuid4().hex}", body="lost")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_unroutable_batch_is_404(client, admin, broker):
    response = client.post(
        f"/api/v1/queues/missing-{uuid.uuid4().hex}/messages",
        json={"messages": [{"body": 1}, {"body": 2}]},
        headers=admin,
    )
    assert response.status_code == 404


def test_publish_to_invalid_queue_name_is_400(client, admin):
    response = publish(client, admin, "bad name!", body="x")
    assert response.status_code == 400


def test_exchange_publish_through_amq_direct(client, admin, queue, amqp):
    key = f"rk-{uuid.uuid4().hex[:8]}"
    bound = client.post(
        f"/api/v1/queues/{queue}/bindings", json={"exchange": "amq.direct", "routing_key": key}, headers=admin
    )
    assert bound.status_code == 201
    response = client.post(
        "/api/v1/exchanges/amq.direct/messages",
        json={"body": "via exchange", "routing_key": key, "message_id": "x1"},
        headers=admin,
    )
    assert response.status_code == 201
    assert response.json == {"message_id": "x1", "status": "published"}
    properties, body = get(amqp, queue)
    assert body == b"via exchange" and properties.message_id == "x1"

    batch = client.post(
        "/api/v1/exchanges/amq.direct/messages",
        json={
            "routing_key": key,
            "messages": [{"body": "a"}, {"body": "b", "routing_key": "nowhere-" + key}],
        },
        headers=admin,
    )
    assert batch.status_code == 200
    assert [r["status"] for r in batch.json["results"]] == ["published", "unroutable"]
    assert batch.json["failed"] == 1
    assert get(amqp, queue)[1] == b"a"


def test_amq_default_exchange_routes_by_queue_name(client, admin, queue, amqp):
    response = client.post(
        "/api/v1/exchanges/amq.default/messages",
        json={"body": "default", "routing_key": queue},
        headers=admin,
    )
    assert response.status_code == 201
    assert get(amqp, queue)[1] == b"default"


def test_unknown_exchange_is_404(client, admin, broker):
    response = client.post(
        f"/api/v1/exchanges/no-such-exchange-{uuid.uuid4().hex[:6]}/messages",
        json={"body": "x", "routing_key": "k"},
        headers=admin,
    )
    assert response.status_code == 404
    assert "exchange" in response.json["error"]["message"]


def test_exchange_without_matching_binding_is_404(client, admin, queue):
    response = client.post(
        "/api/v1/exchanges/amq.direct/messages",
        json={"body": "x", "routing_key": f"unbound-{uuid.uuid4().hex}"},
        headers=admin,
    )
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_publisher_survives_an_unknown_exchange(client, admin, queue, amqp):
    """A 404 from the broker must not break the shared channel for the next request."""
    client.post("/api/v1/exchanges/nope-x/messages", json={"body": 1}, headers=admin)
    assert publish(client, admin, queue, body="after").status_code == 201
    assert get(amqp, queue)[1] == b"after"


def test_body_over_the_limit_is_413_json(make_settings, make_app, queue_name):
    client, admin = make_app(make_settings(max_request_bytes=2048))
    name = queue_name()
    assert client.post("/api/v1/queues", json={"name": name}, headers=admin).status_code == 201
    assert publish(client, admin, name, body="x" * 1000).status_code == 201
    json_error(publish(client, admin, name, body="x" * 4096), 413, code="payload_too_large")


# -- properties the endpoint receives as HTTP headers ---------------------------------------

CONTROL_CHARACTERS = ["\r", "\n", "\r\nX-Injected: 1", "\x00", "\x01", "\x1f", "\x7f"]
HEADER_PROPERTIES = ["content_type", "message_id", "correlation_id"]


@pytest.mark.parametrize("char", CONTROL_CHARACTERS)
@pytest.mark.parametrize("field", HEADER_PROPERTIES)
def test_control_characters_in_header_properties_are_400(client, admin, queue, amqp, field, char):
    """These properties reach the endpoint as HTTP headers, which cannot hold them: they were
    accepted here, then every delivery failed and the message was dead-lettered as
    "internal error". Each publish route and both ways through it (the plain request's
    quick way and the full schema) refuse them, naming the field."""
    value = f"abc{char}def"
    plain = {"body": "x", field: value}
    full = {**plain, "priority": 5.0}  # an integral float: only the schema takes it
    cases = [
        (f"/api/v1/queues/{queue}/messages", plain, field),
        (f"/api/v1/queues/{queue}/messages", full, field),
        (f"/api/v1/queues/{queue}/messages", {"messages": [{"body": "ok"}, plain]}, f"messages.1.{field}"),
        ("/api/v1/exchanges/amq.default/messages", {**plain, "routing_key": queue}, field),
    ]
    for path, body, where in cases:
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == 400, (path, body, response.json)
        error = response.json["error"]
        assert error["field"] == where
        assert "control characters" in error["message"] and where in error["message"]
    assert amqp.basic_get(queue, auto_ack=True)[0] is None  # nothing was published


@pytest.mark.parametrize("char", ["\r", "\n", "\x00"])
def test_control_characters_in_a_routing_key_are_400(client, admin, queue, char):
    """The routing key reaches the endpoint as X-WorkerRMQ-Routing-Key."""
    key = f"{queue}{char}"
    for body, where in [
        ({"body": "x", "routing_key": key}, "routing_key"),
        ({"messages": [{"body": "x"}], "routing_key": key}, "routing_key"),
        ({"messages": [{"body": "x", "routing_key": key}]}, "messages.0.routing_key"),
    ]:
        response = client.post("/api/v1/exchanges/amq.default/messages", json=body, headers=admin)
        assert response.status_code == 400, response.json
        assert response.json["error"]["field"] == where


def test_header_properties_the_api_takes_are_delivered(
    client,
    admin,
    settings,
    start_engine,
    endpoint,
    queue_name,
):
    """The other side of the rule: tabs, non-ASCII text and 255-byte values go through to
    the endpoint's headers."""
    worker = start_engine(settings)
    queue = queue_name("pub")
    created = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={"queue": queue, "target_url": endpoint.url, "create_queue": True},
    )
    assert created.status_code == 201, created.json
    worker.runner(created.json["id"])
    sent = {
        "content_type": "text/plain;\tcharset=utf-8",
        "message_id": "m" * 255,
        "correlation_id": "corrélation-ü",
    }
    response = publish(client, admin, queue, body="hello", **sent)
    assert response.status_code == 201, response.json
    wait_for(endpoint.count, what="the delivery")
    got = endpoint.received[0].headers
    assert got["Content-Type"] == sent["content_type"]
    assert got["X-WorkerRMQ-Message-Id"] == sent["message_id"]
    assert got["X-WorkerRMQ-Correlation-Id"] == sent["correlation_id"]
