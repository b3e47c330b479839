"""The broker going away and coming back: 503 with Retry-After, then service without restart."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask

from tests.conftest import MANAGEMENT_URL
from tests.support import TcpProxy, wait_for
from workerrmq.api import create_app

TOKEN = "wrmq_outage-test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def proxies(broker: str) -> Iterator[tuple[TcpProxy, TcpProxy]]:
    amqp_target = urlsplit(broker)
    mgmt_target = urlsplit(MANAGEMENT_URL)
    with (
        TcpProxy(amqp_target.hostname, amqp_target.port or 5672) as amqp_proxy,
        TcpProxy(mgmt_target.hostname, mgmt_target.port or 15672) as mgmt_proxy,
    ):
        yield amqp_proxy, mgmt_proxy


@pytest.fixture
def proxied_app(make_settings, broker, proxies) -> Iterator[Flask]:
    amqp_proxy, mgmt_proxy = proxies
    settings = make_settings(
        rabbitmq_url=through(broker, amqp_proxy),
        rabbitmq_management_url=through(MANAGEMENT_URL, mgmt_proxy),
        bootstrap_api_key=TOKEN,
        broker_timeout=1.0,
    )
    app = create_app(settings)
    yield app
    app.extensions["workerrmq"].close()


def assert_unavailable(response) -> None:
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    assert int(response.headers["Retry-After"]) > 0
    error = response.json["error"]
    assert error["code"] == "broker_unavailable"
    assert "Traceback" not in response.get_data(as_text=True)


def test_outage_answers_503_then_recovers_without_restart(proxied_app, proxies, queue_name, amqp):
    amqp_proxy, mgmt_proxy = proxies
    client = proxied_app.test_client()
    name = queue_name("outage")
    assert client.post("/api/v1/queues", json={"name": name}, headers=ADMIN).status_code == 201
    assert (
        client.post(f"/api/v1/queues/{name}/messages", json={"body": "before"}, headers=ADMIN).status_code
        == 201
    )
    assert amqp_proxy.connections >= 1 and mgmt_proxy.connections >= 1  # really proxied

    amqp_proxy.cut()
    mgmt_proxy.cut()
    assert_unavailable(client.post(f"/api/v1/queues/{name}/messages", json={"body": "during"}, headers=ADMIN))
    assert_unavailable(client.get("/api/v1/queues", headers=ADMIN))
    assert_unavailable(client.get(f"/api/v1/queues/{name}", headers=ADMIN))
    assert_unavailable(
        client.post("/messagePublish", json={"queueName": name, "message": "x"}, headers=ADMIN)
    )
    assert_unavailable(client.get("/getQueues", headers=ADMIN))
    assert client.get("/healthz").status_code == 200  # the process itself is fine
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["status"] == "unavailable"
    assert ready.json["checks"]["database"] == "ok"
    assert ready.json["checks"]["broker"] != "ok"
    assert ready.json["checks"]["management"] != "ok"
    # Auth and key management do not depend on the broker.
    assert client.get("/api/v1/keys", headers=ADMIN).status_code == 200

    amqp_proxy.heal()
    mgmt_proxy.heal()

    def publishes() -> bool:
        response = client.post(f"/api/v1/queues/{name}/messages", json={"body": "after"}, headers=ADMIN)
        return response.status_code == 201

    wait_for(publishes, timeout=15, what="publishing to work again")
    listed = wait_for(
        lambda: client.get(f"/api/v1/queues?name={name}", headers=ADMIN).json,
        timeout=15,
        what="listing to work again",
    )
    assert [q["name"] for q in listed["items"]] == [name]
    assert client.get("/readyz").status_code == 200
    # Only the confirmed messages reached the queue: the one from the outage was refused.
    bodies = [amqp.basic_get(name, auto_ack=True)[2] for _ in range(2)]
    assert bodies == [b"before", b"after"]
    assert amqp.basic_get(name, auto_ack=True)[0] is None


def test_readyz_names_the_failed_dependency(proxied_app, proxies):
    amqp_proxy, mgmt_proxy = proxies
    client = proxied_app.test_client()
    assert client.get("/readyz").status_code == 200

    mgmt_proxy.cut()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["management"] != "ok"
    assert "management" in ready.json["checks"]["management"]
    assert ready.json["checks"]["broker"] == "ok"
    assert ready.json["checks"]["database"] == "ok"
    mgmt_proxy.heal()

    amqp_proxy.cut()
    ready = wait_for(
        lambda: (r := client.get("/readyz")).status_code == 503 and r,
        timeout=10,
        what="readyz to notice the AMQP outage",
    )
    assert ready.json["checks"]["broker"] != "ok"
    assert ready.json["checks"]["management"] == "ok"
    amqp_proxy.heal()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=15, what="ready again")


def test_database_failure_is_503_and_named_by_readyz(make_settings, tmp_path, broker):
    app = create_app(make_settings(bootstrap_api_key=TOKEN))
    try:
        assert app.test_client().get("/api/v1/keys", headers=ADMIN).status_code == 200
        app.extensions["workerrmq"].db.engine.dispose()
        # Make the SQLite file unusable: its directory disappears under the app.
        for path in tmp_path.iterdir():
            if path.name.startswith("workerrmq.sqlite3"):
                path.unlink()
        (tmp_path / "workerrmq.sqlite3").mkdir()
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"]["database"] != "ok"
        assert ready.json["checks"]["broker"] == "ok"
        # The key is still trusted from a moment ago; listing consumers needs the database.
        keyed = app.test_client().get("/api/v1/consumers", headers=ADMIN)
        assert keyed.status_code == 503
        assert keyed.json["error"]["code"] == "database_unavailable"
        assert int(keyed.headers["Retry-After"]) > 0
    finally:
        app.extensions["workerrmq"].close()
