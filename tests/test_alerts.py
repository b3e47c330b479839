"""Degraded consumers and the notifications about them: the rules, the store, NOTIFY_URL
and the whole path with a real worker, broker and notification endpoint."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import subprocess
import sys

import aiohttp
import pika
import pytest
from standardwebhooks.webhooks import Webhook

from tests.endpoint import Endpoint, Received
from tests.support import wait_for
from workerrmq.broker.management import ManagementClient
from workerrmq.core.health import HealthRecord, assess, event, event_id
from workerrmq.core.status import Health
from workerrmq.errors import ConfigError
from workerrmq.settings import Settings
from workerrmq.store.consumers import ConsumerStore
from workerrmq.store.crypto import Cipher
from workerrmq.store.db import Database
from workerrmq.store.health import Claim, HealthStore, Watched
from workerrmq.store.workers import WorkerRegistry
from workerrmq.worker.alerts import HealthWatch, Notifier, leads
from workerrmq.worker.connections import ConnectionPool

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
FAST_RETRY = {"initial_delay": 0.05, "max_delay": 0.5, "max_attempts": 100}


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def look(record: HealthRecord, seconds: float, **seen: object) -> HealthRecord:
    """*record* after a look at T0 + *seconds*; *seen* overrides a healthy consumer's figures."""
    figures: dict[str, object] = {
        "degraded_after": 10.0,
        "running": True,
        "circuit_closed": True,
        "delivered": 0,
        "dead_letters": 0,
        "dead_letter_queue": "orders.dlq",
        **seen,
    }
    return assess(record, now=at(seconds), **figures)  # type: ignore[arg-type]


# -- the rules ----------------------------------------------------------------------------------


def test_an_open_circuit_degrades_only_after_degraded_after():
    record = look(HealthRecord(), 0, circuit_closed=False, delivered=5, last_error="HTTP 503")
    assert record.health is Health.OK and record.circuit_open_since == at(0)
    assert look(record, 9.9, circuit_closed=False, delivered=5).health is Health.OK
    degraded = look(record, 10, circuit_closed=False, delivered=5, last_error="HTTP 503")
    assert degraded.health is Health.DEGRADED
    assert degraded.degraded_since == degraded.changed_at == at(10)
    assert degraded.reason == "circuit open since 2030-01-01T00:00:00+00:00; last error: HTTP 503"
    # Still open later: the same degradation, not a new one.
    assert look(degraded, 60, circuit_closed=False, delivered=5).changed_at == at(10)


def test_a_closed_circuit_recovers_only_after_a_delivery():
    degraded = look(
        look(HealthRecord(), 0, circuit_closed=False, delivered=5), 10, circuit_closed=False, delivered=5
    )
    # A restarted worker's circuit starts closed: nothing was delivered, still degraded.
    assert look(degraded, 11, delivered=5).health is Health.DEGRADED
    recovered = look(degraded, 12, delivered=6)
    assert recovered.health is Health.OK and recovered.changed_at == at(12)
    assert recovered.circuit_open_since is None and recovered.degraded_since is None
    assert recovered.reason == degraded.reason  # what the recovered event says it recovered from


def test_a_paused_consumer_is_not_degraded_by_its_circuit():
    degraded = look(look(HealthRecord(), 0, circuit_closed=False), 10, circuit_closed=False)
    assert degraded.health is Health.DEGRADED
    assert look(degraded, 11, running=False, circuit_closed=False).health is Health.OK


def test_a_circuit_that_closes_in_time_never_degrades():
    record = look(HealthRecord(), 0, circuit_closed=False, delivered=1)
    record = look(record, 5, delivered=2)
    assert record.circuit_open_since is None
    assert look(record, 12, circuit_closed=False, delivered=2).health is Health.OK


def test_dead_letters_that_grow_degrade_until_replayed():
    record = look(HealthRecord(), 0, dead_letters=3)  # a new consumer counts from 0
    assert record.dead_letters == 0 and record.dead_letters_grew_since == at(0)
    degraded = look(record, 10, dead_letters=4)
    assert degraded.health is Health.DEGRADED
    assert degraded.reason == "dead-letter queue orders.dlq grew from 0 to 4 messages"
    # The depth could not be read: nothing changes.
    assert look(degraded, 20, dead_letters=None) == dataclasses.replace(degraded)
    recovered = look(degraded, 30, dead_letters=0)
    assert recovered.health is Health.OK and recovered.dead_letters_grew_since is None


def test_the_baseline_follows_the_dead_letter_queue_down():
    record = HealthRecord(dead_letters=5)
    record = look(record, 0, dead_letters=2)  # two of five replayed: that is the new normal
    assert record.dead_letters == 2 and record.health is Health.OK
    record = look(look(record, 1, dead_letters=3), 11, dead_letters=3)
    assert record.reason == "dead-letter queue orders.dlq grew from 2 to 3 messages"
    assert look(record, 12, dead_letters=2).health is Health.OK


def test_the_event_and_its_id():
    degraded = HealthRecord(health=Health.DEGRADED, reason="circuit open", changed_at=at(10))
    assert event(degraded, consumer_id="c1", consumer_name="orders") == {
        "type": "consumer.degraded",
        "consumer": {"id": "c1", "name": "orders"},
        "reason": "circuit open",
        "at": "2030-01-01T00:00:10+00:00",
    }
    recovered = dataclasses.replace(degraded, health=Health.OK, changed_at=at(20))
    assert event(recovered, consumer_id="c1", consumer_name="orders")["type"] == "consumer.recovered"
    # The same change keeps its id (a receiver drops a repeat); another change gets another.
    assert event_id("c1", Health.DEGRADED, at(10)) == event_id("c1", Health.DEGRADED, at(10))
    assert event_id("c1", Health.DEGRADED, at(10)) != event_id("c1", Health.OK, at(20))
    assert event_id("c1", Health.DEGRADED, at(10)) != event_id("c1", Health.DEGRADED, at(30))


def test_one_alive_worker_leads():
    alive = [f"w{n}" for n in range(5)]
    assert sum(leads(worker, alive) for worker in alive) == 1
    assert leads("w9", []) is True  # alone, even before its first heartbeat counts


# -- the store, on SQLite and PostgreSQL ----------------------------------------------------------


@pytest.fixture
def health(db) -> tuple[HealthStore, ConsumerStore]:
    consumers = ConsumerStore(db, Cipher(["a SECRET_KEY for the alerts tests"]))
    consumers.create({"name": "orders", "queue": "orders", "target_url": "http://example.com/hook"})
    return HealthStore(db), consumers


def test_store_writes_once_of_two_watchers_and_claims_once(health):
    store, consumers = health
    [first] = store.watched()
    assert first.version is None and first.record == HealthRecord() and first.running
    degraded = HealthRecord(health=Health.DEGRADED, reason="circuit open", changed_at=at(10))
    assert store.save(first, degraded, notify=True)
    assert not store.save(first, degraded, notify=True)  # a second watcher with the same read
    [second] = store.watched()
    assert second.record == degraded and second.version == 1
    assert store.save(second, dataclasses.replace(degraded, reason="still open"), notify=True)
    assert not store.save(second, degraded, notify=True)  # read before that write: dropped

    [claim] = store.claim(lease=300)
    assert claim.consumer_name == "orders" and claim.record.health is Health.DEGRADED
    assert store.claim(lease=300) == []  # taken: no second sender
    # A claim whose sender died is taken again once its lease lapsed.
    assert (
        wait_for(lambda: store.claim(lease=0), what="the claim to lapse")[0].consumer_id == claim.consumer_id
    )
    store.release(claim.consumer_id)  # a send stopped: taken again at once
    assert [c.consumer_id for c in store.claim(lease=300)] == [claim.consumer_id]
    store.notified(claim.consumer_id, Health.DEGRADED)
    assert store.claim(lease=300) == []
    view = store.views([claim.consumer_id])[claim.consumer_id]
    assert view == {
        "health": "degraded",
        "degraded_reason": "still open",
        "degraded_since": at(10).isoformat(),
    }

    consumers.delete("orders")
    assert store.watched() == [] and store.claim(lease=0) == []


def test_store_a_lapsed_claim_sends_the_state_as_it_is_now(health):
    """A sender died after claiming "degraded"; the consumer recovered meanwhile, back to
    the health last notified. The recovery is still sent once the claim lapses."""
    store, _ = health
    [first] = store.watched()
    store.save(first, HealthRecord(health=Health.DEGRADED, reason="x", changed_at=at(1)), notify=True)
    [_claim] = store.claim(lease=300)  # ... and its sender dies
    [watched] = store.watched()
    store.save(watched, HealthRecord(reason="x", changed_at=at(2)), notify=True)  # ok == notified
    assert store.claim(lease=300) == []  # still held
    [again] = wait_for(lambda: store.claim(lease=0), what="the claim to lapse")
    assert again.record.health is Health.OK and again.record.changed_at == at(2)


def test_store_without_notifications_owes_none(health):
    store, _ = health
    [first] = store.watched()
    store.save(first, HealthRecord(health=Health.DEGRADED, reason="x", changed_at=at(1)), notify=False)
    assert store.claim(lease=0) == []
    [watched] = store.watched()
    store.save(watched, HealthRecord(changed_at=at(2)), notify=True)  # recovered, owed
    store.settle()  # notifications turned off meanwhile: nothing is sent later
    assert store.claim(lease=0) == []


# -- NOTIFY_URL and NOTIFY_SECRET -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "ftp://alerts.example/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "alerts.example/hook",
        "http:///no-host",
        "http://alerts.example/hook\r\nX-Injected: 1",
        "http://alerts.example/\nhook",
        "http://alerts.example/a b",
        "http://alerts.example/\x00",
        "http://alerts.example:99999/",
        "http://alerts.example/" + "a" * 3000,
    ],
)
def test_hostile_notify_urls_are_refused_naming_the_setting(value):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"NOTIFY_URL": value}, env_file=None)
    assert refused.value.variable == "NOTIFY_URL"
    assert "\n" not in refused.value.message


def test_notify_settings_accepted_and_never_shown():
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    settings = Settings.from_env(
        {"NOTIFY_URL": "https://ops:hunter22@alerts.example/hook?token=t0ps3cret", "NOTIFY_SECRET": secret},
        env_file=None,
    )
    assert settings.notify_url.startswith("https://ops:") and settings.notify_secret == secret
    assert (
        "hunter22" not in repr(settings)
        and "t0ps3cret" not in repr(settings)
        and secret not in repr(settings)
    )
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"NOTIFY_URL": "gopher://ops:hunter22@alerts.example/"}, env_file=None)
    assert "hunter22" not in refused.value.message
    for bad in ("whsec_not base64!", "short"):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({"NOTIFY_SECRET": bad}, env_file=None)
        assert refused.value.variable == "NOTIFY_SECRET"


def test_the_worker_does_not_start_with_a_hostile_notify_url(tmp_path):
    environ = {
        **os.environ,
        "NOTIFY_URL": "http://alerts.example/hook\r\nX-Injected: 1",
        "DATABASE_URL": f"sqlite:///{tmp_path}/w.sqlite3",
    }
    done = subprocess.run(
        [sys.executable, "-m", "workerrmq.cli", "worker", "--processes", "1"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "NOTIFY_URL" in done.stderr and "X-Injected" not in done.stderr


# -- the notifier, against a real endpoint ------------------------------------------------------------


def send(notifier: Notifier, claim: Claim) -> bool:
    async def go() -> bool:
        async with aiohttp.ClientSession() as http:
            return await notifier.send(http, claim)

    return asyncio.run(go())


CLAIM = Claim(
    consumer_id="c1",
    consumer_name="orders",
    record=HealthRecord(health=Health.DEGRADED, reason="circuit open", changed_at=at(10)),
)


def test_notifier_retries_then_gives_up_without_showing_the_url_secret(caplog):
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with Endpoint() as notify:
        notify.respond = lambda _r: (302, {"Location": "http://127.0.0.1:1/elsewhere"})  # never followed
        url = notify.url.replace("http://", "http://ops:hunter22@") + "?token=t0ps3cret"
        notifier = Notifier(url, secret)
        notifier.attempts, notifier.first_wait = 3, 0.01
        with caplog.at_level(logging.WARNING, logger="workerrmq.worker.alerts"):
            assert send(notifier, CLAIM) is False
        assert notify.count() == 3
        assert len({r.headers["webhook-id"] for r in notify.received}) == 1
        for received in notify.received:
            Webhook(secret).verify(
                received.body.decode(), {k.lower(): v for k, v in received.headers.items()}
            )
        assert "HTTP 302" in caplog.text and "orders" in caplog.text
        assert "hunter22" not in caplog.text and "t0ps3cret" not in caplog.text and secret not in caplog.text

        notify.respond = lambda _r: (204, {})
        assert send(notifier, CLAIM) is True and notify.count() == 4


def test_notifier_without_a_secret_sends_unsigned():
    with Endpoint() as notify:
        assert send(Notifier(notify.url), CLAIM) is True
        [got] = notify.received
        assert "webhook-signature" not in got.headers and got.headers["webhook-id"].startswith("alert_")
        assert json.loads(got.body)["type"] == "consumer.degraded"


# -- the whole path: worker, broker, API, notification endpoint ----------------------------------------


def publish(amqp, queue: str, body: bytes, message_id: str) -> None:
    amqp.confirm_delivery()
    amqp.basic_publish(
        "", queue, body, pika.BasicProperties(delivery_mode=2, message_id=message_id), mandatory=True
    )


def consumer_view(client, admin, consumer_id: str) -> dict:
    response = client.get(f"/api/v1/consumers/{consumer_id}", headers=admin)
    assert response.status_code == 200
    return response.json


def health_of(client, admin, consumer_id: str, health: str) -> dict | None:
    view = consumer_view(client, admin, consumer_id)
    return view if view["health"] == health else None


def notifications(notify: Endpoint) -> list[Received]:
    """The notifications the endpoint took (answered 2xx)."""
    return [r for r in notify.received if 200 <= r.status < 300]


def more_looks(worker, count: int = 3) -> None:
    """Wait until the worker's health watch looked *count* more times."""
    seen = worker.engine.health_watch.looks
    wait_for(lambda: worker.engine.health_watch.looks >= seen + count, what=f"{count} more looks")


def test_open_circuit_degrades_notifies_once_and_recovers(
    settings, start_engine, endpoint, make_consumer, amqp, client, admin
):
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    hook = Webhook(secret)
    endpoint.respond = lambda _r: (503, {})
    with Endpoint() as notify:
        tries = iter([503])  # the first notification fails once: it is tried again
        notify.respond = lambda _r: (next(tries, 200), {})
        notifying = dataclasses.replace(settings, notify_url=notify.url, notify_secret=secret)
        worker = start_engine(notifying, health_interval=0.2)
        consumer, queue = make_consumer(
            endpoint.url, circuit_threshold=1, circuit_cooldown=1, degraded_after=1, **FAST_RETRY
        )
        assert consumer["health"] == "ok" and consumer["degraded_reason"] is None
        worker.runner(consumer["id"])
        publish(amqp, queue, b'{"order": 1}', "m-1")

        view = wait_for(lambda: health_of(client, admin, consumer["id"], "degraded"), timeout=20)
        assert view["degraded_reason"].startswith("circuit open since ")
        assert dt.datetime.fromisoformat(view["degraded_since"]).tzinfo is not None
        wait_for(lambda: notifications(notify), timeout=20, what="the degraded notification")
        [first_try, sent] = notify.received
        assert first_try.status == 503 and first_try.headers["webhook-id"] == sent.headers["webhook-id"]
        hook.verify(sent.body.decode(), {k.lower(): v for k, v in sent.headers.items()})
        degraded = json.loads(sent.body)
        assert degraded == {
            "type": "consumer.degraded",
            "consumer": {"id": consumer["id"], "name": consumer["name"]},
            "reason": view["degraded_reason"],
            "at": degraded["at"],
        }
        assert degraded["at"] == view["degraded_since"]

        # A restart changes nothing: still degraded, nothing sent again.
        wait_for(lambda: worker.engine.health_watch.sending == 0, what="the send to be recorded")
        worker.stop()
        worker = start_engine(notifying, health_interval=0.2)
        more_looks(worker)
        assert health_of(client, admin, consumer["id"], "degraded")
        assert notify.count() == 2

        endpoint.respond = lambda _r: (200, {})
        wait_for(lambda: health_of(client, admin, consumer["id"], "ok"), timeout=20)
        wait_for(lambda: len(notifications(notify)) == 2, timeout=20, what="the recovered notification")
        recovered = notify.received[-1]
        hook.verify(recovered.body.decode(), {k.lower(): v for k, v in recovered.headers.items()})
        assert json.loads(recovered.body)["type"] == "consumer.recovered"
        assert json.loads(recovered.body)["reason"] == degraded["reason"]
        assert endpoint.delivered_ids() == ["m-1"]
        more_looks(worker)
        assert notify.count() == 3  # one degraded (tried twice), one recovered; no repeat


def test_dead_letters_that_grow_degrade_without_notify_url(
    settings, start_engine, endpoint, make_consumer, amqp, client, admin
):
    endpoint.respond = lambda _r: (400, {})  # refused: dead-lettered at once
    worker = start_engine(settings, health_interval=0.2)
    quick, queue = make_consumer(endpoint.url, degraded_after=1, circuit_threshold=100)
    patient, patient_queue = make_consumer(endpoint.url, circuit_threshold=100)  # degraded_after 300 s
    worker.runner(quick["id"])
    worker.runner(patient["id"])
    for n, name in enumerate((queue, queue, patient_queue)):
        publish(amqp, name, b"{}", f"m-{n}")

    view = wait_for(lambda: health_of(client, admin, quick["id"], "degraded"), timeout=20)
    assert view["degraded_reason"] == f"dead-letter queue {queue}.dlq grew from 0 to 2 messages"
    assert consumer_view(client, admin, patient["id"])["health"] == "ok"
    listed = client.get("/api/v1/consumers", headers=admin).json["items"]
    assert {c["id"]: c["health"] for c in listed} == {quick["id"]: "degraded", patient["id"]: "ok"}
    assert HealthStore(worker.engine.db).claim(lease=0) == []  # no NOTIFY_URL: nothing owed

    assert client.post(f"/api/v1/queues/{queue}.dlq/purge", headers=admin).status_code == 204
    view = wait_for(lambda: health_of(client, admin, quick["id"], "ok"), timeout=20)
    assert view["degraded_reason"] is None and view["degraded_since"] is None


# -- the depths a look reads ------------------------------------------------------------------------


def watched_on(dlq: str, record: HealthRecord) -> Watched:
    return Watched(
        id=f"id-{dlq}",
        name=dlq,
        dead_letter_queue=dlq,
        degraded_after=300.0,
        running=True,
        circuit_closed=True,
        delivered=0,
        last_error=None,
        record=record,
        version=None,
    )


def test_depths_come_from_the_management_api_and_live_where_they_matter(settings, mgmt, queue_name, amqp):
    empty, full, replayed, missing = (queue_name("dl") for _ in range(4))
    for name in (empty, full, replayed):
        mgmt.declare_queue(name, durable=True, arguments={})
    for n in range(2):
        publish(amqp, full, b"{}", f"m-{n}")
    watched = [
        watched_on(empty, HealthRecord()),
        watched_on(full, HealthRecord()),
        watched_on(replayed, HealthRecord(dead_letters=3)),  # emptied since: its fall is read live
        watched_on(missing, HealthRecord()),
    ]
    db = Database(settings.database_url)

    async def depths(management: ManagementClient, *, broker: bool) -> dict[str, int]:
        pool = ConnectionPool(settings.rabbitmq_urls, timeout=10, name="test-depths", max_connections=1)
        if broker:
            await pool.any_link()
        watch = HealthWatch(
            worker_id="w",
            db=db,
            registry=WorkerRegistry(db),
            pool=lambda: pool if broker else None,
            notifier=None,
            management=management,
        )
        watch.declares_at_most = 0  # as with thousands of dead-letter queues
        try:
            return await watch._depths(watched)
        finally:
            await pool.close()

    wait_for(lambda: mgmt.queue_depths().get(empty) is not None, what="the empty queue's first figure")
    try:
        # Without a broker connection, the management API's figures alone: the empty queue's
        # zero; the full one's figure may lag and the emptied one's zero may be stale, so
        # neither is taken from it; the missing queue is unknown.
        assert asyncio.run(depths(mgmt, broker=False)) == {empty: 0}
        assert asyncio.run(depths(mgmt, broker=True)) == {empty: 0, full: 2, replayed: 0}
        # The management API away: every queue is read live, as without one.
        away = ManagementClient("http://guest:guest@127.0.0.1:9", "/", timeout=2)
        assert asyncio.run(depths(away, broker=True)) == {empty: 0, full: 2, replayed: 0}
    finally:
        db.dispose()
