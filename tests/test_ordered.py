"""Ordered consumers across worker crashes, joins and departures: real broker, real
endpoint, real worker processes."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.support import wait_for
from tests.test_worker import dead_letters, publish
from tests.workers import EngineThread, stop_processes, worker_process
from workerrmq.store import Database
from workerrmq.store.workers import WorkerIdentity, WorkerRegistry
from workerrmq.worker.placement import chosen_workers


@pytest.fixture
def registry(settings):
    """The worker registry of the test's database (to mark a killed worker gone at once)."""
    db = Database(settings.database_url)
    db.migrate()
    yield WorkerRegistry(db)
    db.dispose()


def kill(process: subprocess.Popen[bytes], registry: WorkerRegistry) -> None:
    """SIGKILL a worker, and mark it gone instead of waiting 30 s for its heartbeat to lapse."""
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    for worker_id in registry.alive():
        registry.stopped(worker_id)


def attempts_seen(endpoint) -> list[int]:
    return [int(r.headers["X-WorkerRMQ-Attempt"]) for r in endpoint.received]


def test_attempts_survive_killed_workers(settings, endpoint, make_consumer, amqp, registry, tmp_path):
    """max_attempts 5, every attempt fails, and the worker is SIGKILLed after attempt 2
    and again after attempt 3: three workers make 5 requests in all, then dead-letter."""
    endpoint.respond = lambda r: (503, {})
    consumer, queue = make_consumer(
        endpoint.url, ordered=True, max_attempts=5, initial_delay=0.5, max_delay=0.5
    )
    log = tmp_path / "workers.log"
    workers = [worker_process(settings, log)]
    try:
        publish(amqp, queue, b"keep count", message_id="counted")
        for seen in (2, 3):
            wait_for(lambda n=seen: endpoint.count() >= n, timeout=30, what=f"attempt {seen}")
            kill(workers[-1], registry)
            workers.append(worker_process(settings, log))
        found = wait_for(lambda: dead_letters(amqp, f"{queue}.dlq"), timeout=30, what="the dead letter")
    finally:
        stop_processes(*workers)
    assert endpoint.count() == 5, (attempts_seen(endpoint), log.read_text()[-3000:])
    assert attempts_seen(endpoint) == [1, 2, 3, 4, 5]
    props, body = found[0]
    assert body == b"keep count" and props.message_id == "counted"
    assert props.headers["x-workerrmq-attempts"] == 5
    assert "attempts exhausted" in props.headers["x-workerrmq-last-error"]
    assert amqp.queue_declare(queue, passive=True).method.message_count == 0


def _winning_id(consumer_id: str, other: str) -> str:
    """A worker id that rendezvous placement prefers to *other* for *consumer_id*."""
    return next(
        f"joiner-{i}"
        for i in range(1000)
        if chosen_workers(consumer_id, 1, [other, f"joiner-{i}"]) == [f"joiner-{i}"]
    )


def test_order_holds_while_workers_join_and_leave(
    settings, endpoint, make_consumer, amqp, registry, tmp_path
):
    """Messages 1..N reach the endpoint in order while a worker joins (and takes the
    consumer over while the old one holds a message in a retry wait), that worker
    leaves again mid-wait, and the last worker is SIGKILLed (its message in flight
    may arrive twice, never out of order)."""
    n, join_at, leave_at, kill_at = 120, 30, 70, 100
    held = {str(join_at).encode(), str(leave_at).encode()}
    endpoint.delay = 0.02
    endpoint.respond = lambda r: (
        (503, {"Retry-After": "2"})
        if r.body in held and r.headers["X-WorkerRMQ-Attempt"] == "1"
        else (200, {})
    )
    consumer, queue = make_consumer(
        endpoint.url, ordered=True, max_attempts=10, initial_delay=0.3, max_delay=5, timeout=5
    )
    log = tmp_path / "workers.log"
    first = worker_process(settings, log)
    processes = [first]
    joiner: EngineThread | None = None
    try:
        first_id = wait_for(
            lambda: (alive := registry.alive()) and alive[0], timeout=30, what="the first worker"
        )
        for i in range(1, n + 1):
            publish(amqp, queue, str(i).encode(), message_id=f"m-{i}")

        def failed(body: int) -> bool:
            return any(r.body == str(body).encode() and r.status == 503 for r in endpoint.received)

        # Join: a worker that wins the consumer arrives while message join_at waits 2 s.
        wait_for(lambda: failed(join_at), timeout=60, what=f"message {join_at} to fail once")
        joiner = EngineThread(settings)
        joiner_id = _winning_id(consumer["id"], first_id)
        joiner.engine.worker_id = joiner_id
        joiner.engine.identity = WorkerIdentity(joiner_id, "test", 0, "0")
        joiner.start()
        # Leave: the joiner stops while message leave_at waits; the first worker goes on.
        wait_for(lambda: failed(leave_at), timeout=60, what=f"message {leave_at} to fail once")
        joiner.stop()
        # Crash: the worker delivering is killed; a new one takes over.
        wait_for(lambda: len(endpoint.delivered_ids()) >= kill_at, timeout=60, what=f"{kill_at} deliveries")
        kill(first, registry)
        processes.append(worker_process(settings, log))
        wait_for(lambda: f"m-{n}" in endpoint.delivered_ids(), timeout=60, what="the last message")
    finally:
        if joiner is not None:
            joiner.stop()
        stop_processes(*processes)

    delivered = [int(i.removeprefix("m-")) for i in endpoint.delivered_ids()]
    duplicates = sum(1 for a, b in zip(delivered, delivered[1:], strict=False) if a == b)
    steps = [b - a for a, b in zip(delivered, delivered[1:], strict=False)]
    assert delivered[0] == 1 and delivered[-1] == n
    assert all(step in (0, 1) for step in steps), ("out of order", delivered)
    assert duplicates <= 1, delivered  # prefetch 1: only the killed worker's message in flight
    print(f"delivered {len(delivered)} for {n} messages, {duplicates} duplicate(s)")
