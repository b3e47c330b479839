"""Consumers set to run while no worker is alive: /readyz, the create answers and the log say so.

Without a worker nothing is delivered, yet every call used to answer "successfully"
and /readyz said ready. The dashboard's banner is tested in test_dashboard_browser.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import pytest

from tests.support import wait_for
from workerrmq.api import no_worker
from workerrmq.store.workers import WorkerIdentity

NO_WORKER = "no worker is alive"


@pytest.fixture
def db_app(make_settings, make_app, database_url):
    """An app on SQLite, then on PostgreSQL, with its admin key's header."""
    return make_app(make_settings(database_url=database_url))


def create_consumer(client, admin, queue_name, **fields):
    response = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={
            "queue": queue_name("nw"),
            "target_url": "http://127.0.0.1:9/hook",
            "create_queue": True,
            **fields,
        },
    )
    assert response.status_code == 201, response.json
    return response


def register_worker(client, *, alive: bool = True) -> None:
    """A worker in the registry, as a worker process registers itself."""
    registry = client.application.extensions["workerrmq"].workers
    worker = WorkerIdentity(f"test-{uuid.uuid4().hex[:8]}", "test-host", os.getpid(), "test")
    registry.register(worker)
    if not alive:
        registry.stopped(worker.id)


def test_readyz_warns_while_running_consumers_have_no_worker(db_app, queue_name):
    client, admin = db_app
    assert client.get("/readyz").json["warnings"] == []  # no consumer: nothing to warn about
    consumer = create_consumer(client, admin, queue_name).json

    ready = client.get("/readyz")
    assert ready.status_code == 200  # still routed to: publishing works, messages wait
    assert ready.json["status"] == "ready"
    [warning] = ready.json["warnings"]
    assert NO_WORKER in warning and "1 running consumer" in warning
    assert "workerrmq worker" in warning

    register_worker(client, alive=False)  # a stopped worker is not alive
    assert client.get("/readyz").json["warnings"] == [warning]
    client.post(f"/api/v1/consumers/{consumer['id']}/pause", headers=admin)
    assert client.get("/readyz").json["warnings"] == []  # nothing is meant to run
    client.post(f"/api/v1/consumers/{consumer['id']}/resume", headers=admin)
    assert client.get("/readyz").json["warnings"] == [warning]
    register_worker(client)
    assert client.get("/readyz").json["warnings"] == []


def test_a_real_worker_clears_the_warning(app, client, admin, settings, start_engine, queue_name):
    create_consumer(client, admin, queue_name)
    assert NO_WORKER in client.get("/readyz").json["warnings"][0]
    start_engine(settings)
    wait_for(
        lambda: client.get("/readyz").json["warnings"] == [],
        timeout=20,
        what="the worker's heartbeat to clear the warning",
    )
    assert "warning" not in create_consumer(client, admin, queue_name).json


def test_create_answers_carry_the_warning(client, admin, queue_name):
    first = create_consumer(client, admin, queue_name).json
    assert NO_WORKER in first["warning"] and "1 running consumer" in first["warning"]
    seed = client.post(
        "/createConsumer",
        headers=admin,
        json={"queueName": queue_name("nw"), "target_url": "http://127.0.0.1:9/hook", "create_queue": True},
    )
    assert seed.status_code == 200, seed.json
    assert seed.json["message"] == "Consumer has been created successfully."
    assert NO_WORKER in seed.json["warning"] and "2 running consumers" in seed.json["warning"]
    # Only the answer that creates carries it.
    assert "warning" not in client.get(f"/api/v1/consumers/{first['id']}", headers=admin).json

    register_worker(client)
    assert "warning" not in create_consumer(client, admin, queue_name).json
    again = client.post(
        "/createConsumer",
        headers=admin,
        json={"queueName": queue_name("nw"), "target_url": "http://127.0.0.1:9/hook", "create_queue": True},
    )
    assert again.json == {"message": "Consumer has been created successfully."}


def test_the_warning_fields_are_documented(client):
    spec = client.get("/openapi.json").json
    schemas = spec["components"]["schemas"]
    assert "warning" in schemas["ConsumerCreated"]["properties"]
    assert "warning" in schemas["SeedConsumerCreated"]["properties"]


# -- the log -----------------------------------------------------------------------------------


def _logged(caplog, thread: threading.Thread | None = None) -> list[str]:
    """The warning's lines, those of *thread* only if given (the process's own
    PERIODIC_LOG also logs, for every app earlier tests left alive)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "workerrmq.api"
        and NO_WORKER in r.getMessage()
        and (thread is None or r.thread == thread.ident)
    ]


def test_the_log_says_it_once_an_interval_not_per_request(client, admin, queue_name, caplog):
    caplog.set_level(logging.WARNING, logger="workerrmq.api")
    create_consumer(client, admin, queue_name)
    periodic = no_worker.PeriodicLog(interval=0.5)
    periodic.watch(client.application.extensions["workerrmq"].workers)
    try:
        started = time.monotonic()
        ours = periodic.thread
        assert ours is not None
        wait_for(lambda: len(_logged(caplog, ours)) >= 2, timeout=20, what="two periodic log lines")
        for _ in range(200):  # requests do not log it
            assert client.get("/readyz").status_code == 200
        elapsed = time.monotonic() - started
        # At most one line per interval (generous: a busy machine only logs fewer).
        assert len(_logged(caplog, ours)) <= elapsed / 0.5 + 2
        assert _logged(caplog, threading.current_thread()) == []
    finally:
        periodic.stop()
    register_worker(client)
    caplog.clear()
    periodic.check()
    assert _logged(caplog) == []  # a worker is alive: nothing to say


def test_every_app_of_a_process_shares_one_log_thread(make_settings, make_app, tmp_path):
    clients = [
        make_app(make_settings(database_url=f"sqlite:///{tmp_path}/app{i}.sqlite3"))[0] for i in range(3)
    ]
    for client in clients:
        assert client.get("/healthz").status_code == 200
    threads = [t for t in threading.enumerate() if t.name == "workerrmq-no-worker-log"]
    assert len(threads) == 1
    watched = set(no_worker.PERIODIC_LOG.watched)
    assert {c.application.extensions["workerrmq"].workers for c in clients} <= watched
    assert no_worker.PERIODIC_LOG.interval == 60.0


def test_the_process_log_covers_each_app(client, admin, queue_name, caplog):
    caplog.set_level(logging.WARNING, logger="workerrmq.api")
    create_consumer(client, admin, queue_name)
    client.get("/healthz")  # the first request has the process's log watch this app
    caplog.clear()
    no_worker.PERIODIC_LOG.check()
    assert any("1 running consumer" in m for m in _logged(caplog))
