"""Faults while messages flow: nothing confirmed may be lost.

Each total-queue run publishes ``WORKERRMQ_CHAOS_N`` ids (2,000 by default,
``./run.sh soak`` runs 100,000) while one kind of fault is injected, and
appends its figures to ``var/reliability.jsonl``. The broker restarts are those of a
private RabbitMQ node (its own ports and data directory, :mod:`tests.nodes`): the
machine's shared broker is never stopped.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from tests.chaos import CHAOS_N, ConfirmedPublisher, Tally
from tests.endpoint import Endpoint
from tests.nodes import RabbitNode, rabbit_nodes
from tests.support import TcpProxy, wait_for
from tests.workers import stop_processes, worker_process
from workerrmq.broker.management import ManagementClient
from workerrmq.errors import WorkerRMQError
from workerrmq.settings import Settings

pytestmark = pytest.mark.chaos

#: Faults of each kind per run: a few in the default suite, more in a soak.
FAULTS = max(3, CHAOS_N // 10_000)
RATE = max(800.0, CHAOS_N / 60)  # messages per second the publisher aims at


class Relay:
    """A queue, a consumer on it, and a way to start worker processes whose broker
    connection runs through a TCP proxy the test can cut."""

    def __init__(
        self,
        settings: Settings,
        client: FlaskClient,
        admin: dict[str, str],
        mgmt: ManagementClient,
        queue: str,
        endpoint: Endpoint,
        log: Path,
    ) -> None:
        self.settings, self.client, self.admin, self.mgmt = settings, client, admin, mgmt
        self.queue, self.endpoint, self.log = queue, endpoint, log
        self.broker_url = settings.rabbitmq_url
        broker = urlsplit(self.broker_url)
        self.proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672).__enter__()
        self.workers: list[subprocess.Popen[bytes]] = []
        answer = client.post("/api/v1/queues", json={"name": queue}, headers=admin)
        assert answer.status_code == 201, answer.json
        answer = client.post(
            "/api/v1/consumers",
            json={
                "queue": queue,
                "target_url": endpoint.url,
                "initial_delay": 0.05,
                "max_delay": 0.5,
                "max_attempts": 50,
                "concurrency": 32,
                "circuit_threshold": 100_000,
            },
            headers=admin,
        )
        assert answer.status_code == 201, answer.json
        self.consumer: dict[str, Any] = answer.json

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        broker = urlsplit(self.broker_url)
        proxied = self.broker_url.replace(f":{broker.port}/", f":{self.proxy.port}/")
        worker = worker_process(dataclasses.replace(self.settings, rabbitmq_url=proxied), self.log, **env)
        self.workers.append(worker)
        return worker

    def consuming(self) -> bool:
        try:
            return (self.mgmt.get_queue(self.queue).get("consumers") or 0) >= 1
        except WorkerRMQError:  # the management API is not back yet after a restart
            return False

    def drain(self, tally: Tally, timeout: float = max(180.0, CHAOS_N / 200)) -> dict[str, object]:
        wait_for(
            lambda: tally.missing(self.endpoint) == 0,
            timeout=timeout,
            interval=0.2,
            what=f"every confirmed id at the endpoint ({tally.missing(self.endpoint)} missing)",
        )
        wait_for(
            lambda: _settled(self.mgmt, self.queue),
            timeout=60,
            interval=0.5,
            what="the queue to have nothing ready or unacked",
        )
        return tally.check(self.endpoint)

    def close(self) -> None:
        stop_processes(*self.workers)
        self.proxy.cut()


@pytest.fixture
def relay(make_settings, client, admin, queue_name, endpoint, tmp_path, mgmt) -> Iterator[Relay]:
    """A relay over the shared broker (whose connections the test may cut, never the broker)."""
    relay = Relay(
        make_settings(), client, admin, mgmt, queue_name("chaos"), endpoint, tmp_path / "workers.log"
    )
    yield relay
    relay.close()


@pytest.fixture
def private_node() -> Iterator[RabbitNode]:
    """A RabbitMQ node of this test's own, which it may stop and start."""
    with rabbit_nodes(1) as (node,):
        yield node


@pytest.fixture
def private_relay(private_node, make_settings, make_app, endpoint, tmp_path) -> Iterator[Relay]:
    """A relay whose API, workers and publisher all use :func:`private_node`."""
    settings = make_settings(
        rabbitmq_url=private_node.amqp_url(), rabbitmq_management_url=private_node.management_url()
    )
    client, admin = make_app(settings)
    mgmt = ManagementClient(settings.rabbitmq_management_url, "/")
    queue = f"chaos-{uuid.uuid4().hex[:10]}"  # the node and its queues go with the test
    relay = Relay(settings, client, admin, mgmt, queue, endpoint, tmp_path / "workers.log")
    yield relay
    relay.close()


def _settled(mgmt, queue: str) -> bool:
    q = mgmt.get_queue(queue)
    return (q.get("messages_ready"), q.get("messages_unacknowledged")) == (0, 0)


def _assert_nothing_lost(figures: dict[str, object]) -> None:
    assert figures["lost"] == 0, figures
    assert figures["unexpected"] == 0, figures
    assert figures["confirmed"] == CHAOS_N, figures


def _publish(relay, tally: Tally) -> ConfirmedPublisher:
    publisher = ConfirmedPublisher(relay.broker_url, relay.queue, tally, CHAOS_N, rate=RATE)
    publisher.start()
    return publisher


def _during(publisher: ConfirmedPublisher, faults: int) -> list[float]:
    """Moments (monotonic) spread over the publishing window at which to inject a fault."""
    window = CHAOS_N / RATE
    start = time.monotonic()
    return [start + window * (i + 1) / (faults + 1) for i in range(faults)]


def _at(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))  # a fault schedule, not a wait on a condition


def _finish(publisher: ConfirmedPublisher) -> None:
    publisher.join(max(300.0, CHAOS_N / 100) + 30)
    assert not publisher.is_alive() and publisher.error is None, publisher.error


def test_connection_cut_again_and_again(relay, endpoint):
    tally = Tally("connection cuts")
    relay.start_worker()
    wait_for(relay.consuming, timeout=30, what="the worker to consume")
    publisher = _publish(relay, tally)
    for moment in _during(publisher, FAULTS * 2):
        _at(moment)
        relay.proxy.cut()
        tally.faults["connection cut"] += 1
        relay.proxy.heal()
    _finish(publisher)
    _assert_nothing_lost(relay.drain(tally))


@pytest.mark.timeout(300)  # a hang guard: the private node's start and restart take seconds each
def test_broker_restart_mid_stream(private_relay, private_node, endpoint):
    """The broker (a private node) restarts while messages flow: the worker's consumer comes
    back by itself, the API publishes again without a restart of its own, nothing confirmed
    is lost and nothing stays unacked. How long the consumer took to come back is recorded
    (``recovery_seconds`` in ``var/reliability.jsonl``), not asserted."""
    relay = private_relay
    tally = Tally("broker restarts")
    relay.start_worker()
    wait_for(relay.consuming, timeout=30, what="the worker to consume")
    endpoint.delay = 0.002
    publisher = _publish(relay, tally)
    for moment in _during(publisher, max(1, FAULTS // 3)):  # a restart takes seconds
        _at(moment)
        private_node.ctl("stop_app", timeout=120)
        tally.faults["broker restart"] += 1
        private_node.ctl("start_app", timeout=120)
        back = time.monotonic()
        wait_for(relay.consuming, timeout=30, interval=0.2, what="the consumer after the restart")
        tally.recovery_seconds.append(time.monotonic() - back)
    _finish(publisher)
    _assert_nothing_lost(relay.drain(tally))
    # The API publishes again without a restart of its own.
    wait_for(
        lambda: (
            relay.client.post(
                f"/api/v1/queues/{relay.queue}/messages",
                json={"body": "after", "message_id": "after-1"},
                headers=relay.admin,
            ).status_code
            == 201
        ),
        timeout=20,
        what="the publish API after the restart",
    )
    wait_for(lambda: "after-1" in endpoint.ids(), timeout=20, what="the message published after the restart")


def test_worker_killed_mid_delivery(relay, endpoint):
    tally = Tally("worker SIGKILL")
    endpoint.delay = 0.01  # so that deliveries are in flight when the worker dies
    worker = relay.start_worker()
    wait_for(relay.consuming, timeout=30, what="the worker to consume")
    publisher = _publish(relay, tally)
    for moment in _during(publisher, FAULTS):
        _at(moment)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        tally.faults["worker SIGKILL"] += 1
        worker = relay.start_worker()
    _finish(publisher)
    _assert_nothing_lost(relay.drain(tally))


def test_endpoint_slow_resetting_and_failing(relay, endpoint):
    tally = Tally("endpoint faults")
    relay.start_worker()
    wait_for(relay.consuming, timeout=30, what="the worker to consume")
    modes = {
        "slow": (0.2, lambda r: (200, {})),
        "reset": (0.0, lambda r: (0, {})),
        "5xx": (0.0, lambda r: (503, {})),
    }
    publisher = _publish(relay, tally)
    for i, moment in enumerate(_during(publisher, FAULTS * 2)):
        _at(moment)
        kind = list(modes)[i % len(modes)]
        endpoint.delay, endpoint.respond = modes[kind]
        tally.faults[f"endpoint {kind}"] += 1
        time.sleep(0.3)  # how long the endpoint misbehaves
        endpoint.delay, endpoint.respond = 0.0, lambda r: (200, {})
    _finish(publisher)
    _assert_nothing_lost(relay.drain(tally))


@pytest.mark.postgres
def test_database_unavailable(make_settings, postgres_url, queue_name, endpoint, tmp_path, mgmt):
    """PostgreSQL goes away (a cut TCP proxy): the worker keeps delivering with the
    definitions it has, and the API answers 503 for what needs the database."""
    from workerrmq.api import create_app

    db = urlsplit(postgres_url)
    db_proxy = TcpProxy(db.hostname or "127.0.0.1", db.port or 5432).__enter__()
    proxied_db = postgres_url.replace(f":{db.port}/", f":{db_proxy.port}/")
    settings = make_settings(database_url=proxied_db)
    app = create_app(settings)
    worker = None
    try:
        _, token = app.extensions["workerrmq"].keys.create("chaos", "admin")
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        queue = queue_name("dbdown")
        client.post("/api/v1/queues", json={"name": queue}, headers=headers)
        client.post("/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=headers)
        worker = worker_process(settings, tmp_path / "worker.log")
        wait_for(lambda: (mgmt.get_queue(queue).get("consumers") or 0) >= 1, timeout=30)

        tally = Tally("database outage")
        db_proxy.cut()
        tally.faults["database down"] += 1
        app.extensions["workerrmq"].db.dispose()  # drop pooled connections, as a restart would
        down = client.get("/api/v1/consumers", headers=headers)
        assert down.status_code == 503 and down.json["error"]["code"] == "database_unavailable"
        assert "Retry-After" in down.headers
        publisher = ConfirmedPublisher(make_settings().rabbitmq_url, queue, tally, CHAOS_N, rate=RATE)
        publisher.start()
        _finish(publisher)
        wait_for(
            lambda: tally.missing(endpoint) == 0,
            timeout=120,
            interval=0.2,
            what="deliveries while the database is down",
        )
        db_proxy.heal()
        assert wait_for(
            lambda: client.get("/api/v1/consumers", headers=headers).status_code == 200,
            timeout=30,
            what="the API after the database is back",
        )
        wait_for(lambda: _settled(mgmt, queue), timeout=60, interval=0.5)
        _assert_nothing_lost(tally.check(endpoint))
    finally:
        if worker is not None:
            stop_processes(worker)
        app.extensions["workerrmq"].close()
        db_proxy.cut()


def test_mixed_faults(relay, endpoint):
    tally = Tally("mixed faults")
    worker = relay.start_worker()
    second = relay.start_worker()
    wait_for(relay.consuming, timeout=30, what="the workers to consume")
    publisher = _publish(relay, tally)
    for i, moment in enumerate(_during(publisher, FAULTS * 3)):
        _at(moment)
        kind = ("connection cut", "worker SIGKILL", "endpoint 5xx")[i % 3]
        tally.faults[kind] += 1
        if kind == "connection cut":
            relay.proxy.cut()
            relay.proxy.heal()
        elif kind == "worker SIGKILL":
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            worker = relay.start_worker()
        else:
            endpoint.respond = lambda r: (503, {})
            time.sleep(0.2)  # how long the endpoint fails
            endpoint.respond = lambda r: (200, {})
    _finish(publisher)
    assert second.poll() is None, "the second worker should have lived through it all"
    _assert_nothing_lost(relay.drain(tally))
