"""/api/v1/consumers and the seed's consumer routes, over the real broker.

No worker runs here: the API stores definitions, announces changes on the control
exchange, and moves dead letters; delivery itself is tested in test_worker*.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support import put_dead_letters, wait_for
from workerrmq.broker.control import CONTROL_EXCHANGE
from workerrmq.settings import Settings

DEFAULT_TARGET = "http://127.0.0.1:9/x"
TARGET = "http://127.0.0.1:9/hook"
SECRET = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="  # "secret-signing-key-for-tests"


def create(client: FlaskClient, auth: dict[str, str], **body: object):
    return client.post("/api/v1/consumers", json=body, headers=auth)


@pytest.fixture
def default_app(make_settings: Callable[..., Settings]) -> Iterator[Flask]:
    """An app with DEFAULT_TARGET_URL set."""
    from workerrmq.api import create_app

    app = create_app(make_settings(default_target_url=DEFAULT_TARGET))
    app.config["TESTING"] = True
    yield app
    app.extensions["workerrmq"].close()


@pytest.fixture
def default_client(default_app: Flask) -> tuple[FlaskClient, dict[str, str]]:
    """A test client of *default_app* and an admin Authorization header for it."""
    _, token = default_app.extensions["workerrmq"].keys.create(f"admin-{uuid.uuid4().hex[:8]}", "admin")
    return default_app.test_client(), {"Authorization": f"Bearer {token}"}


def error_field(response) -> str | None:
    assert response.status_code == 400, (response.status_code, response.json)
    assert response.json["error"]["code"] == "invalid_input"
    return response.json["error"].get("field")


# -- create, get, list, update, delete ----------------------------------------------------


def test_create_returns_the_consumer_with_defaults(client, admin, queue):
    response = create(client, admin, queue=queue, target_url=TARGET)
    assert response.status_code == 201, response.json
    body = response.json
    assert len(body["id"]) == 32
    assert body["name"] == queue  # the name defaults to the queue's
    assert body["queue"] == queue
    assert body["target_url"] == TARGET
    assert body["method"] == "POST"
    assert body["timeout"] == 10.0
    assert body["concurrency"] == 32
    assert body["max_attempts"] == 8
    assert body["initial_delay"] == 1.0
    assert body["max_delay"] == 3600.0
    assert body["retry_on"] == ["connection", "timeout", "408", "425", "429", "5xx"]
    assert body["dead_letter_queue"] == f"{queue}.dlq"
    assert body["state"] == "running"
    assert body["signing"] is False
    assert body["version"] == 1
    assert body["created_at"] and body["updated_at"]
    assert body["stats"]["delivered"] == 0
    assert body["stats"]["status"] == ["not running"]
    assert body["stats"]["circuit"] == "closed"


def test_signing_secret_is_never_returned(client, admin, queue):
    created = create(client, admin, queue=queue, target_url=TARGET, name="signed", signing_secret=SECRET)
    assert created.status_code == 201, created.json
    assert created.json["signing"] is True
    consumer_id = created.json["id"]
    responses = [
        created,
        client.get(f"/api/v1/consumers/{consumer_id}", headers=admin),
        client.get("/api/v1/consumers/signed", headers=admin),
        client.get("/api/v1/consumers", headers=admin),
        client.patch(f"/api/v1/consumers/{consumer_id}", json={"timeout": 5}, headers=admin),
        client.post(f"/api/v1/consumers/{consumer_id}/pause", headers=admin),
        client.get("/getConsumers", headers=admin),
    ]
    secret_body = SECRET.removeprefix("whsec_")
    for response in responses:
        assert response.status_code in (200, 201)
        text = response.get_data(as_text=True)
        assert secret_body not in text
        assert "signing_secret" not in text
    assert responses[1].json["signing"] is True
    assert responses[4].json["signing"] is True  # a PATCH without it keeps the secret

    # Removing the secret turns signing off.
    cleared = client.patch(f"/api/v1/consumers/{consumer_id}", json={"signing_secret": None}, headers=admin)
    assert cleared.status_code == 200
    assert cleared.json["signing"] is False


def test_every_field_can_be_set(client, admin, queue):
    response = create(
        client,
        admin,
        queue=queue,
        name="custom",
        target_url="https://example.com/in",
        method="PUT",
        headers={"Authorization": "Bearer abc"},
        timeout=2.5,
        concurrency=4,
        max_attempts=3,
        initial_delay=0.1,
        max_delay=5,
        retry_on=["429", "timeout"],
        rate_limit=20,
        ordered=True,
        circuit_threshold=2,
        circuit_cooldown=1.5,
        dead_letter_queue=f"{queue}.parking",
        state="paused",
    )
    assert response.status_code == 201, response.json
    got = client.get(f"/api/v1/consumers/{response.json['id']}", headers=admin).json
    assert got["method"] == "PUT"
    assert got["headers"] == {"Authorization": "***"}  # write-only: shown as set
    assert (got["timeout"], got["concurrency"], got["max_attempts"]) == (2.5, 4, 3)
    assert (got["initial_delay"], got["max_delay"]) == (0.1, 5.0)
    assert got["retry_on"] == ["429", "timeout"]
    assert got["rate_limit"] == 20.0
    assert got["ordered"] is True
    assert (got["circuit_threshold"], got["circuit_cooldown"]) == (2, 1.5)
    assert got["dead_letter_queue"] == f"{queue}.parking"
    assert got["state"] == "paused"


def test_missing_queue_is_404(client, admin, queue_name, mgmt):
    name = queue_name("missing")
    response = create(client, admin, queue=name, target_url=TARGET)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert name in response.json["error"]["message"]
    assert client.get("/api/v1/consumers", headers=admin).json["items"] == []


def test_create_queue_true_declares_it(client, admin, queue_name, mgmt):
    name = queue_name("autocreate")
    response = create(client, admin, queue=name, target_url=TARGET, create_queue=True)
    assert response.status_code == 201, response.json
    queue = mgmt.get_queue(name)
    assert queue["name"] == name
    assert queue["durable"] is True


@pytest.mark.parametrize(
    "body, field",
    [
        ({"target_url": "ftp://example.com/x"}, "target_url"),
        ({"target_url": "not a url"}, "target_url"),
        ({"target_url": "http://"}, "target_url"),
        ({"method": "GET"}, "method"),
        ({"timeout": -1}, "timeout"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_delay": 10, "max_delay": 5}, "max_delay"),
        ({"retry_on": ["5xx", "teapot"]}, "retry_on"),
        ({"retry_on": ["600"]}, "retry_on"),
        ({"headers": {"X-Evil": "a\r\nSet-Cookie: x=1"}}, "headers"),
        ({"headers": {"X-Evil": "line\nbreak"}}, "headers"),
        ({"headers": {"Bad Name": "v"}}, "headers"),
        ({"signing_secret": "whsec_%%%% not base64 %%%%"}, "signing_secret"),
        ({"signing_secret": "short"}, "signing_secret"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"state": "stopped"}, "state"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(client, admin, queue, body, field):
    response = create(client, admin, **{"queue": queue, "target_url": TARGET, **body})
    named = error_field(response)
    assert named is not None and named.split(".")[0] == field, response.json
    assert client.get("/api/v1/consumers", headers=admin).json["items"] == []


def test_bad_queue_name_is_400(client, admin):
    assert error_field(create(client, admin, queue="bad name!", target_url=TARGET)) == "queue"
    # A name RabbitMQ reserves: the error names the consumer's queue field, not "name".
    reserved = create(client, admin, queue="amq.nope", target_url=TARGET, create_queue=True)
    assert error_field(reserved) == "queue"


def test_duplicate_name_is_409(client, admin, queue):
    assert create(client, admin, queue=queue, target_url=TARGET, name="dup").status_code == 201
    again = create(client, admin, queue=queue, target_url=TARGET, name="dup")
    assert again.status_code == 409
    assert again.json["error"]["code"] == "conflict"
    # The default name is the queue's, so a second unnamed consumer on a queue conflicts too.
    assert create(client, admin, queue=queue, target_url=TARGET).status_code == 201
    assert create(client, admin, queue=queue, target_url=TARGET).status_code == 409
    assert len(client.get("/api/v1/consumers", headers=admin).json["items"]) == 2


def test_get_by_id_and_by_name_and_list(client, admin, queue):
    first = create(client, admin, queue=queue, target_url=TARGET, name="one").json
    second = create(client, admin, queue=queue, target_url=TARGET, name="two").json
    by_id = client.get(f"/api/v1/consumers/{first['id']}", headers=admin)
    by_name = client.get("/api/v1/consumers/one", headers=admin)
    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json["id"] == by_name.json["id"] == first["id"]
    assert "stats" in by_id.json
    listed = client.get("/api/v1/consumers", headers=admin)
    assert [c["id"] for c in listed.json["items"]] == [first["id"], second["id"]]
    missing = client.get("/api/v1/consumers/nope", headers=admin)
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "not_found"


def test_patch_changes_fields_and_bumps_version(client, admin, queue):
    created = create(client, admin, queue=queue, target_url=TARGET).json
    response = client.patch(
        f"/api/v1/consumers/{created['id']}",
        json={
            "target_url": "http://127.0.0.1:9/v2",
            "timeout": 3,
            "concurrency": 2,
            "retry_on": ["5xx"],
            "headers": {"X-Api": "k"},
        },
        headers=admin,
    )
    assert response.status_code == 200, response.json
    assert response.json["version"] == 2
    assert response.json["target_url"] == "http://127.0.0.1:9/v2"
    assert response.json["updated_at"] >= created["updated_at"]
    got = client.get(f"/api/v1/consumers/{created['id']}", headers=admin).json
    assert (got["timeout"], got["concurrency"], got["retry_on"]) == (3.0, 2, ["5xx"])
    assert got["headers"] == {"X-Api": "k"}
    assert got["version"] == 2
    assert got["created_at"] == created["created_at"]


def test_patch_validates_like_create(client, admin, queue, queue_name):
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    url = f"/api/v1/consumers/{consumer_id}"
    assert error_field(client.patch(url, json={"target_url": "ftp://x/y"}, headers=admin)) == "target_url"
    assert error_field(client.patch(url, json={"method": "DELETE"}, headers=admin)) == "method"
    assert client.patch(url, json={"queue": queue_name("gone")}, headers=admin).status_code == 404
    assert client.patch("/api/v1/consumers/nope", json={"timeout": 1}, headers=admin).status_code == 404
    assert client.get(url, headers=admin).json["version"] == 1


def test_patch_max_delay_below_the_stored_initial_delay_is_400(client, admin, queue):
    consumer_id = create(client, admin, queue=queue, target_url=TARGET, initial_delay=2, max_delay=60).json[
        "id"
    ]
    url = f"/api/v1/consumers/{consumer_id}"
    assert error_field(client.patch(url, json={"max_delay": 1}, headers=admin)) == "max_delay"
    assert error_field(client.patch(url, json={"initial_delay": 120}, headers=admin)) == "initial_delay"
    got = client.get(url, headers=admin).json
    assert (got["initial_delay"], got["max_delay"], got["version"]) == (2.0, 60.0, 1)
    # Both together are checked against each other, and a consistent change is fine.
    ok = client.patch(url, json={"initial_delay": 120, "max_delay": 600}, headers=admin)
    assert ok.status_code == 200
    assert (ok.json["initial_delay"], ok.json["max_delay"]) == (120.0, 600.0)


def test_patch_rename_onto_an_existing_name_is_409(client, admin, queue):
    create(client, admin, queue=queue, target_url=TARGET, name="taken")
    other = create(client, admin, queue=queue, target_url=TARGET, name="free").json
    response = client.patch(f"/api/v1/consumers/{other['id']}", json={"name": "taken"}, headers=admin)
    assert response.status_code == 409


def test_pause_and_resume(client, admin, queue):
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    paused = client.post(f"/api/v1/consumers/{consumer_id}/pause", headers=admin)
    assert paused.status_code == 200
    assert paused.json["state"] == "paused"
    assert paused.json["version"] == 2
    assert client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).json["state"] == "paused"
    resumed = client.post(f"/api/v1/consumers/{consumer_id}/resume", headers=admin)
    assert resumed.status_code == 200
    assert resumed.json["state"] == "running"
    assert resumed.json["version"] == 3
    assert client.post("/api/v1/consumers/nope/pause", headers=admin).status_code == 404


def test_delete_then_404(client, admin, queue):
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    response = client.delete(f"/api/v1/consumers/{consumer_id}", headers=admin)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).status_code == 404
    assert client.delete(f"/api/v1/consumers/{consumer_id}", headers=admin).status_code == 404
    assert client.get("/api/v1/consumers", headers=admin).json["items"] == []
    # The name is free again.
    assert create(client, admin, queue=queue, target_url=TARGET).status_code == 201


def test_target_url_defaults_to_default_target_url(default_client, queue_name, mgmt):
    client, admin = default_client
    name = queue_name("dflt")
    response = create(client, admin, queue=name, create_queue=True)
    assert response.status_code == 201, response.json
    assert response.json["target_url"] == DEFAULT_TARGET
    # An explicit target still wins.
    other = create(client, admin, queue=name, name="explicit", target_url=TARGET)
    assert other.json["target_url"] == TARGET


def test_without_default_target_url_it_is_required(client, admin, queue):
    response = create(client, admin, queue=queue)
    assert error_field(response) == "target_url"
    assert "DEFAULT_TARGET_URL" in response.json["error"]["message"]


# -- dead letters -------------------------------------------------------------------------


def test_dead_letters_of_a_missing_or_empty_dlq(client, admin, queue, amqp):
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    url = f"/api/v1/consumers/{consumer_id}/dead-letters"
    missing = client.get(url, headers=admin)
    assert missing.status_code == 200
    assert missing.json["total"] == 0
    assert missing.json["items"] == []
    replay = client.post(f"{url}/replay", json={}, headers=admin)
    assert replay.status_code == 200
    assert replay.json == {"replayed": 0, "matched": 0, "moved": 0, "remaining": 0}

    amqp.queue_declare(f"{queue}.dlq", durable=True)
    empty = client.get(url, headers=admin)
    assert empty.status_code == 200
    assert (empty.json["total"], empty.json["items"]) == (0, [])
    assert client.post(f"{url}/replay", json={}, headers=admin).json == {
        "replayed": 0,
        "matched": 0,
        "moved": 0,
        "remaining": 0,
    }
    assert client.get("/api/v1/consumers/nope/dead-letters", headers=admin).status_code == 404


def test_peek_and_replay_dead_letters(client, admin, queue, amqp):
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    dlq = f"{queue}.dlq"
    put_dead_letters(amqp, dlq, queue, 2)
    url = f"/api/v1/consumers/{consumer_id}/dead-letters"

    page = client.get(url, headers=admin)
    assert page.status_code == 200, page.json
    assert page.json["total"] == 2
    items = page.json["items"]
    assert [i["message_id"] for i in items] == ["m-1", "m-2"]
    assert items[0]["attempts"] == 8
    assert items[0]["last_status"] == 503
    assert items[0]["last_error"] == "HTTP 503: down 1"
    assert items[0]["dead_lettered_at"] == "2025-01-01T00:00:00+00:00"
    assert items[0]["content_type"] == "application/json"
    assert json.loads(items[0]["payload"]) == {"n": 1}
    assert items[0]["headers"] == {"tenant": "acme"}

    second = client.get(f"{url}?offset=1&limit=1", headers=admin)
    assert [i["message_id"] for i in second.json["items"]] == ["m-2"]
    assert error_field(client.get(f"{url}?limit=0", headers=admin)) == "limit"
    # Peeking takes nothing away.
    assert amqp.queue_declare(dlq, passive=True).method.message_count == 2

    one = client.post(f"{url}/replay", json={"count": 1}, headers=admin)
    assert one.status_code == 200
    assert one.json == {"replayed": 1, "matched": 1, "moved": 1, "remaining": 1}
    method, properties, body = wait_for(
        lambda: (got := amqp.basic_get(queue, auto_ack=True))[0] and got,
        timeout=5,
        what="replayed message",
    )
    assert json.loads(body) == {"n": 1}
    assert properties.message_id == "m-1"
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    headers = properties.headers or {}
    assert "x-workerrmq-attempts" not in headers
    assert not any(k.startswith("x-workerrmq-") for k in headers)
    assert headers.get("tenant") == "acme"
    assert amqp.queue_declare(dlq, passive=True).method.message_count == 1

    rest = client.post(f"{url}/replay", json={}, headers=admin)
    assert rest.json == {"replayed": 1, "matched": 1, "moved": 1, "remaining": 0}
    method, properties, body = wait_for(
        lambda: (got := amqp.basic_get(queue, auto_ack=True))[0] and got,
        timeout=5,
        what="second replayed message",
    )
    assert properties.message_id == "m-2"
    assert "x-workerrmq-attempts" not in (properties.headers or {})
    assert amqp.queue_declare(dlq, passive=True).method.message_count == 0
    assert client.post(f"{url}/replay", json={}, headers=admin).json == {
        "replayed": 0,
        "matched": 0,
        "moved": 0,
        "remaining": 0,
    }


def test_replay_count_must_be_positive(client, admin, queue):
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    response = client.post(
        f"/api/v1/consumers/{consumer_id}/dead-letters/replay", json={"count": 0}, headers=admin
    )
    assert error_field(response) == "count"


# -- the seed's routes --------------------------------------------------------------------


def test_seed_create_list_delete_consumer(default_client, make_queue):
    client, admin = default_client
    name = make_queue("seedc")
    created = client.post("/createConsumer", json={"queueName": name}, headers=admin)
    assert created.status_code == 200, created.json
    # With a "warning" too: no worker runs in this test (tests/test_no_worker.py).
    assert created.json["message"] == "Consumer has been created successfully."

    listed = client.get("/getConsumers", headers=admin)
    assert listed.status_code == 200
    [entry] = [c for c in listed.json if c["queueName"] == name]
    assert entry["consumerId"] == entry["id"]
    assert entry["target_url"] == DEFAULT_TARGET
    assert client.get(f"/api/v1/consumers/{entry['consumerId']}", headers=admin).json["queue"] == name

    deleted = client.post("/deleteConsumer", json={"queueName": name}, headers=admin)
    assert deleted.status_code == 200
    assert deleted.json == {"message": "Consumer has been deleted successfully."}
    assert [c for c in client.get("/getConsumers", headers=admin).json if c["queueName"] == name] == []
    again = client.post("/deleteConsumer", json={"queueName": name}, headers=admin)
    assert again.status_code == 404


def test_seed_create_consumer_takes_extra_fields(default_client, queue_name):
    client, admin = default_client
    name = queue_name("seedx")
    created = client.post(
        "/createConsumer",
        json={"queueName": name, "create_queue": True, "target_url": TARGET, "max_attempts": 2},
        headers=admin,
    )
    assert created.status_code == 200, created.json
    [entry] = [c for c in client.get("/getConsumers", headers=admin).json if c["queueName"] == name]
    assert (entry["target_url"], entry["max_attempts"]) == (TARGET, 2)


def test_seed_create_consumer_errors(client, admin, default_client, queue_name, make_queue):
    name = make_queue("seede")
    # Without DEFAULT_TARGET_URL and without target_url.
    assert (
        error_field(client.post("/createConsumer", json={"queueName": name}, headers=admin)) == "target_url"
    )
    dclient, dadmin = default_client
    missing = dclient.post("/createConsumer", json={"queueName": queue_name("nosuch")}, headers=dadmin)
    assert missing.status_code == 404
    assert error_field(dclient.post("/createConsumer", json={}, headers=dadmin)) == "queueName"


# -- scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["read", "publish"])
def test_only_admin_keys_change_consumers(client, admin, make_key, queue, scope):
    key = make_key(scope)
    assert create(client, key, queue=queue, target_url=TARGET).status_code == 403
    assert (
        client.post(
            "/createConsumer", json={"queueName": queue, "target_url": TARGET}, headers=key
        ).status_code
        == 403
    )
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    url = f"/api/v1/consumers/{consumer_id}"
    assert client.patch(url, json={"timeout": 1}, headers=key).status_code == 403
    assert client.post(f"{url}/pause", headers=key).status_code == 403
    assert client.post(f"{url}/dead-letters/replay", json={}, headers=key).status_code == 403
    assert client.delete(url, headers=key).status_code == 403
    assert client.post("/deleteConsumer", json={"id": consumer_id}, headers=key).status_code == 403
    # Reading is allowed.
    assert client.get(url, headers=key).status_code == 200
    assert client.get("/api/v1/consumers", headers=key).status_code == 200
    assert client.get(f"{url}/dead-letters", headers=key).status_code == 200
    assert client.get(url, headers=admin).json["version"] == 1


def test_no_key_is_401(client, queue):
    assert client.get("/api/v1/consumers").status_code == 401
    assert create(client, {}, queue=queue, target_url=TARGET).status_code == 401


# -- control messages ---------------------------------------------------------------------


def test_changes_are_broadcast_on_the_control_exchange(client, admin, queue, amqp):
    amqp.exchange_declare(CONTROL_EXCHANGE, exchange_type="fanout", durable=True)
    listener = amqp.queue_declare("", exclusive=True, auto_delete=True).method.queue
    amqp.queue_bind(listener, CONTROL_EXCHANGE)
    seen: list[dict[str, str]] = []

    def announced(consumer_id: str, action: str) -> int:
        """How many times *action* was announced for *consumer_id* so far."""
        while True:
            method, _, body = amqp.basic_get(listener, auto_ack=True)
            if method is None:
                break
            seen.append(json.loads(body))
        return seen.count({"consumer_id": consumer_id, "action": action})

    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    wait_for(lambda: announced(consumer_id, "created") == 1, timeout=5, what="'created' sent")
    client.patch(f"/api/v1/consumers/{consumer_id}", json={"timeout": 2}, headers=admin)
    wait_for(lambda: announced(consumer_id, "updated") == 1, timeout=5, what="PATCH announced")
    client.post(f"/api/v1/consumers/{consumer_id}/pause", headers=admin)
    wait_for(lambda: announced(consumer_id, "updated") == 2, timeout=5, what="pause announced")
    client.delete(f"/api/v1/consumers/{consumer_id}", headers=admin)
    wait_for(lambda: announced(consumer_id, "deleted") == 1, timeout=5, what="'deleted' sent")


# -- headers an endpoint must not get from configuration ------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Content-Length",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Host",
        "Upgrade",
        "TE",
        "Trailer",
        "Keep-Alive",
        "Proxy-Authorization",
        "proxy-connection",
        "Expect",
        "Content-Type",
        "Content-Encoding",
        "X-WorkerRMQ-Message-Id",
        "x-workerrmq-attempt",
        "webhook-signature",
        "Webhook-Id",
        "webhook-timestamp",
    ],
)
def test_framing_and_own_headers_are_refused_naming_the_header(client, admin, queue, header):
    response = create(client, admin, queue=queue, target_url=TARGET, headers={header: "0"})
    assert error_field(response) == "headers"
    assert header in response.json["error"]["message"]
    assert client.get("/api/v1/consumers", headers=admin).json["items"] == []
    # The same rule on a change.
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    patched = client.patch(f"/api/v1/consumers/{consumer_id}", json={"headers": {header: "0"}}, headers=admin)
    assert error_field(patched) == "headers"
    assert client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).json["headers"] == {}


def test_ordinary_headers_are_kept(client, admin, queue):
    headers = {"X-Tenant": "acme", "User-Agent": "shop-relay/1", "Accept": "application/json"}
    response = create(client, admin, queue=queue, target_url=TARGET, headers=headers)
    assert response.status_code == 201, response.json
    assert response.json["headers"] == headers


# -- inputs that would only fail later -------------------------------------------------------


def test_dead_letter_queue_must_not_be_the_queue_itself(client, admin, queue):
    response = create(client, admin, queue=queue, target_url=TARGET, dead_letter_queue=queue)
    assert error_field(response) == "dead_letter_queue"
    consumer_id = create(client, admin, queue=queue, target_url=TARGET).json["id"]
    url = f"/api/v1/consumers/{consumer_id}"
    assert (
        error_field(client.patch(url, json={"dead_letter_queue": queue}, headers=admin))
        == "dead_letter_queue"
    )
    # Moving the consumer onto its own dead-letter queue is the same loop.
    assert error_field(client.patch(url, json={"queue": f"{queue}.dlq"}, headers=admin)) == "queue"
    assert client.get(url, headers=admin).json["version"] == 1


def test_a_name_that_is_another_consumers_id_is_refused(client, admin, queue):
    first = create(client, admin, queue=queue, target_url=TARGET, name="first").json
    taken = create(client, admin, queue=queue, target_url=TARGET, name=first["id"])
    assert taken.status_code == 409, taken.json
    assert first["id"] in taken.json["error"]["message"]
    second = create(client, admin, queue=queue, target_url=TARGET, name="second").json
    renamed = client.patch(f"/api/v1/consumers/{second['id']}", json={"name": first["id"]}, headers=admin)
    assert renamed.status_code == 409
    # The first consumer is still the one its id names.
    assert client.get(f"/api/v1/consumers/{first['id']}", headers=admin).json["name"] == "first"
    # A consumer may carry its own id as its name.
    own = client.patch(f"/api/v1/consumers/{second['id']}", json={"name": second["id"]}, headers=admin)
    assert own.status_code == 200, own.json


def test_the_list_is_paged_like_queues(client, admin, queue):
    ids = [create(client, admin, queue=queue, target_url=TARGET, name=f"p{n}").json["id"] for n in range(5)]
    first = client.get("/api/v1/consumers?page_size=2", headers=admin)
    assert first.status_code == 200
    assert set(first.json) == set(client.get("/api/v1/queues?page_size=1", headers=admin).json)
    assert (first.json["page"], first.json["page_size"], first.json["total"]) == (1, 2, 5)
    pages = [client.get(f"/api/v1/consumers?page={p}&page_size=2", headers=admin).json for p in (1, 2, 3, 4)]
    assert [c["id"] for page in pages for c in page["items"]] == ids
    assert [len(page["items"]) for page in pages] == [2, 2, 1, 0]
    assert all("stats" in c for c in pages[0]["items"])
    default = client.get("/api/v1/consumers", headers=admin).json
    assert (default["page"], default["page_size"], len(default["items"])) == (1, 100, 5)
    by_queue = client.get(f"/api/v1/consumers?queue={queue}&page_size=1", headers=admin).json
    assert by_queue["total"] == 5 and len(by_queue["items"]) == 1
    assert error_field(client.get("/api/v1/consumers?page_size=501", headers=admin)) == "page_size"
    assert error_field(client.get("/api/v1/consumers?page=0", headers=admin)) == "page"
    # The seed's route still answers every consumer as one list.
    seed = client.get("/getConsumers", headers=admin).json
    assert [c["consumerId"] for c in seed] == ids
