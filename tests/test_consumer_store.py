"""Consumer definitions and worker statistics in the store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import subprocess
import sys

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text, update

from workerrmq.core.consumer import ConsumerSpec
from workerrmq.core.policy import DEFAULT_RETRY_ON
from workerrmq.errors import Conflict, NotFound
from workerrmq.store import Database
from workerrmq.store.consumers import ConsumerStore, StatsReport
from workerrmq.store.crypto import Cipher
from workerrmq.store.db import MIGRATIONS
from workerrmq.store.db import head_revision as db_head_revision
from workerrmq.store.keys import KeyStore
from workerrmq.store.models import ConsumerStats
from workerrmq.worker.engine import Engine

CIPHER = Cipher(["a SECRET_KEY for the store's tests"])


@pytest.fixture
def store(db: Database) -> ConsumerStore:
    return ConsumerStore(db, CIPHER)


def values(name: str = "orders", queue: str = "orders", **extra: object) -> dict[str, object]:
    return {"name": name, "queue": queue, "target_url": "http://127.0.0.1:9/hook", **extra}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# -- definitions --------------------------------------------------------------------------


def test_create_applies_the_defaults(store):
    spec = store.create(values())
    assert len(spec.id) == 32
    assert spec.name == "orders"
    assert spec.queue == "orders"
    assert spec.target_url == "http://127.0.0.1:9/hook"
    assert spec.dead_letter_queue == "orders.dlq"
    assert spec.retry_on == DEFAULT_RETRY_ON
    assert spec.method == "POST"
    assert spec.headers == {}
    assert spec.timeout == 10.0
    assert spec.concurrency == 32
    assert spec.max_attempts == 8
    assert spec.initial_delay == 1.0
    assert spec.max_delay == 3600.0
    assert spec.signing_secret is None
    assert spec.rate_limit is None
    assert spec.ordered is False
    assert spec.circuit_threshold == 10
    assert spec.state == "running"
    assert spec.version == 1
    # Read back from the database, not only the object that was added.
    assert store.get(spec.id) == spec


def test_create_keeps_every_given_field(store):
    spec = store.create(
        values(
            method="PUT",
            headers={"Authorization": "Bearer x"},
            timeout=2.5,
            concurrency=4,
            max_attempts=3,
            initial_delay=0.1,
            max_delay=5.0,
            retry_on=["429", "timeout"],
            signing_secret="whsec_c2VjcmV0c2VjcmV0c2VjcmV0",
            rate_limit=12.5,
            ordered=True,
            circuit_threshold=2,
            circuit_cooldown=1.5,
            dead_letter_queue="parking",
            state="paused",
        )
    )
    again = store.get(spec.id)
    assert again == spec
    assert again.method == "PUT"
    assert again.headers == {"Authorization": "Bearer x"}
    assert again.retry_on == ("429", "timeout")
    assert again.signing_secret == "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"
    assert again.rate_limit == 12.5
    assert again.ordered is True
    assert again.dead_letter_queue == "parking"
    assert again.state == "paused"
    assert (again.timeout, again.concurrency, again.max_attempts) == (2.5, 4, 3)
    assert (again.initial_delay, again.max_delay) == (0.1, 5.0)
    assert (again.circuit_threshold, again.circuit_cooldown) == (2, 1.5)


def test_duplicate_name_is_a_conflict(store):
    store.create(values())
    with pytest.raises(Conflict, match="orders"):
        store.create(values(queue="other"))
    assert [s.name for s in store.list()] == ["orders"]
    # The store still works after the failed transaction.
    store.create(values(name="orders-2"))
    assert len(store.list()) == 2


def test_get_by_id_and_by_name(store):
    spec = store.create(values(name="by-name", queue="q1"))
    assert store.get(spec.id) == spec
    assert store.get("by-name") == spec


def test_get_unknown_is_not_found(store):
    store.create(values())
    with pytest.raises(NotFound):
        store.get("nope")
    with pytest.raises(NotFound):
        store.get("0" * 32)
    with pytest.raises(NotFound):
        store.update("nope", {"timeout": 1.0})
    with pytest.raises(NotFound):
        store.delete("nope")


def test_list_in_creation_order_and_filtered_by_queue(store):
    a = store.create(values(name="a", queue="q1"))
    b = store.create(values(name="b", queue="q2"))
    c = store.create(values(name="c", queue="q1"))
    assert [s.id for s in store.list()] == [a.id, b.id, c.id]
    assert [s.id for s in store.list(queue="q1")] == [a.id, c.id]
    assert [s.id for s in store.list(queue="q2")] == [b.id]
    assert store.list(queue="q3") == []


def test_update_changes_fields_and_bumps_version_and_updated_at(store):
    spec = store.create(values())
    changed = store.update(
        spec.id, {"timeout": 3.0, "state": "paused", "headers": {"A": "b"}, "retry_on": ["5xx"]}
    )
    assert changed.version == spec.version + 1
    assert changed.updated_at > spec.updated_at
    assert changed.created_at == spec.created_at
    assert (changed.timeout, changed.state) == (3.0, "paused")
    assert changed.headers == {"A": "b"}
    assert changed.retry_on == ("5xx",)
    assert store.get(spec.id) == changed
    again = store.update("orders", {"state": "running"})  # by name too
    assert again.version == spec.version + 2
    assert again.updated_at >= changed.updated_at


def test_created_and_updated_times_are_utc_and_recent(store):
    before = utcnow()
    spec = store.create(values())
    after = utcnow()
    for moment in (spec.created_at, store.get(spec.id).created_at, store.get(spec.id).updated_at):
        assert moment.tzinfo is not None
        assert before - dt.timedelta(seconds=1) <= moment <= after + dt.timedelta(seconds=1)


def test_update_cannot_change_id_or_version(store):
    spec = store.create(values())
    changed = store.update(spec.id, {"id": "x" * 32, "version": 99, "timeout": 2.0})
    assert changed.id == spec.id
    assert changed.version == 2
    assert store.get(spec.id).timeout == 2.0


def test_rename_onto_an_existing_name_is_a_conflict(store):
    store.create(values(name="first"))
    second = store.create(values(name="second"))
    with pytest.raises(Conflict):
        store.update(second.id, {"name": "first"})
    assert store.get(second.id).name == "second"
    assert store.get(second.id).version == 1


def test_delete_removes_the_consumer_and_its_stats(store, db):
    spec = store.create(values())
    other = store.create(values(name="other"))
    store.report(
        "w1", [StatsReport(consumer_id=spec.id, delivered=3), StatsReport(consumer_id=other.id, delivered=1)]
    )
    deleted = store.delete(spec.id)
    assert deleted.id == spec.id
    with pytest.raises(NotFound):
        store.get(spec.id)
    with db.session() as session:
        left = session.scalars(select(ConsumerStats.consumer_id)).all()
    assert left == [other.id]
    assert store.stats(spec.id)["delivered"] == 0
    assert store.stats(other.id)["delivered"] == 1


# -- statistics ---------------------------------------------------------------------------


def test_stats_without_reports(store):
    spec = store.create(values())
    stats = store.stats(spec.id)
    assert stats["delivered"] == stats["failed"] == stats["in_flight"] == 0
    assert stats["workers"] == 0
    assert stats["status"] == ["not running"]
    assert stats["circuit"] == "closed"
    assert stats["last_error"] is None and stats["last_error_at"] is None
    assert stats["latency_p50_ms"] is None and stats["latency_p99_ms"] is None


def test_stats_sum_over_workers(store):
    spec = store.create(values())
    store.report(
        "w1",
        [
            StatsReport(
                consumer_id=spec.id,
                delivered=10,
                failed=3,
                retried=2,
                dead_lettered=1,
                in_flight=4,
                latency_p50_ms=5.0,
                latency_p99_ms=40.0,
            )
        ],
    )
    store.report(
        "w2",
        [
            StatsReport(
                consumer_id=spec.id,
                delivered=7,
                failed=1,
                retried=1,
                dead_lettered=0,
                in_flight=2,
                latency_p50_ms=6.0,
                latency_p99_ms=90.0,
                circuit="open",
            )
        ],
    )
    stats = store.stats(spec.id)
    assert stats["delivered"] == 17
    assert stats["failed"] == 4
    assert stats["retried"] == 3
    assert stats["dead_lettered"] == 1
    assert stats["in_flight"] == 6
    assert stats["workers"] == 2
    assert stats["circuit"] == "open"
    assert stats["latency_p99_ms"] == 90.0
    assert stats["latency_p50_ms"] in (5.0, 6.0)


def test_a_new_report_replaces_the_workers_previous_one(store):
    spec = store.create(values())
    store.report("w1", [StatsReport(consumer_id=spec.id, delivered=5, in_flight=3)])
    store.report("w1", [StatsReport(consumer_id=spec.id, delivered=8, in_flight=1)])
    stats = store.stats(spec.id)
    assert (stats["delivered"], stats["in_flight"], stats["workers"]) == (8, 1, 1)


def test_reports_for_deleted_consumers_are_ignored(store):
    spec = store.create(values())
    store.report(
        "w1", [StatsReport(consumer_id="f" * 32, delivered=5), StatsReport(consumer_id=spec.id, delivered=2)]
    )
    assert store.stats(spec.id)["delivered"] == 2
    assert store.stats("f" * 32)["delivered"] == 0


def test_in_flight_only_counts_fresh_reports(store, db):
    spec = store.create(values())
    store.report("fresh", [StatsReport(consumer_id=spec.id, delivered=1, in_flight=2, latency_p99_ms=10.0)])
    store.report(
        "stale",
        [StatsReport(consumer_id=spec.id, delivered=4, in_flight=50, circuit="open", latency_p99_ms=999.0)],
    )
    with db.session() as session:
        session.execute(
            update(ConsumerStats)
            .where(ConsumerStats.worker_id == "stale")
            .values(updated_at=utcnow() - dt.timedelta(seconds=45))
        )
    stats = store.stats(spec.id)
    assert stats["delivered"] == 5  # totals still count every worker that reported
    assert stats["in_flight"] == 2  # but a silent worker's in-flight count does not
    assert stats["workers"] == 1
    assert stats["circuit"] == "closed"
    assert stats["latency_p99_ms"] == 10.0


def test_last_error_is_the_newest_over_all_workers(store):
    spec = store.create(values())
    now = utcnow()
    store.report(
        "w-new",
        [
            StatsReport(
                consumer_id=spec.id,
                failed=1,
                last_error="HTTP 503: new",
                last_error_at=now - dt.timedelta(seconds=5),
            )
        ],
    )
    store.report(
        "w-old",
        [
            StatsReport(
                consumer_id=spec.id,
                failed=1,
                last_error="HTTP 500: old",
                last_error_at=now - dt.timedelta(minutes=10),
            )
        ],
    )
    store.report("w-none", [StatsReport(consumer_id=spec.id, delivered=3)])
    stats = store.stats(spec.id)
    assert stats["last_error"] == "HTTP 503: new"
    at = dt.datetime.fromisoformat(stats["last_error_at"])
    assert at.tzinfo is not None
    assert abs((at - (now - dt.timedelta(seconds=5))).total_seconds()) < 1


# -- migrations ---------------------------------------------------------------------------


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_the_head_read_from_the_files_is_alembics():
    assert db_head_revision() == head_revision() is not None


def test_a_current_database_is_migrated_without_loading_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'current.db'}"
    Database(url).migrate()
    script = (
        "import sys\n"
        "from workerrmq.store import Database\n"
        f"db = Database({url!r})\n"
        "db.migrate()\n"
        "print(db.revision(), 'alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [head_revision(), "False"]


def test_migrate_twice_is_a_no_op(database_url):
    db = Database(database_url)
    try:
        db.migrate()
        store = ConsumerStore(db, CIPHER)
        spec = store.create(values())
        tables = set(inspect(db.engine).get_table_names())
        db.migrate()
        assert set(inspect(db.engine).get_table_names()) == tables
        assert {"api_keys", "consumers", "consumer_stats", "alembic_version"} <= tables
        assert current_revision(db) == head_revision()
        assert store.get(spec.id) == spec
    finally:
        db.dispose()


def test_upgrade_from_0001_keeps_api_keys(database_url):
    db = Database(database_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
        assert current_revision(db) == "0001"
        assert "consumers" not in inspect(db.engine).get_table_names()

        keys = KeyStore(db)
        info, token = keys.create("old-key", "publish")

        db.migrate()
        assert current_revision(db) == head_revision() != "0001"
        kept = keys.authenticate(token)
        assert kept is not None
        assert (kept.id, kept.name, kept.scope) == (info.id, "old-key", "publish")
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM api_keys")).scalar() == 1
        # The new tables work.
        store = ConsumerStore(db, CIPHER)
        spec = store.create(values())
        store.report("w1", [StatsReport(consumer_id=spec.id, delivered=1)])
        assert store.stats(spec.id)["delivered"] == 1
    finally:
        db.dispose()


def test_spec_fields_match_the_table(db):
    """Every field of a consumer is a column (the previous signing secret is sealed in
    ``credentials``), so nothing is lost on a round trip."""
    columns = {c["name"] for c in inspect(db.engine).get_columns("consumers")}
    assert {f.name for f in dataclasses.fields(ConsumerSpec)} - {"signing_secret_previous"} <= columns


def test_a_report_cancelled_mid_write_does_not_collide_with_the_next(make_settings):
    # The engine's stop cancels its periodic report and writes a last one; the cancelled
    # report's thread keeps running, and both would insert a new consumer's first row.
    engine = Engine(make_settings(), report_interval=60)
    engine.db.migrate()
    try:
        specs = [engine.store.create(values(f"c{i}", f"q{i}")) for i in range(50)]
        for spec in specs:
            engine.stats[spec.id] = StatsReport(consumer_id=spec.id, delivered=1)

        async def cancel_then_report() -> None:
            first = asyncio.ensure_future(engine._report())
            await asyncio.sleep(0)  # its write is now running in a thread
            first.cancel()
            await engine._report()

        asyncio.run(cancel_then_report())
        with engine.db.session() as session:
            rows = session.scalars(
                select(ConsumerStats).where(ConsumerStats.worker_id == engine.worker_id)
            ).all()
        assert sorted(row.consumer_id for row in rows) == sorted(spec.id for spec in specs)
    finally:
        engine.db.dispose()
