"""Several worker processes sharing PostgreSQL and RabbitMQ."""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.chaos import ConfirmedPublisher, Tally
from tests.support import wait_for
from tests.workers import stop_processes, worker_process
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.models import ConsumerStats, WorkerRecord
from workerrmq.store.workers import WorkerIdentity, WorkerRegistry
from workerrmq.worker.placement import chosen_workers, share_of

pytestmark = pytest.mark.postgres

#: ``workerrmq worker --processes 1`` (the same ``run_worker``), but with a periodic reconcile
#: that never comes during a test: only control messages make these workers apply a change.
CONTROL_ONLY_WORKER = """\
import functools
from workerrmq.worker import __main__ as worker, engine
engine.Engine = functools.partial(engine.Engine, reconcile_interval=3600)
worker.main()
"""
_CONNECTED = re.compile(r"worker \S+ connected")  # its log line once it listens for them


def control_only_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A worker process configured like *settings* that reconciles on control messages only."""
    return worker_process(settings, log, argv=["-c", CONTROL_ONLY_WORKER])


@pytest.fixture
def cluster(make_settings, postgres_url, tmp_path):
    """An API on PostgreSQL and a way to start worker processes that share it."""
    from workerrmq.api import create_app

    settings = make_settings(database_url=postgres_url)
    app = create_app(settings)
    _, token = app.extensions["workerrmq"].keys.create("scale", "admin")
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    class Cluster:
        broker_url = settings.rabbitmq_url
        client = app.test_client()
        workers = processes
        headers = {"Authorization": f"Bearer {token}"}
        db = app.extensions["workerrmq"].db

        def start_worker(self) -> subprocess.Popen[bytes]:
            logs.append(tmp_path / f"worker{len(processes)}.log")
            worker = control_only_worker(settings, logs[-1])
            processes.append(worker)
            return worker

        def connected(self) -> int:
            """How many of the workers have connected (and listen for control messages)."""
            return sum(bool(_CONNECTED.search(log.read_text(errors="replace"))) for log in logs)

        def alive(self) -> list[dict]:
            listed = self.client.get("/api/v1/workers", headers=self.headers).json
            return [w for w in listed if w["state"] == "alive"]

    yield Cluster()
    stop_processes(*processes)
    app.extensions["workerrmq"].close()


def test_three_workers_share_start_stop_and_survive_a_kill(cluster, queue_name, endpoint, amqp):
    for _ in range(3):
        cluster.start_worker()
    wait_for(lambda: len(cluster.alive()) == 3, timeout=30, what="three registered workers")
    wait_for(lambda: cluster.connected() == 3, timeout=30, what="three workers listening for changes")

    queue = queue_name("scale")
    cluster.client.post("/api/v1/queues", json={"name": queue}, headers=cluster.headers)
    # The workers reconcile on control messages only: the API's message brings the consumer.
    consumer = cluster.client.post(
        "/api/v1/consumers",
        json={
            "queue": queue,
            "target_url": endpoint.url,
            "concurrency": 30,
        },
        headers=cluster.headers,
    ).json
    wait_for(
        lambda: amqp.queue_declare(queue, passive=True).method.consumer_count == 3,
        timeout=30,
        interval=0.02,
        what="the consumer on all three workers",
    )

    # Load spreads, and one worker killed mid-stream loses nothing.
    endpoint.delay = 0.005
    tally = Tally("three workers, one killed")
    publisher = ConfirmedPublisher(cluster.broker_url, queue, tally, 3000, rate=1500)
    publisher.start()
    wait_for(lambda: len(endpoint.delivered_ids()) >= 500, timeout=30, what="deliveries under way")
    cluster.workers[0].send_signal(signal.SIGKILL)
    tally.faults["worker SIGKILL"] += 1
    publisher.join(120)
    assert publisher.error is None
    wait_for(lambda: tally.missing(endpoint) == 0, timeout=120, what="every confirmed message")
    figures = tally.check(endpoint)
    assert figures["lost"] == 0 and figures["unexpected"] == 0, figures

    def shares() -> dict[str, int]:
        with cluster.db.session() as session:
            return {
                row.worker_id: row.delivered
                for row in session.scalars(
                    select(ConsumerStats).where(ConsumerStats.consumer_id == consumer["id"])
                )
            }

    # The two survivors both took part (the killed one may have died before reporting).
    spread = wait_for(
        lambda: (s := shares()) and sum(n > 0 for n in s.values()) >= 2 and s,
        timeout=15,
        what="statistics from the surviving workers",
    )
    print("deliveries per worker:", sorted(spread.values()))

    # Pausing stops it on every worker that is left.
    cluster.client.post(f"/api/v1/consumers/{consumer['id']}/pause", headers=cluster.headers)
    wait_for(
        lambda: amqp.queue_declare(queue, passive=True).method.consumer_count == 0,
        timeout=30,
        interval=0.02,
        what="the pause on all workers",
    )


def test_registry_marks_silent_workers_lost(postgres_url):
    db = Database(postgres_url)
    db.migrate()
    registry = WorkerRegistry(db)
    registry.register(WorkerIdentity("w-alive", "host-a", 1, "0"))
    registry.register(WorkerIdentity("w-silent", "host-b", 2, "0"))
    registry.register(WorkerIdentity("w-done", "host-c", 3, "0"))
    registry.stopped("w-done")
    with db.session() as session:
        session.execute(
            update(WorkerRecord)
            .where(WorkerRecord.id == "w-silent")
            .values(last_heartbeat=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
        )
    assert registry.alive() == ["w-alive"]
    states = {w["id"]: w["state"] for w in registry.list(include_stopped=True)}
    assert states == {"w-alive": "alive", "w-silent": "lost", "w-done": "stopped"}
    assert {w["id"] for w in registry.list()} == {"w-alive", "w-silent"}
    db.dispose()


def test_placement_is_stable_and_shares_concurrency():
    workers = ["w1", "w2", "w3", "w4"]
    assert chosen_workers("c", None, workers) == workers
    two = chosen_workers("c", 2, workers)
    assert len(two) == 2 and set(two) <= set(workers)
    assert chosen_workers("c", 2, list(reversed(workers))) == two  # same answer everywhere
    # A worker that is not chosen leaving moves nothing.
    other = next(w for w in workers if w not in two)
    assert chosen_workers("c", 2, [w for w in workers if w != other]) == two
    assert share_of(32, 3) == 11 and share_of(32, 1) == 32 and share_of(1, 5) == 1
