"""Fixtures over the real RabbitMQ, its management API, SQLite and PostgreSQL.

Without a reachable broker the tests that take the ``broker`` fixture (directly or
through ``mgmt``, ``queue_name``, ``amqp``) are skipped on a developer's machine and
fail in CI (``CI`` set), so a green CI run always means the broker was there. Those
tests carry the ``broker`` marker; ``-m "not broker"`` runs the others, which need none.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pika
import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.endpoint import Endpoint
from tests.workers import EngineThread
from workerrmq.api import create_app
from workerrmq.broker.management import ManagementClient
from workerrmq.errors import NotFound
from workerrmq.settings import HTTP_CLIENTS, Settings
from workerrmq.store import Database

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
MANAGEMENT_URL = os.environ.get("TEST_RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
#: The workers' delivery client in this run (``HTTP_CLIENT=reqwest pytest ...``): every
#: engine a test starts, on a thread or as a process, delivers with it.
HTTP_CLIENT = os.environ.get("HTTP_CLIENT", "").strip().lower() or "aiohttp"
if HTTP_CLIENT not in HTTP_CLIENTS:
    raise pytest.UsageError(f"HTTP_CLIENT must be {' or '.join(HTTP_CLIENTS)}, got {HTTP_CLIENT!r}")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or default_port), timeout=2).close()
    except OSError:
        return False
    return True


def _require(url: str, port: int, what: str) -> None:
    if _reachable(url, port):
        return
    message = f"{what} is not reachable at {urlsplit(url).hostname}:{urlsplit(url).port or port}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker: needs RabbitMQ (set on every test that takes `broker`)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test whose fixtures include ``broker``: ``-m "not broker"`` runs the rest,
    which need no RabbitMQ."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def broker() -> str:
    """The AMQP URL of a running RabbitMQ with the management plugin."""
    _require(RABBITMQ_URL, 5672, "RabbitMQ")
    _require(MANAGEMENT_URL, 15672, "the RabbitMQ management API")
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def mgmt(broker: str) -> ManagementClient:
    return ManagementClient(MANAGEMENT_URL, "/")


@pytest.fixture
def make_settings(tmp_path) -> Callable[..., Settings]:
    """Settings over the test broker and a throwaway SQLite file; keywords override.

    Building settings (and an app from them) needs no broker: the app's broker routes
    answer 503 without one. A test that talks to the broker takes ``broker`` (or a
    fixture built on it: ``mgmt``, ``queue_name``, ``amqp``). ``http_client`` is the
    run's :data:`HTTP_CLIENT` unless a test names one.
    """

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "rabbitmq_url": RABBITMQ_URL,
            "rabbitmq_management_url": MANAGEMENT_URL,
            "database_url": f"sqlite:///{tmp_path}/workerrmq.sqlite3",
            "broker_timeout": 3.0,
            # Tests send many bad keys on purpose; the limiter has tests of its own.
            "auth_failure_limit": 100_000,
            "http_client": HTTP_CLIENT,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["workerrmq"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_key(app: Flask) -> Callable[[str], dict[str, str]]:
    """Create a key of a scope; returns the Authorization header to send it."""

    def make(scope: str) -> dict[str, str]:
        _, token = app.extensions["workerrmq"].keys.create(f"{scope}-{uuid.uuid4().hex[:8]}", scope)
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def admin(make_key: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return make_key("admin")


@pytest.fixture
def queue_name(mgmt: ManagementClient) -> Iterator[Callable[[], str]]:
    """Unique queue names, deleted from the broker after the test."""
    names: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name

    yield make
    for name in names:
        for suffix in ("", ".dlq"):
            with contextlib.suppress(NotFound):
                mgmt.delete_queue(name + suffix, if_empty=False, if_unused=False)


@pytest.fixture
def make_queue(
    client: FlaskClient, admin: dict[str, str], queue_name: Callable[..., str]
) -> Callable[..., str]:
    """Create a queue through the API; keywords go into the request. Returns its name."""

    def make(prefix: str = "t", **fields: object) -> str:
        name = queue_name(prefix)
        response = client.post("/api/v1/queues", json={"name": name, **fields}, headers=admin)
        assert response.status_code == 201, response.get_data(as_text=True)
        return name

    return make


@pytest.fixture
def queue(make_queue: Callable[..., str]) -> str:
    """A queue made through the API for this test."""
    return make_queue("q")


@pytest.fixture
def make_consumer(
    client: FlaskClient, admin: dict[str, str], make_queue: Callable[..., str]
) -> Callable[..., tuple[dict[str, Any], str]]:
    """Create a queue and a consumer on it through the API; returns (consumer, queue)."""

    def make(target_url: str, **fields: object) -> tuple[dict[str, Any], str]:
        queue = make_queue("c")
        response = client.post(
            "/api/v1/consumers", json={"queue": queue, "target_url": target_url, **fields}, headers=admin
        )
        assert response.status_code == 201, response.json
        return response.json, queue

    return make


@pytest.fixture
def amqp(broker: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel, to look at what reached the broker."""
    connection = pika.BlockingConnection(pika.URLParameters(broker))
    yield connection.channel()
    if connection.is_open:
        connection.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    _require(POSTGRES_URL, 5432, "PostgreSQL")
    name = f"workerrmq_test_{uuid.uuid4().hex[:10]}"
    admin_dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each test that takes this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A real HTTP endpoint that records what it receives."""
    with Endpoint() as ep:
        yield ep


@pytest.fixture
def start_engine(broker: str) -> Iterator[Callable[..., EngineThread]]:
    """Start worker engines on threads (they need RabbitMQ); each is stopped gracefully
    after the test."""
    engines: list[EngineThread] = []

    def start(settings: Settings, **options: float) -> EngineThread:
        engine = EngineThread(settings, **options).start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database on SQLite, then on PostgreSQL (through ``database_url``)."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], tuple[FlaskClient, dict[str, str]]]]:
    """An app with settings of the test's own, and an admin key's header for it."""
    apps: list[Flask] = []

    def make(settings: Settings) -> tuple[FlaskClient, dict[str, str]]:
        app = create_app(settings)
        apps.append(app)
        _, token = app.extensions["workerrmq"].keys.create(f"admin-{uuid.uuid4().hex[:8]}", "admin")
        return app.test_client(), {"Authorization": f"Bearer {token}"}

    yield make
    for app in apps:
        app.extensions["workerrmq"].close()
