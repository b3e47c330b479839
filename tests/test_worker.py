"""The consumer engine against the real broker and a real HTTP endpoint."""

from __future__ import annotations

import base64
import secrets
import signal
import threading

import pika
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support import wait_for
from tests.workers import worker_process

FAST_RETRY = {"initial_delay": 0.05, "max_delay": 0.25}


def publish(amqp, queue: str, body: bytes, **properties) -> None:
    amqp.confirm_delivery()
    amqp.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties), mandatory=True)


def queue_depth(mgmt, queue: str) -> tuple[int, int]:
    q = mgmt.get_queue(queue)
    return int(q.get("messages_ready") or 0), int(q.get("messages_unacknowledged") or 0)


def dead_letters(amqp, dlq: str) -> list[tuple[object, bytes]]:
    found = []
    while True:
        method, props, body = amqp.basic_get(dlq, auto_ack=True)
        if method is None:
            return found
        found.append((props, body))


def test_delivers_byte_exact_with_headers(settings, start_engine, endpoint, make_consumer, amqp):
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, headers={"X-Team": "payments"})
    worker.runner(consumer["id"])
    body = b"\x00\xffnot utf-8 \xc3\x28"
    publish(
        amqp,
        queue,
        body,
        content_type="application/x-custom",
        message_id="m-1",
        correlation_id="c-1",
        headers={"tenant": "acme", "n": 7},
    )

    wait_for(endpoint.count, what="the delivery")
    got = endpoint.received[0]
    assert got.method == "POST" and got.body == body
    assert got.headers["Content-Type"] == "application/x-custom"
    assert got.headers["X-WorkerRMQ-Message-Id"] == "m-1"
    assert got.headers["X-WorkerRMQ-Correlation-Id"] == "c-1"
    assert got.headers["X-WorkerRMQ-Queue"] == queue
    assert got.headers["X-WorkerRMQ-Routing-Key"] == queue
    assert got.headers["X-WorkerRMQ-Attempt"] == "1"
    assert got.headers["X-WorkerRMQ-Redelivered"] == "false"
    assert got.headers["X-WorkerRMQ-Header-tenant"] == "acme"
    assert got.headers["X-WorkerRMQ-Header-n"] == "7"
    assert got.headers["X-Team"] == "payments"
    assert "webhook-signature" not in got.headers
    # aiohttp's own defaults stay out: the endpoint gets no Accept-Encoding, and no Accept
    # but reqwest's "*/*" (HTTP_CLIENT=reqwest), which says the same as none (RFC 9110 12.5.1).
    assert got.headers["User-Agent"].startswith("WorkerRMQ/")
    assert "Accept-Encoding" not in got.headers
    assert got.headers.getall("Accept", ["*/*"]) == ["*/*"]
    wait_for(lambda: amqp.queue_declare(queue, passive=True).method.message_count == 0)


def test_no_ack_before_2xx(settings, start_engine, endpoint, make_consumer, amqp, mgmt):
    """The worker's connection dies while the endpoint holds the request: the message
    was not acked, so the broker delivers it again, flagged as redelivered."""
    release = threading.Event()

    def hold_first(received):
        if received.headers["X-WorkerRMQ-Redelivered"] == "false":
            release.wait(10)
        return 200, {}

    endpoint.respond = hold_first
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url)
    worker.runner(consumer["id"])
    publish(amqp, queue, b"hold me", message_id="held")
    wait_for(endpoint.count, what="the first attempt")
    name = wait_for(
        lambda: next(
            (
                c["name"]
                for c in mgmt.list_connections()
                if worker.engine.worker_id in str(c.get("client_properties"))
            ),
            None,
        ),
        what="the worker's connection in the management API",
    )
    mgmt.close_connection(name, "test: kill the worker's connection")
    release.set()
    wait_for(lambda: endpoint.count() >= 2, timeout=30, what="the redelivery")
    assert endpoint.received[1].body == b"hold me"
    assert endpoint.received[1].headers["X-WorkerRMQ-Redelivered"] == "true"


def test_retries_with_backoff_then_delivers(settings, start_engine, endpoint, make_consumer):
    endpoint.respond = lambda r: (503, {}) if r.headers["X-WorkerRMQ-Attempt"] in ("1", "2") else (200, {})
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, initial_delay=0.25, max_delay=1)
    worker.runner(consumer["id"])
    client_publish(settings, queue, b"flaky")

    wait_for(lambda: endpoint.count() >= 3, timeout=20, what="three attempts")
    attempts = [r.headers["X-WorkerRMQ-Attempt"] for r in endpoint.received]
    assert attempts == ["1", "2", "3"]
    gaps = [b.at - a.at for a, b in zip(endpoint.received, endpoint.received[1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps), gaps  # waited in a delay queue, not retried hot
    ids = {r.message_id for r in endpoint.received}
    assert len(ids) == 1
    stats = wait_for(lambda: _stats_if(worker, consumer["id"], delivered=1))
    assert stats.retried == 2 and stats.failed == 2


def _stats_if(worker, consumer_id, **expected):
    stats = worker.engine.stats.get(consumer_id)
    if stats and all(getattr(stats, k) == v for k, v in expected.items()):
        return stats
    return None


def client_publish(settings, queue: str, body: bytes, **properties) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
    try:
        publish(connection.channel(), queue, body, **properties)
    finally:
        connection.close()


def test_dead_letters_after_last_attempt(settings, start_engine, endpoint, make_consumer, amqp):
    endpoint.respond = lambda r: (500, {})
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, max_attempts=3, **FAST_RETRY)
    worker.runner(consumer["id"])
    publish(amqp, queue, b"doomed", message_id="d-1", headers={"keep": "me"})

    found = wait_for(lambda: dead_letters(amqp, f"{queue}.dlq"), timeout=20, what="a dead letter")
    props, body = found[0]
    assert body == b"doomed" and props.message_id == "d-1"
    assert props.headers["x-workerrmq-attempts"] == 3
    assert props.headers["x-workerrmq-last-status"] == 500
    assert "attempts exhausted" in props.headers["x-workerrmq-last-error"]
    assert props.headers["keep"] == "me"
    assert endpoint.count() == 3
    assert amqp.queue_declare(queue, passive=True).method.message_count == 0


def test_dead_letters_at_once_on_4xx(settings, start_engine, endpoint, make_consumer, amqp):
    endpoint.respond = lambda r: (422, {})
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, **FAST_RETRY)
    worker.runner(consumer["id"])
    publish(amqp, queue, b"bad request")

    found = wait_for(lambda: dead_letters(amqp, f"{queue}.dlq"), timeout=20, what="a dead letter")
    assert found[0][0].headers["x-workerrmq-attempts"] == 1
    assert "permanent failure" in found[0][0].headers["x-workerrmq-last-error"]
    assert endpoint.count() == 1


def test_retry_after_is_honoured(settings, start_engine, endpoint, make_consumer, amqp):
    endpoint.respond = lambda r: (
        (429, {"Retry-After": "1"}) if r.headers["X-WorkerRMQ-Attempt"] == "1" else (200, {})
    )
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, initial_delay=0.05, max_delay=5)
    worker.runner(consumer["id"])
    publish(amqp, queue, b"later please")

    wait_for(lambda: endpoint.count() >= 2, timeout=20, what="the second attempt")
    first, second = endpoint.received[:2]
    assert second.at - first.at >= 0.9  # the 50 ms backoff was raised to Retry-After's 1 s


def test_retry_after_between_tiers_is_never_cut_short(settings, start_engine, endpoint, make_consumer):
    """Retry-After: 3 falls between the 2 s and 4 s delay queues: every retry waits
    at least 3 s (the 4 s queue), never 2 s. (1 and 2 are tiers themselves, which
    would hide a rounding down.)"""
    endpoint.respond = lambda r: (
        (503, {"Retry-After": "3"}) if int(r.headers["X-WorkerRMQ-Attempt"]) <= 4 else (200, {})
    )
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, initial_delay=0.05, max_delay=10, max_attempts=6)
    worker.runner(consumer["id"])
    client_publish(settings, queue, b"not before three seconds")

    wait_for(lambda: endpoint.count() >= 5, timeout=60, what="four retries")
    times = [r.at for r in endpoint.received]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= 3.0 for gap in gaps), gaps


def test_failing_message_does_not_block_others(settings, start_engine, endpoint, make_consumer, amqp):
    endpoint.respond = lambda r: (503, {}) if r.body == b"bad" else (200, {})
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, initial_delay=2, max_delay=2, max_attempts=2, concurrency=4)
    worker.runner(consumer["id"])
    publish(amqp, queue, b"bad")
    for i in range(30):
        publish(amqp, queue, f"good-{i}".encode())

    wait_for(lambda: endpoint.count() >= 32, timeout=30, what="the good messages and the retry")
    bad_attempts = [r.at for r in endpoint.received if r.body == b"bad"]
    good = [r.at for r in endpoint.received if r.body != b"bad"]
    assert len(good) == 30 and len(bad_attempts) == 2
    assert max(good) < bad_attempts[1], "good messages waited behind the failing one"


def test_signed_requests_verify(settings, start_engine, endpoint, make_consumer, amqp):
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    endpoint.respond = lambda r: (503, {}) if r.headers["X-WorkerRMQ-Attempt"] == "1" else (200, {})
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, signing_secret=secret, **FAST_RETRY)
    assert consumer["signing"] is True and secret not in str(consumer)
    worker.runner(consumer["id"])
    publish(amqp, queue, b'{"order": 42}', content_type="application/json")

    wait_for(lambda: endpoint.count() >= 2, timeout=20, what="two signed attempts")
    hook = Webhook(secret)
    for received in endpoint.received[:2]:
        headers = {k.lower(): v for k, v in received.headers.items()}
        hook.verify(received.body.decode(), headers)  # raises if the signature is wrong
    ids = {r.headers["webhook-id"] for r in endpoint.received[:2]}
    assert len(ids) == 1, "webhook-id must stay the same across retries"
    tampered = {k.lower(): v for k, v in endpoint.received[0].headers.items()}
    with pytest.raises(WebhookVerificationError):
        hook.verify('{"order": 43}', tampered)


def test_pause_resume_delete(settings, start_engine, endpoint, make_consumer, client, admin, amqp):
    worker = start_engine(settings, reconcile_interval=60)
    consumer, queue = make_consumer(endpoint.url)
    worker.runner(consumer["id"])

    assert client.post(f"/api/v1/consumers/{consumer['id']}/pause", headers=admin).json["state"] == "paused"
    wait_for(lambda: consumer["id"] not in worker.engine.runners, timeout=5, what="the pause")
    publish(amqp, queue, b"while paused")
    assert amqp.queue_declare(queue, passive=True).method.message_count == 1
    assert endpoint.count() == 0

    client.post(f"/api/v1/consumers/{consumer['id']}/resume", headers=admin)
    wait_for(lambda: endpoint.bodies() == [b"while paused"], timeout=5, what="delivery after resume")

    assert client.delete(f"/api/v1/consumers/{consumer['id']}", headers=admin).status_code == 204
    wait_for(lambda: consumer["id"] not in worker.engine.runners, timeout=5, what="the delete")
    publish(amqp, queue, b"after delete")
    assert amqp.queue_declare(queue, passive=True).method.message_count == 1
    assert endpoint.count() == 1


def test_changes_reach_a_running_worker_without_waiting_for_reconcile(
    settings, start_engine, endpoint, make_consumer, client, admin
):
    worker = start_engine(settings, reconcile_interval=300)  # only the control message can do it
    consumer, _ = make_consumer(endpoint.url)
    worker.runner(consumer["id"])
    version = worker.engine.runners[consumer["id"]].spec.version
    client.patch(f"/api/v1/consumers/{consumer['id']}", json={"concurrency": 3}, headers=admin)
    runner = wait_for(
        lambda: (r := worker.engine.runners.get(consumer["id"])) and r.spec.version > version and r,
        timeout=5,
        what="the change",
    )
    assert runner.spec.concurrency == 3


def test_circuit_breaker_opens_and_closes(
    settings, start_engine, endpoint, make_consumer, client, admin, amqp, mgmt
):
    endpoint.respond = lambda r: (503, {})
    worker = start_engine(settings)
    consumer, queue = make_consumer(
        endpoint.url, concurrency=1, max_attempts=1, circuit_threshold=3, circuit_cooldown=1.5
    )
    worker.runner(consumer["id"])
    for i in range(10):
        publish(amqp, queue, f"m{i}".encode())

    runner = wait_for(
        lambda: (r := worker.engine.runners.get(consumer["id"])) and r.status == "circuit_open" and r,
        timeout=15,
        what="the circuit to open",
    )
    assert runner.report().circuit in ("open", "half_open")
    failed_so_far = endpoint.count()
    assert failed_so_far < 10, "the open circuit should stop deliveries"
    ready, _ = wait_for(lambda: (d := queue_depth(mgmt, queue))[0] > 0 and d, timeout=15)
    assert ready > 0
    shown = wait_for(
        lambda: (
            (c := client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).json["stats"]["circuit"])
            != "closed"
            and c
        ),
        timeout=10,
    )
    assert shown in ("open", "half_open")

    endpoint.respond = lambda r: (200, {})
    wait_for(
        lambda: amqp.queue_declare(queue, passive=True).method.message_count == 0,
        timeout=20,
        what="the probe to close the circuit and drain",
    )
    wait_for(lambda: worker.engine.runners[consumer["id"]].status == "consuming", timeout=10)
    assert worker.engine.runners[consumer["id"]].report().circuit == "closed"
    assert endpoint.count() == 10


def test_rate_limit_holds(settings, start_engine, endpoint, make_consumer, amqp):
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, rate_limit=20, concurrency=8)
    worker.runner(consumer["id"])
    for i in range(30):
        publish(amqp, queue, str(i).encode())

    wait_for(lambda: endpoint.count() >= 30, timeout=30, what="30 deliveries")
    times = sorted(r.at for r in endpoint.received)
    assert times[-1] - times[0] >= 29 / 20 * 0.9  # at most 20 a second, spread out
    window = [t for t in times if t - times[0] <= 0.5]
    assert len(window) <= 12, "deliveries came in a burst"


def test_ordered_mode_keeps_order_and_retries_in_place(settings, start_engine, endpoint, make_consumer, amqp):
    failures = {b"5": 2}

    def flaky(received):
        if failures.get(received.body, 0) > 0:
            failures[received.body] -= 1
            return 503, {}
        return 200, {}

    endpoint.respond = flaky
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, ordered=True, **FAST_RETRY)
    worker.runner(consumer["id"])
    for i in range(12):
        publish(amqp, queue, str(i).encode())

    wait_for(lambda: endpoint.count() >= 14, timeout=30, what="12 deliveries and 2 retries")
    seen = [r.body for r in endpoint.received]
    assert seen == [b"0", b"1", b"2", b"3", b"4", b"5", b"5", b"5", *[str(i).encode() for i in range(6, 12)]]


def test_two_workers_share_the_load(settings, start_engine, endpoint, make_consumer, amqp, mgmt):
    endpoint.delay = 0.01
    workers = [start_engine(settings), start_engine(settings)]
    consumer, queue = make_consumer(endpoint.url, concurrency=4)
    for worker in workers:
        worker.runner(consumer["id"])
    for i in range(200):
        publish(amqp, queue, f"{i}".encode(), message_id=f"id-{i}")

    wait_for(lambda: endpoint.count() >= 200, timeout=60, what="200 deliveries")
    ids = endpoint.ids()
    assert sorted(ids) == sorted(f"id-{i}" for i in range(200)), "each message exactly once"
    wait_for(lambda: sum(w.engine.stats[consumer["id"]].delivered for w in workers) == 200)
    shares = [w.engine.stats[consumer["id"]].delivered for w in workers]
    assert all(share > 0 for share in shares), shares
    wait_for(lambda: queue_depth(mgmt, queue) == (0, 0), timeout=20, what="all acked")


def test_sigterm_drains_in_flight_deliveries(
    settings, endpoint, make_consumer, amqp, client, admin, tmp_path
):
    endpoint.delay = 1.0
    consumer, queue = make_consumer(endpoint.url, concurrency=32)
    log = tmp_path / "worker.log"
    worker = worker_process(settings, log)
    try:
        wait_for(
            lambda: (
                client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).json["stats"]["workers"] == 1
            ),
            timeout=30,
            what="the worker process",
        )
        for i in range(20):
            publish(amqp, queue, f"{i}".encode(), message_id=f"drain-{i}")
        wait_for(lambda: endpoint.count() >= 20, timeout=20, what="20 requests in flight")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert endpoint.count() == 20, log.read_text()
    # Acked, not handed back: nothing is waiting to be delivered a second time.
    assert amqp.queue_declare(queue, passive=True).method.message_count == 0
    assert sorted(endpoint.ids()) == sorted(f"drain-{i}" for i in range(20))


@pytest.mark.postgres
def test_delivers_with_definitions_in_postgresql(
    make_settings, make_app, postgres_url, start_engine, endpoint, queue_name
):
    settings = make_settings(database_url=postgres_url)
    client, headers = make_app(settings)
    queue = queue_name("pg")
    client.post("/api/v1/queues", json={"name": queue}, headers=headers)
    consumer = client.post(
        "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=headers
    ).json
    worker = start_engine(settings)
    worker.runner(consumer["id"])
    client.post(f"/api/v1/queues/{queue}/messages", json={"body": "from pg"}, headers=headers)
    wait_for(lambda: endpoint.bodies() == [b"from pg"], what="the delivery")
    wait_for(
        lambda: (
            client.get(f"/api/v1/consumers/{consumer['id']}", headers=headers).json["stats"]["delivered"] == 1
        ),
        what="statistics in PostgreSQL",
    )


@pytest.mark.postgres
def test_worker_waits_for_the_database_at_start(make_settings, postgres_url, broker):
    from urllib.parse import urlsplit

    from tests.support import TcpProxy
    from tests.workers import EngineThread

    port = urlsplit(postgres_url).port
    with TcpProxy("127.0.0.1", port) as db_proxy:
        db_proxy.cut()
        settings = make_settings(database_url=postgres_url.replace(f":{port}/", f":{db_proxy.port}/"))
        worker = EngineThread(settings)
        worker.start(connected=False)
        try:
            wait_for(
                lambda: "database unavailable" in worker.log_text(),
                timeout=20,
                what="the worker to report the database down",
            )
            assert not worker.engine.connected.is_set() and worker.running
            db_proxy.heal()
            wait_for(worker.engine.connected.is_set, timeout=30, what="the worker to start")
        finally:
            worker.stop()


def test_cookies_do_not_ride_along(settings, start_engine, endpoint, make_consumer, amqp):
    endpoint.respond = lambda r: (200, {"Set-Cookie": "session=abc; Path=/"})
    worker = start_engine(settings)
    # A host name, not an IP address: cookie jars keep cookies only for names.
    consumer, queue = make_consumer(endpoint.url.replace("127.0.0.1", "localhost"))
    worker.runner(consumer["id"])
    publish(amqp, queue, b"first")
    wait_for(lambda: endpoint.count() == 1, what="the first delivery")
    publish(amqp, queue, b"second")
    wait_for(lambda: endpoint.count() == 2, what="the second delivery")
    assert "Cookie" not in endpoint.received[1].headers


def test_concurrency_is_shared_and_reaches_the_broker(settings, start_engine, endpoint, make_consumer, mgmt):
    """A second worker joining halves each one's share, and the consumer the broker
    sees changes with it (RabbitMQ applies a new prefetch only to a new consumer)."""
    from workerrmq.store import Database
    from workerrmq.store.workers import WorkerIdentity, WorkerRegistry

    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, concurrency=8)
    worker.runner(consumer["id"])

    def broker_prefetch() -> int | None:
        found = mgmt.queue_consumers(queue)
        return found[0]["prefetch_count"] if len(found) == 1 else None

    wait_for(lambda: broker_prefetch() == 8, timeout=20, what="prefetch 8 at the broker")
    db = Database(settings.database_url)
    registry = WorkerRegistry(db)
    registry.register(WorkerIdentity("another-worker", "elsewhere", 1, "0"))
    try:
        wait_for(lambda: broker_prefetch() == 4, timeout=20, what="the share halved at the broker")
        registry.stopped("another-worker")
        wait_for(lambda: broker_prefetch() == 8, timeout=20, what="the whole share back")
    finally:
        db.dispose()
