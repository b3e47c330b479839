"""TLS to everything, against real TLS listeners made at test time with ``trustme``.

A private RabbitMQ node (its own ports, never the shared broker) listens for AMQP over TLS
only, asks every client for a certificate, and serves its management API over https. A
private PostgreSQL accepts TLS connections only. The API itself is served over https by a
real ``workerrmq api`` process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme
from sqlalchemy import text

from tests.nodes import (
    PrivatePostgres,
    RabbitNode,
    management_get,
    postgres_installed,
    rabbit_nodes,
    skip_or_fail,
)
from tests.support import free_port, wait_for
from tests.workers import stop_processes
from workerrmq.broker.connect import connect_first
from workerrmq.broker.management import ManagementClient
from workerrmq.broker.publisher import OutgoingMessage, Publisher
from workerrmq.errors import BrokerUnavailable, DatabaseUnavailable
from workerrmq.settings import Settings
from workerrmq.store import Database


@dataclasses.dataclass(frozen=True)
class Certs:
    """PEM files: a CA, a server certificate for ``localhost`` only, a client certificate,
    and a second CA that signed none of them."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("workerrmq-client.example")
    paths = Certs(
        *(
            folder / name
            for name in ("ca.pem", "other-ca.pem", "server.pem", "server.key", "client.pem", "client.key")
        )
    )
    ca.cert_pem.write_to_path(paths.ca)
    other.cert_pem.write_to_path(paths.other_ca)
    server.cert_chain_pems[0].write_to_path(paths.server_cert)
    server.private_key_pem.write_to_path(paths.server_key)
    client.cert_chain_pems[0].write_to_path(paths.client_cert)
    client.private_key_pem.write_to_path(paths.client_key)
    for path in dataclasses.astuple(paths):
        path.chmod(0o644)  # the private nodes may run as another user
    return paths


@pytest.fixture(scope="module")
def tls_node(certs: Certs) -> Iterator[RabbitNode]:
    """A private RabbitMQ node: AMQP over TLS only (client certificate required), https management."""
    config = f"""listeners.tcp = none
listeners.ssl.default = 127.0.0.1:{{node.amqp_port}}
ssl_options.cacertfile = {certs.ca}
ssl_options.certfile = {certs.server_cert}
ssl_options.keyfile = {certs.server_key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
management.ssl.ip = 127.0.0.1
management.ssl.port = {{node.management_port}}
management.ssl.cacertfile = {certs.ca}
management.ssl.certfile = {certs.server_cert}
management.ssl.keyfile = {certs.server_key}
"""
    with rabbit_nodes(1, config=config, tls_management=True) as (node,):
        yield node


def amqps_url(
    node: RabbitNode,
    certs: Certs,
    *,
    host: str = "localhost",
    ca: Path | None = None,
    client_cert: bool = True,
) -> str:
    query = f"cafile={ca or certs.ca}"
    if client_cert:
        query += f"&certfile={certs.client_cert}&keyfile={certs.client_key}"
    return f"amqps://guest:guest@{host}:{node.amqp_port}/%2F?{query}"


def test_worker_and_api_publisher_deliver_over_amqps(
    tls_node, certs, make_settings, make_app, start_engine, endpoint
):
    settings = make_settings(
        rabbitmq_url=amqps_url(tls_node, certs),
        rabbitmq_management_url=f"https://guest:guest@localhost:{tls_node.management_port}",
        rabbitmq_management_ca_file=str(certs.ca),
    )
    client, headers = make_app(settings)
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    assert client.post("/api/v1/queues", json={"name": queue}, headers=headers).status_code == 201
    consumer = client.post(
        "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=headers
    ).json
    worker = start_engine(settings)
    worker.runner(consumer["id"])
    for n in range(20):
        response = client.post(f"/api/v1/queues/{queue}/messages", json={"body": f"m{n}"}, headers=headers)
        assert response.status_code == 201, response.json
    wait_for(lambda: len(endpoint.bodies()) == 20, what="20 deliveries over amqps")
    assert sorted(endpoint.bodies()) == sorted(f"m{n}".encode() for n in range(20))

    def listed() -> list[dict]:  # the management API lists a connection once its stats arrive
        found = management_get(tls_node, "/api/connections", verify=str(certs.ca))
        return found if len(found) >= 2 and all("ssl" in c for c in found) else []

    connections = wait_for(listed, timeout=30, what="the node to list the connections")
    names = {c["client_properties"].get("connection_name") for c in connections}
    assert all(c["ssl"] for c in connections)
    assert "workerrmq-api" in names  # the API's publisher, beside the worker's connections
    assert all(c["peer_cert_subject"] for c in connections)  # each sent the client certificate


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong CA", "TLS: certificate verify failed: self-signed certificate in certificate chain"),
        ("wrong server name", "TLS: certificate verify failed: IP address mismatch"),
        # The broker's alert may come after the client's handshake already ended (TLS 1.3): then
        # the client sees a closed connection, not the alert. Refused either way.
        ("no client certificate", "refused"),
    ],
)
def test_amqps_refuses_with_a_clear_error(tls_node, certs, caplog, case, expected):
    url = {
        "wrong CA": amqps_url(tls_node, certs, ca=certs.other_ca),
        "wrong server name": amqps_url(tls_node, certs, host="127.0.0.1"),
        "no client certificate": amqps_url(tls_node, certs, client_cert=False),
    }[case]
    caplog.set_level(logging.INFO, logger="workerrmq.broker.connect")
    with pytest.raises(Exception):  # noqa: B017 - aiormq's own error; the log says why
        asyncio.run(connect_first([url], timeout=5, name="tls-test"))
    refusals = [r.getMessage() for r in caplog.records if r.name == "workerrmq.broker.connect"]
    assert len(refusals) == 1 and expected in refusals[0], refusals
    if expected.startswith("TLS"):
        assert caplog.records[-1].levelno == logging.WARNING
    assert "guest:guest" not in refusals[0]

    publisher = Publisher([url], timeout=5)
    message = OutgoingMessage(routing_key="nowhere", body=b"x", message_id="1")
    with pytest.raises(BrokerUnavailable):
        publisher.publish("", [message])
    publisher.close()


def test_https_management_api_verifies_its_ca(tls_node, certs):
    url = f"https://guest:guest@localhost:{tls_node.management_port}"
    ManagementClient(url, "/", ca_file=str(certs.ca)).ping()
    with pytest.raises(BrokerUnavailable, match="TLS: certificate verify failed"):
        ManagementClient(url, "/").ping()  # the system's CAs do not know this one
    with pytest.raises(BrokerUnavailable, match="TLS: certificate verify failed"):
        ManagementClient(url.replace("localhost", "127.0.0.1"), "/", ca_file=str(certs.ca)).ping()


def test_tls_settings_come_from_the_environment(certs):
    settings = Settings.from_env(
        {
            "RABBITMQ_URL": f"amqps://u:p@localhost:5671/%2F?cafile={certs.ca}",
            "RABBITMQ_MANAGEMENT_URL": "https://u:p@localhost:15671",
            "RABBITMQ_MANAGEMENT_CA_FILE": str(certs.ca),
            "TLS_CERT_FILE": str(certs.server_cert),
            "TLS_KEY_FILE": str(certs.server_key),
        },
        env_file=None,
    )
    assert settings.rabbitmq_management_ca_file == str(certs.ca)
    assert (settings.tls_cert_file, settings.tls_key_file) == (str(certs.server_cert), str(certs.server_key))


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_postgres(certs: Certs) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL that takes TLS connections only, with a certificate for localhost."""
    if not postgres_installed():
        pytest.skip("PostgreSQL's initdb is not installed")
    hba = (
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n"
        "hostnossl all all all reject\n"
    )
    server = PrivatePostgres(settings={}, hba=hba)
    for name, source in (("server.pem", certs.server_cert), ("server.key", certs.server_key)):
        copy = server.dir / name
        copy.write_bytes(source.read_bytes())
        copy.chmod(0o600)
        server.own(copy)
    server.settings.update(
        {
            "ssl": "on",
            "ssl_cert_file": str(server.dir / "server.pem"),
            "ssl_key_file": str(server.dir / "server.key"),
        }
    )
    try:
        server.start()
    except (RuntimeError, subprocess.SubprocessError) as exc:
        server.stop()
        skip_or_fail(f"a private PostgreSQL would not start: {exc}")
    yield server
    server.stop()


def pg_url(server: PrivatePostgres, query: str, host: str = "localhost") -> str:
    return f"postgresql+psycopg://postgres@{host}:{server.port}/postgres?{query}"


def test_database_url_with_sslmode_verify_full(tls_postgres, certs, make_settings, make_app):
    url = pg_url(tls_postgres, f"sslmode=verify-full&sslrootcert={certs.ca}")
    database = Database(url)
    try:
        database.migrate()
        with database.session() as session:
            assert session.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()
    finally:
        database.dispose()
    client, headers = make_app(make_settings(database_url=url))  # the API's store over TLS
    assert client.get("/api/v1/keys", headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("case", "query", "host"),
    [
        ("wrong CA", "sslmode=verify-full&sslrootcert={other}", "localhost"),
        ("wrong server name", "sslmode=verify-full&sslrootcert={ca}", "127.0.0.1"),
        ("no TLS", "sslmode=disable", "localhost"),
    ],
)
def test_database_refuses_wrong_ca_name_or_plain_connection(tls_postgres, certs, case, query, host):
    url = pg_url(tls_postgres, query.format(other=certs.other_ca, ca=certs.ca), host)
    database = Database(url)
    try:
        with pytest.raises(DatabaseUnavailable):
            database.ping()
    finally:
        database.dispose()


# -- the API over https ----------------------------------------------------------------------------


def test_api_serves_https_with_tls_cert_and_key(tmp_path, certs, broker):
    port = free_port()
    key = "wrmq_tls-test-admin-key-0123456789abcdef"
    env = {
        **os.environ,
        "BIND": f"127.0.0.1:{port}",
        "API_WORKERS": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "WORKERRMQ_API_KEY": key,
        "TLS_CERT_FILE": str(certs.server_cert),
        "TLS_KEY_FILE": str(certs.server_key),
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "workerrmq.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"https://localhost:{port}"
    try:

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", verify=str(certs.ca), timeout=2).ok
            except requests.ConnectionError:
                assert api.poll() is None, log.read_text()
                return False

        wait_for(up, timeout=30, what="the API over https")
        answer = requests.get(
            f"{base}/api/v1/keys",
            headers={"Authorization": f"Bearer {key}"},
            verify=str(certs.ca),
            timeout=10,
        )
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{base}/healthz", timeout=5)  # a client that does not know the CA
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://localhost:{port}/healthz", timeout=5)  # no plain http

        # A pooled client keeps its connection open and idle, answering no close_notify,
        # and another client has connected but sent nothing: neither holds the stop.
        with requests.Session() as pooled, _tls_connection(port, certs.ca) as fresh:
            assert pooled.get(f"{base}/healthz", verify=str(certs.ca), timeout=10).ok
            api.send_signal(signal.SIGTERM)
            wait_for(lambda: api.poll() is not None, timeout=STOP_BOUND, what="the API to stop")
            assert api.returncode == 0
            fresh.settimeout(10)
            assert fresh.recv(100) == b""  # the server's close_notify (a bare EOF raises)
    finally:
        stop_processes(api)
    assert key not in log.read_text()


#: Seconds the API may take to stop with only idle connections open: well below Gunicorn's
#: graceful_timeout (30 s), after which it kills a process that has not stopped.
STOP_BOUND = 15


def _tls_connection(port: int, ca: Path) -> ssl.SSLSocket:
    """A TLS connection to the API that has sent no request; a bare EOF raises on it."""
    context = ssl.create_default_context(cafile=str(ca))
    sock = socket.create_connection(("localhost", port), timeout=10)
    return context.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
