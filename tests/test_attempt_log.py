"""The attempt log: the store (SQLite and PostgreSQL), the worker's buffer and writer, the
routes, and a real worker recording what its endpoint answered."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import sqlite3

import pika
import pytest

from tests.support import wait_for
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.attempts import AttemptFilter, AttemptStore
from workerrmq.worker.attempt_log import AttemptLog

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def row(
    n: int, *, consumer: str = "c1", message: str | None = None, status: int | None = 200, **extra
) -> dict:
    values = {
        "consumer_id": consumer,
        "consumer": f"name-{consumer}",
        "message_id": message or f"m-{n}",
        "attempt": 1,
        "at": T0 + dt.timedelta(seconds=n),
        "duration_ms": 1.5,
        "status": status,
        "error": None if status == 200 else (f"HTTP {status}" if status else "timeout"),
        "outcome": "delivered" if status == 200 else "retry",
        "response": None,
        "worker": "w1",
    }
    values.update(extra)
    return values


# -- the store -----------------------------------------------------------------------------------


def test_filters_pages_and_newest_first(db: Database):
    store = AttemptStore(db)
    store.add(
        [
            row(1),
            row(2, status=503, message="m-x", response="down " * 300),
            row(3, status=None, message="m-x", attempt=2),
            row(4, consumer="c2", message="m-x", status=404, outcome="dead_lettered"),
            row(5),
        ]
    )

    items, total = store.page(AttemptFilter(consumer_id="c1"))
    assert total == 4
    assert [i["message_id"] for i in items] == ["m-5", "m-x", "m-x", "m-1"]  # newest first
    assert items[0]["at"] == (T0 + dt.timedelta(seconds=5)).isoformat()
    assert items[2]["status"] == 503 and items[2]["error"] == "HTTP 503"

    def ids(**where) -> list[tuple[str, int]]:
        found, _ = store.page(AttemptFilter(**where))
        return [(i["consumer_id"], i["status"]) for i in found]

    assert ids(message_id="m-x") == [("c2", 404), ("c1", None), ("c1", 503)]
    assert ids(consumer_id="c1", status="503") == [("c1", 503)]
    assert ids(consumer_id="c1", status="timeout") == [("c1", None)]
    assert ids(consumer_id="c1", status="TIMEOUT") == [("c1", None)]
    assert ids(status="HTTP 404") == [("c2", 404)]
    assert ids(consumer_id="c1", status="failed") == [("c1", None), ("c1", 503)]
    assert len(ids(status="delivered")) == 2
    assert ids(consumer_id="c1", since=T0 + dt.timedelta(seconds=2), until=T0 + dt.timedelta(seconds=5)) == [
        ("c1", None),
        ("c1", 503),
    ]
    second, total = store.page(AttemptFilter(consumer_id="c1"), offset=2, limit=2)
    assert total == 4 and [i["message_id"] for i in second] == ["m-x", "m-1"]


def test_pruned_by_age_then_by_count_per_consumer(db: Database):
    store = AttemptStore(db)
    now = T0 + dt.timedelta(days=30)
    store.add([row(n) for n in range(10)])  # 30 days old
    recent = [
        row(n, consumer=c, at=now - dt.timedelta(seconds=100 - n)) for c in ("c1", "c2") for n in range(6)
    ]
    recent += [row(9, consumer="c3", at=now)]
    store.add(recent)

    pruned = store.prune(max_age=dt.timedelta(days=7), max_per_consumer=4, now=now)
    assert pruned == 10 + 2 + 2
    for consumer, kept in (("c1", 4), ("c2", 4), ("c3", 1)):
        items, total = store.page(AttemptFilter(consumer_id=consumer))
        assert total == kept
    newest, _ = store.page(AttemptFilter(consumer_id="c1"))
    assert [i["at"] for i in newest] == [
        (now - dt.timedelta(seconds=100 - n)).isoformat() for n in (5, 4, 3, 2)
    ]
    assert store.prune(max_age=dt.timedelta(days=7), max_per_consumer=4, now=now) == 0


# -- the worker's buffer ---------------------------------------------------------------------------


def _note(log: AttemptLog, n: int, outcome: str = "delivered", response: str = "") -> None:
    log.note(
        consumer_id="c1",
        consumer="one",
        message_id=f"m-{n}",
        attempt=1,
        seconds=0.01,
        status=200 if outcome == "delivered" else 503,
        error=None if outcome == "delivered" else "HTTP 503",
        outcome=outcome,
        response=response,
    )


def test_successes_are_sampled_failures_always_kept(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/a.sqlite3")
    db.migrate()
    draws = itertools.cycle([0.1, 0.6])  # half of the draws fall under 0.5
    log = AttemptLog(AttemptStore(db), worker="w1", sample_success=0.5, rng=lambda: next(draws))
    for n in range(10):
        _note(log, n)
        _note(log, 100 + n, outcome="retry", response="x" * 5000 + "\x00")
    asyncio.run(log.flush())
    items, total = AttemptStore(db).page(AttemptFilter(consumer_id="c1"), limit=100)
    assert sum(i["outcome"] == "delivered" for i in items) == 5
    failed = [i for i in items if i["outcome"] == "retry"]
    assert len(failed) == 10
    assert failed[0]["response"] == "x" * 1024  # the first 1 KB
    assert failed[0]["worker"] == "w1"
    db.dispose()


def test_sqlite_is_written_on_the_loop_and_a_lock_held_elsewhere_loses_nothing(tmp_path):
    """In SQLite the log writes from the event loop and never waits for a lock: while
    another connection holds the write lock a flush keeps its rows (no drop), and they are
    written once it is released, the last of them by the stop of ``run``. Times and
    durations read back as written."""
    path = tmp_path / "a.sqlite3"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    log = AttemptLog(AttemptStore(db), worker="w1", batch=10_000, interval=3600)
    other = sqlite3.connect(path, isolation_level=None)

    async def scenario() -> None:
        for n in range(250):  # more than a slice: the rows go in several turns of the loop
            _note(log, n)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        await log.flush()
        assert (log.written, log.dropped, log.waiting) == (0, 0, 250)
        other.execute("COMMIT")
        await log.flush()
        assert (log.written, log.waiting) == (250, 0)
        writer = asyncio.create_task(log.run())
        _note(log, 999, outcome="retry")
        other.execute("BEGIN IMMEDIATE")
        await asyncio.sleep(0)
        writer.cancel()  # stops while the lock is held: the stop waits for it, briefly
        asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
        with pytest.raises(asyncio.CancelledError):
            await writer

    before = dt.datetime.now(dt.UTC)
    asyncio.run(scenario())
    assert (log.written, log.dropped, log.waiting) == (251, 0, 0)
    items, total = AttemptStore(db).page(AttemptFilter(consumer_id="c1", since=before), limit=300)
    assert total == 251
    assert {i["message_id"] for i in items} == {f"m-{n}" for n in range(250)} | {"m-999"}
    assert all(i["duration_ms"] == 10.0 for i in items)
    other.close()
    db.dispose()


def test_a_big_sqlite_flush_lets_deliveries_go_on_between_its_rows(tmp_path):
    """The rows of a SQLite flush are converted and inserted a few at a time, the loop's other
    work running in between: a task on the loop gets its turns while 3,000 rows are written
    (not after), and they are all written, in one transaction."""
    db = Database(f"sqlite:///{tmp_path}/a.sqlite3")
    db.migrate()
    log = AttemptLog(AttemptStore(db), worker="w1", batch=10_000, interval=3600)
    turns_during: list[int] = []

    async def scenario() -> None:
        turns = 0
        for n in range(3000):
            _note(log, n, outcome="retry" if n % 7 == 0 else "delivered", response="no" * (n % 3))

        async def other_work() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        before = turns
        await log.flush()
        turns_during.append(turns - before)
        other.cancel()

    asyncio.run(scenario())
    assert turns_during[0] > 1
    assert (log.written, log.dropped, log.waiting) == (3000, 0, 0)
    items, total = AttemptStore(db).page(AttemptFilter(consumer_id="c1"), limit=3000)
    assert total == 3000
    assert {i["message_id"] for i in items} == {f"m-{n}" for n in range(3000)}
    assert sum(i["outcome"] == "retry" for i in items) == len(range(0, 3000, 7))
    db.dispose()


def test_database_down_never_blocks_and_the_buffer_stays_bounded():
    # Nothing listens on port 1: every write fails at once.
    store = AttemptStore(Database("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"))
    log = AttemptLog(store, worker="w1", limit=100, batch=10)

    async def scenario() -> None:
        writer = asyncio.create_task(log.run())
        for n in range(250):
            _note(log, n, outcome="retry")
            await asyncio.sleep(0)
        wait_until = asyncio.get_running_loop().time() + 20
        while log.written == 0 and log.dropped < 150 and asyncio.get_running_loop().time() < wait_until:
            await asyncio.sleep(0.05)
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer

    asyncio.run(scenario())
    assert log.written == 0
    assert log.waiting <= 100  # bounded
    assert log.dropped + log.waiting == 250  # every attempt either kept or counted as dropped
    assert log.dropped >= 150


# -- the routes ------------------------------------------------------------------------------------


def test_routes_answer_a_consumers_and_a_messages_attempts(app, client, admin, make_key):
    consumers = app.extensions["workerrmq"].consumers.store
    spec = consumers.create({"name": "logged", "queue": "q-logged", "target_url": "http://127.0.0.1:9/x"})
    store = AttemptStore(app.extensions["workerrmq"].db)
    store.add([row(n, consumer=spec.id, status=503 if n % 2 else 200) for n in range(30)])
    store.add([row(40, consumer="other", message="m-3")])
    reader = make_key("read")

    url = f"/api/v1/consumers/{spec.id}/attempts"
    first = client.get(f"{url}?page_size=10", headers=reader)
    assert first.status_code == 200, first.json
    assert (first.json["total"], first.json["page"], first.json["page_size"]) == (30, 1, 10)
    assert [i["message_id"] for i in first.json["items"]][:2] == ["m-29", "m-28"]
    assert set(first.json["items"][0]) == {
        "message_id",
        "consumer_id",
        "consumer",
        "attempt",
        "at",
        "duration_ms",
        "status",
        "error",
        "outcome",
        "response",
        "worker",
    }
    third = client.get(f"{url}?page_size=10&page=3", headers=reader).json
    assert [i["message_id"] for i in third["items"]][-1] == "m-0"
    by_name = client.get("/api/v1/consumers/logged/attempts?status=503", headers=reader).json
    assert by_name["total"] == 15 and {i["status"] for i in by_name["items"]} == {503}
    assert client.get(f"{url}?message_id=m-3", headers=reader).json["total"] == 1
    window = client.get(f"{url}?since=2025-01-01T00:00:10Z&until=2025-01-01T00:00:20Z", headers=reader)
    assert window.json["total"] == 10

    across = client.get("/api/v1/messages/m-3/attempts", headers=reader).json
    assert {i["consumer_id"] for i in across["items"]} == {spec.id, "other"}

    assert client.get("/api/v1/consumers/nope/attempts", headers=reader).status_code == 404
    assert client.get(f"{url}", headers={}).status_code == 401
    for bad in ("page_size=0", "page_size=501", "status=50%203", "since=soon", "colour=red", "page=0"):
        response = client.get(f"{url}?{bad}", headers=reader)
        assert response.status_code == 400, (bad, response.json)
    assert client.get("/api/v1/messages/m-3/attempts?status=x%0Ay", headers=reader).status_code == 400


# -- a real worker ---------------------------------------------------------------------------------


def test_a_worker_records_each_attempt(make_settings, start_engine, make_app, endpoint, amqp, queue_name):
    settings: Settings = make_settings()
    client, admin = make_app(settings)
    endpoint.respond = lambda r: (200, {}) if r.message_id == "ok-1" else (404, {}, b"no such order " * 200)
    queue = queue_name("log")
    assert client.post("/api/v1/queues", json={"name": queue}, headers=admin).status_code == 201
    created = client.post(
        "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=admin
    )
    consumer_id = created.json["id"]
    worker = start_engine(settings)
    amqp.confirm_delivery()
    for message_id in ("ok-1", "bad-1"):
        amqp.basic_publish("", queue, b"{}", pika.BasicProperties(message_id=message_id, delivery_mode=2))

    def attempts() -> list[dict] | None:
        page = client.get(f"/api/v1/consumers/{consumer_id}/attempts", headers=admin).json
        return page["items"] if page["total"] == 2 else None

    items = {i["message_id"]: i for i in wait_for(attempts, timeout=20, what="two attempts logged")}
    assert items["ok-1"]["outcome"] == "delivered" and items["ok-1"]["status"] == 200
    bad = items["bad-1"]
    assert (bad["status"], bad["error"], bad["outcome"], bad["attempt"]) == (
        404,
        "HTTP 404",
        "dead_lettered",
        1,
    )
    assert bad["response"].startswith("no such order") and len(bad["response"]) == 1024
    assert bad["worker"] == worker.engine.worker_id
    assert bad["duration_ms"] >= 0
    across = client.get("/api/v1/messages/bad-1/attempts", headers=admin).json
    assert [i["outcome"] for i in across["items"]] == ["dead_lettered"]


def test_the_log_off_records_nothing(make_settings, start_engine, make_app, endpoint, amqp, queue_name):
    settings: Settings = make_settings(attempt_log=False)
    client, admin = make_app(settings)
    queue = queue_name("nolog")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    created = client.post(
        "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=admin
    )
    worker = start_engine(settings)
    assert worker.engine.attempt_log is None
    amqp.basic_publish("", queue, b"{}", pika.BasicProperties(message_id="quiet", delivery_mode=2))
    wait_for(lambda: endpoint.received, timeout=20, what="the delivery")
    page = client.get(f"/api/v1/consumers/{created.json['id']}/attempts", headers=admin).json
    assert page["total"] == 0


def test_settings_read_and_refuse_the_attempt_log_variables():
    read = Settings.from_env(
        {
            "ATTEMPT_LOG": "off",
            "ATTEMPT_LOG_SAMPLE_SUCCESS": "0.25",
            "ATTEMPT_LOG_MAX_AGE": "2d",
            "ATTEMPT_LOG_MAX_PER_CONSUMER": "500",
        },
        env_file=None,
    )
    assert (read.attempt_log, read.attempt_log_sample_success) == (False, 0.25)
    assert (read.attempt_log_max_age, read.attempt_log_max_per_consumer) == (2 * 86400, 500)
    defaults = Settings.from_env({}, env_file=None)
    assert defaults.attempt_log and defaults.attempt_log_sample_success == 1.0
    assert defaults.attempt_log_max_age == 7 * 86400 and defaults.attempt_log_max_per_consumer == 100_000
    from workerrmq.errors import ConfigError

    for var, value in (
        ("ATTEMPT_LOG", "maybe"),
        ("ATTEMPT_LOG_SAMPLE_SUCCESS", "1.5"),
        ("ATTEMPT_LOG_SAMPLE_SUCCESS", "nan"),
        ("ATTEMPT_LOG_MAX_AGE", "1s"),
        ("ATTEMPT_LOG_MAX_AGE", "7w"),
        ("ATTEMPT_LOG_MAX_PER_CONSUMER", "0"),
        ("ATTEMPT_LOG_MAX_PER_CONSUMER", "1e9"),
    ):
        with pytest.raises(ConfigError, match=var):
            Settings.from_env({var: value}, env_file=None)
