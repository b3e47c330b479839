"""The statistics history: the store (SQLite and PostgreSQL), one sample per moment with
several workers, the route, and a real worker delivering to a real endpoint."""

from __future__ import annotations

import datetime as dt

import pika

from tests.support import wait_for
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.consumers import ConsumerStore, StatsReport
from workerrmq.store.crypto import Cipher
from workerrmq.store.history import HistoryStore, Sample
from workerrmq.worker.history import HistorySampler

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _consumers(db: Database, settings: Settings) -> ConsumerStore:
    return ConsumerStore(db, Cipher.from_settings(settings))


def test_one_sample_per_moment_kept_fifteen_minutes(db: Database):
    store = HistoryStore(db)
    assert store.latest() is None
    for minute in range(20):
        at = T0 + dt.timedelta(minutes=minute)
        assert store.add(Sample(at, 60, {"c1": [minute, 0, 0, 0, 0]}, {}), worker="w1")
    # A second worker offering a moment already taken writes nothing.
    last = T0 + dt.timedelta(minutes=19)
    assert not store.add(Sample(last, 60, {"c1": [999, 0, 0, 0, 0]}, {}), worker="w2")
    kept = store.since(T0)
    assert [s.at for s in kept] == [T0 + dt.timedelta(minutes=m) for m in range(4, 20)]  # 15 min back
    assert kept[-1].consumers == {"c1": [19, 0, 0, 0, 0]}
    assert store.latest() == last


def test_totals_sum_every_worker_and_two_samplers_take_a_moment_once(db: Database, settings: Settings):
    consumers = _consumers(db, settings)
    spec = consumers.create({"name": "h", "queue": "q-h", "target_url": "http://127.0.0.1:9/x"})
    consumers.report("w1", [StatsReport(consumer_id=spec.id, delivered=5, failed=2, filtered=1)])
    consumers.report("w2", [StatsReport(consumer_id=spec.id, delivered=3, retried=1, dead_lettered=1)])
    store = HistoryStore(db)
    assert store.totals() == {spec.id: [8, 2, 1, 1, 1]}

    clock = [T0.timestamp() + 12.5]
    samplers = [
        HistorySampler(store, worker_id=w, management=None, step=10, clock=lambda: clock[0])
        for w in ("w1", "w2")
    ]
    assert [s.sample() for s in samplers] == [True, False]
    clock[0] += 10
    assert [s.sample() for s in reversed(samplers)] == [True, False]
    assert [s.at for s in store.since(T0)] == [T0 + dt.timedelta(seconds=10), T0 + dt.timedelta(seconds=20)]
    assert {s.worker_id: s.taken for s in samplers} == {"w1": 1, "w2": 1}


def test_route_answers_series_and_refuses_bad_arguments(app, client, make_key):
    services = app.extensions["workerrmq"]
    keep = services.consumers.store.create(
        {"name": "kept", "queue": "q-k", "target_url": "http://127.0.0.1:9/x"}
    )
    gone = services.consumers.store.create(
        {"name": "gone", "queue": "q-g", "target_url": "http://127.0.0.1:9/x"}
    )
    store = HistoryStore(services.db)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for n in range(3):
        at = now - dt.timedelta(seconds=30 - 10 * n)
        totals = {keep.id: [n, 0, 0, 0, 0], gone.id: [1, 1, 1, 1, 1]}
        store.add(Sample(at, 10, totals, {"q-k": [n, 1.5, 0.5]}), worker="w1")
    services.consumers.store.delete(gone.id)
    reader = make_key("read")

    answer = client.get("/api/v1/stats/history?minutes=15", headers=reader)
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["step"] == 10 and body["minutes"] == 15
    assert body["columns"]["consumers"] == [
        "t",
        "delivered",
        "failed",
        "retried",
        "dead_lettered",
        "filtered",
    ]
    assert body["columns"]["queues"] == ["t", "messages_ready", "publish_rate", "deliver_rate"]
    assert list(body["consumers"]) == [keep.id]  # a deleted consumer is not charted
    series = body["consumers"][keep.id]
    assert series["name"] == "kept"
    assert [p[1] for p in series["points"]] == [0, 1, 2]
    assert series["points"][0][0] == (now - dt.timedelta(seconds=30)).timestamp()
    assert body["queues"]["q-k"]["points"][-1][1:] == [2, 1.5, 0.5]
    assert client.get("/api/v1/stats/history", headers=reader).json == body  # 15 by default

    assert client.get("/api/v1/stats/history").status_code == 401
    for bad in ("minutes=0", "minutes=16", "minutes=abc", "minutes=99999999999999999999", "colour=red"):
        response = client.get(f"/api/v1/stats/history?{bad}", headers=reader)
        assert response.status_code == 400, (bad, response.json)
        assert ("minutes" if "minutes" in bad else "colour") in response.get_data(as_text=True)
    spec = client.get("/openapi.json").json
    assert "/api/v1/stats/history" in spec["paths"]


def test_a_worker_samples_deliveries_to_a_real_endpoint(
    make_settings, start_engine, make_app, endpoint, amqp, queue_name
):
    settings: Settings = make_settings()
    client, admin = make_app(settings)
    queue = queue_name("hist")
    assert client.post("/api/v1/queues", json={"name": queue}, headers=admin).status_code == 201
    created = client.post(
        "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=admin
    )
    consumer_id = created.json["id"]
    start_engine(settings, history_step=1.0)

    def points() -> list[list[float]]:
        body = client.get("/api/v1/stats/history?minutes=1", headers=admin).json
        return body["consumers"].get(consumer_id, {}).get("points", [])

    wait_for(lambda: len(points()) >= 1, timeout=20, what="a first sample")
    for n in range(3):
        amqp.basic_publish("", queue, b"{}", pika.BasicProperties(message_id=f"h-{n}", delivery_mode=2))
    wait_for(lambda: points()[-1][1] == 3, timeout=20, what="the three deliveries sampled")
    series = points()
    assert len(series) >= 2
    delivered = [p[1] for p in series]
    assert delivered == sorted(delivered) and delivered[0] < 3  # the totals grew while sampled
    times = [p[0] for p in series]
    assert times == sorted(set(times))  # one point per moment
    body = client.get("/api/v1/stats/history?minutes=1", headers=admin).json
    assert body["step"] == 1.0
    assert queue in body["queues"]  # the management API's figures, sampled beside them


def test_the_consumers_queues_are_sampled_before_others(
    db: Database, settings: Settings, mgmt, queue_name, monkeypatch
):
    """With more queues on the broker than a sample keeps, the consumers' own queue and
    dead-letter queue are kept, though others come first in name order; names with regular
    expression characters are asked for as they are."""
    import workerrmq.worker.history as history

    monkeypatch.setattr(history, "QUEUES_SAMPLED", 3)
    monkeypatch.setattr(history, "NAMES_PER_ASK", 1)  # one request per name: the chunking too
    early = [queue_name("0early") for _ in range(3)]  # "0" sorts before every other test queue
    own = queue_name("zz.own+(q)")
    dead = queue_name("zz.own-dlq")
    for name in (*early, own, dead):
        mgmt.declare_queue(name, durable=True, arguments={})
    consumers = _consumers(db, settings)
    consumers.create(
        {"name": "sampled", "queue": own, "target_url": "http://127.0.0.1:9/x", "dead_letter_queue": dead}
    )
    store = HistoryStore(db)
    assert store.consumer_queues() == {own, dead}
    sampler = HistorySampler(store, worker_id="w1", management=mgmt, step=10)
    figures = sampler._queues()
    assert len(figures) == 3
    assert own in figures and dead in figures
    assert figures[own] == [0, 0.0, 0.0]
