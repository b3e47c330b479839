"""/api/v1/connections: list the broker's connections and close one."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pika
import pytest

from tests.support import wait_for


@pytest.fixture
def named_connection(broker: str) -> Iterator[Callable[[], tuple[str, pika.BlockingConnection]]]:
    """Open pika connections with a unique connection_name; closed after the test."""
    opened: list[pika.BlockingConnection] = []

    def open_one() -> tuple[str, pika.BlockingConnection]:
        name = f"test-conn-{uuid.uuid4().hex[:10]}"
        params = pika.URLParameters(broker)
        params.client_properties = {"connection_name": name}
        connection = pika.BlockingConnection(params)
        connection.channel()
        opened.append(connection)
        return name, connection

    yield open_one
    for connection in opened:
        if connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()


def find(client, headers, connection_name: str) -> dict | None:
    for c in client.get("/api/v1/connections", headers=headers).json:
        if c["client_properties"].get("connection_name") == connection_name:
            return c
    return None


def test_list_shows_a_named_connection(client, admin, named_connection):
    connection_name, connection = named_connection()
    found = wait_for(
        lambda: find(client, admin, connection_name), timeout=15, what="connection in the management API"
    )
    assert found["name"]
    assert found["user"] == "guest"
    assert found["vhost"] == "/"
    assert found["peer_host"] in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    local_port = connection._impl._transport._sock.getsockname()[1]
    assert found["peer_port"] == local_port
    assert found["client_properties"]["product"] == "Pika Python Client Library"
    assert found["state"] in ("running", "blocked", "blocking", "flow")
    assert dt.datetime.fromisoformat(found["connected_at"]).year >= 2024
    assert isinstance(found["channels"], int)

    # The seed's route lists the same connection as {"connectionId": ...}.
    seed = client.get("/getConnections", headers=admin)
    assert seed.status_code == 200
    assert all(isinstance(c["connectionId"], str) and c["connectionId"] for c in seed.json)
    [entry] = [c for c in seed.json if c["connectionId"] == found["name"]]
    assert entry["client_properties"]["connection_name"] == connection_name


def test_delete_closes_the_connection(client, admin, named_connection):
    connection_name, connection = named_connection()
    found = wait_for(
        lambda: find(client, admin, connection_name), timeout=15, what="connection in the management API"
    )
    url = "/api/v1/connections/" + quote(found["name"], safe="")
    response = client.delete(url + "?reason=closed+by+test", headers=admin)
    assert response.status_code == 204

    def closed_by_broker() -> bool:
        try:
            connection.process_data_events(time_limit=0.1)
        except pika.exceptions.ConnectionClosedByBroker as exc:
            assert "closed by test" in exc.reply_text
            return True
        return not connection.is_open

    wait_for(closed_by_broker, timeout=15, what="the broker to close the connection")
    wait_for(
        lambda: find(client, admin, connection_name) is None,
        timeout=15,
        what="connection to disappear from the list",
    )
    assert client.delete(url, headers=admin).status_code == 404


def test_delete_unknown_connection_is_404(client, admin, broker):
    response = client.delete("/api/v1/connections/no%20such%20connection", headers=admin)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_delete_needs_admin(client, make_key, named_connection):
    publish = make_key("publish")
    response = client.delete("/api/v1/connections/whatever", headers=publish)
    assert response.status_code == 403
