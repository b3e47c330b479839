"""The subscription fields through the API: each shape checked with a 400 naming the field,
the auth secrets write-only in every answer and encrypted at rest. Only the tests that
create consumers on a queue need RabbitMQ."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from workerrmq.store.consumers import ConsumerStore
from workerrmq.store.crypto import Cipher

SECRET = "tok-very-secret-4f1d9a"
LONG = "x" * 5000

BAD = [
    ({"source": {"exchange": "e", "binding_keys": []}}, "source.binding_keys"),
    ({"source": {"exchange": "e", "binding_keys": "order.*"}}, "source.binding_keys"),
    ({"source": {"exchange": "e", "binding_keys": ["a\r\nb"]}}, "source.binding_keys"),
    ({"source": {"exchange": "e", "binding_keys": [LONG]}}, "source.binding_keys"),
    ({"source": {"exchange": LONG, "binding_keys": ["a"]}}, "source.exchange"),
    ({"source": {"exchange": 7, "binding_keys": ["a"]}}, "source.exchange"),
    ({"source": {"exchange": "e"}}, "source"),
    ({"source": {"exchange": "e", "binding_keys": ["a"], "headers": {"a": "1"}}}, "source"),
    ({"source": {"exchange": "e", "match": "some", "headers": {"a": "1"}}}, "source.match"),
    ({"source": {"exchange": "e", "headers": {"x-tenant": "1"}}}, "source.headers"),
    ({"source": {"exchange": "e", "headers": {"a": [1]}}}, "source.headers"),
    ({"source": {"exchange": "e", "binding_keys": ["a"], "queue": "q"}}, "source.queue"),
    ({"source": "orders"}, "source"),
    ({"filter": LONG}, "filter"),
    ({"filter": 5}, "filter"),
    ({"format": "xml"}, "format"),
    ({"ce_source": "has a space"}, "ce_source"),
    ({"ce_source": "/a\r\nb"}, "ce_source"),
    ({"auth": "Bearer x"}, "auth"),
    ({"auth": {"type": "digest"}}, "auth.type"),
    ({"auth": {"type": "bearer"}}, "auth.token"),
    ({"auth": {"type": "bearer", "token": "a\r\nX-Injected: 1"}}, "auth.token"),
    ({"auth": {"type": "bearer", "token": LONG * 2}}, "auth.token"),
    ({"auth": {"type": "basic", "username": "a:b", "password": "p"}}, "auth.username"),
    (
        {"auth": {"type": "oauth2", "token_url": "ftp://x/", "client_id": "i", "client_secret": "s"}},
        "auth.token_url",
    ),
    ({"auth": {"type": "mtls", "cert_pem": "not a pem", "key_pem": "neither"}}, "auth.cert_pem"),
    ({"auth": {"type": "bearer", "token": "t", "extra": 1}}, "auth.extra"),
    ({"reply": "yes"}, "reply"),
    ({"batch": {"max_messages": 0}}, "batch.max_messages"),
    ({"batch": {"max_messages": 10**30}}, "batch.max_messages"),
    ({"batch": {"max_messages": "5"}}, "batch.max_messages"),
    ({"batch": {"max_wait_ms": 60_001}}, "batch.max_wait_ms"),
    ({"batch": {"encoding": "xml"}}, "batch.encoding"),
    ({"batch": {"size": 5}}, "batch.size"),
    ({"degraded_after": 0}, "degraded_after"),
    ({"degraded_after": 1e12}, "degraded_after"),
    ({"degraded_after": "300"}, "degraded_after"),
    # Fields that cannot go together: the service refuses them, naming the one sent.
    ({"batch": {}, "ordered": True}, "batch"),
    ({"batch": {}, "reply": True}, "batch"),
    ({"batch": {}, "format": "cloudevents-binary"}, "batch"),
]


@pytest.mark.parametrize(("fields", "field"), BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_a_bad_value_is_a_400_naming_its_field(client, admin, fields, field):
    body = {"target_url": "http://127.0.0.1:9/", **fields}
    if "source" not in fields:
        body["queue"] = "q"
    else:
        body["name"] = "n"
    response = client.post("/api/v1/consumers", json=body, headers=admin)
    assert response.status_code == 400, response.json
    assert response.json["error"]["field"].startswith(field), response.json
    assert LONG not in response.get_data(as_text=True)


def test_source_and_queue_are_exclusive_and_source_needs_a_name(client, admin):
    source = {"exchange": "e", "binding_keys": ["a"]}
    response = client.post(
        "/api/v1/consumers", json={"queue": "q", "name": "n", "source": source}, headers=admin
    )
    assert response.status_code == 400
    assert response.json["error"]["field"] == "source"
    response = client.post("/api/v1/consumers", json={"source": source}, headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "name"
    response = client.post("/api/v1/consumers", json={"target_url": "http://x/"}, headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "queue"


def test_auth_secrets_are_encrypted_at_rest(db):
    store = ConsumerStore(db, Cipher(["a SECRET_KEY for this test"]))
    auth = {
        "type": "oauth2",
        "token_url": "https://idp.example/token",
        "client_id": "me",
        "client_secret": SECRET,
    }
    spec = store.create(
        {
            "name": "c",
            "queue": "q",
            "target_url": "http://x/",
            "auth": auth,
            "signing_secret_previous": SECRET + "2",
        }
    )
    assert spec.auth == auth and spec.signing_secret_previous == SECRET + "2"
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM consumers")).mappings().one()
    assert SECRET not in json.dumps({k: str(v) for k, v in row.items()})
    stored_auth = row["auth"] if isinstance(row["auth"], dict) else json.loads(row["auth"])
    assert stored_auth == {**auth, "client_secret": "***"}
    assert store.get("c").auth == auth

    changed = store.update("c", {"auth": {"type": "bearer", "token": SECRET + "3"}})
    assert changed.auth == {"type": "bearer", "token": SECRET + "3"}
    assert changed.signing_secret_previous == SECRET + "2"
    assert store.update("c", {"auth": None}).auth is None


def test_auth_is_shown_as_stars_and_kept_when_sent_back(client, admin, make_consumer, app):
    auth = {"type": "basic", "username": "relay", "password": SECRET}
    created, _queue = make_consumer("http://127.0.0.1:9/", auth=auth)
    ref = created["id"]
    answers = [
        created,
        client.get(f"/api/v1/consumers/{ref}", headers=admin).json,
        client.get("/api/v1/consumers", headers=admin).json,
    ]
    for answer in answers:
        assert SECRET not in json.dumps(answer)
    assert answers[1]["auth"] == {"type": "basic", "username": "relay", "password": "***"}

    store = app.extensions["workerrmq"].consumers.store
    response = client.patch(f"/api/v1/consumers/{ref}", json={"auth": answers[1]["auth"]}, headers=admin)
    assert response.status_code == 200, response.json
    assert SECRET not in response.get_data(as_text=True)
    assert store.get(ref).auth == auth

    response = client.patch(
        f"/api/v1/consumers/{ref}", json={"auth": {"type": "bearer", "token": "***"}}, headers=admin
    )
    assert response.status_code == 400
    assert response.json["error"]["field"] == "auth.token"
    assert store.get(ref).auth == auth

    with store.db.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM consumers WHERE id = :id"), {"id": ref}).mappings().one()
    assert SECRET not in json.dumps({k: str(v) for k, v in row.items()})


def test_the_new_fields_round_trip_with_their_defaults(client, admin, make_consumer):
    plain, _ = make_consumer("http://127.0.0.1:9/")
    assert {k: plain[k] for k in ("source", "filter", "format", "ce_source", "auth", "reply", "batch")} == {
        "source": None,
        "filter": None,
        "format": "raw",
        "ce_source": None,
        "auth": None,
        "reply": False,
        "batch": None,
    }
    assert plain["degraded_after"] == 300
    response = client.patch(
        f"/api/v1/consumers/{plain['id']}",
        json={"batch": {"max_messages": 10}, "ce_source": "/shop/orders", "degraded_after": 60},
        headers=admin,
    )
    assert response.status_code == 200, response.json
    assert response.json["batch"] == {"max_messages": 10, "max_wait_ms": 50, "encoding": "json-array"}
    assert response.json["ce_source"] == "/shop/orders" and response.json["degraded_after"] == 60
    # Turning reply on for a batching consumer is refused, naming the field sent.
    response = client.patch(f"/api/v1/consumers/{plain['id']}", json={"reply": True}, headers=admin)
    assert response.status_code == 400
    assert response.json["error"]["field"] == "reply"
