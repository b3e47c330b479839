"""An idle worker with many consumers does little: it writes no statistics for consumers whose
figures did not change, leaves the runners of unchanged definitions alone when another one
changes, starts its consumers spread over the connections they need, and stops them all
through its connections' close.

Real broker, real SQLite; a few hundred consumers (``WORKERRMQ_IDLE_CONSUMERS`` sets how
many), each on a queue of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiormq
import pytest
from sqlalchemy import select, update

from tests.support import wait_for
from tests.test_worker_scale import TuneProxy, _define, _publish_one_each, _via
from tests.test_worker_scale import many_queues as many_queues  # the fixture, used by queues
from tests.workers import EngineThread
from workerrmq.store import Database
from workerrmq.store.consumers import ConsumerStore
from workerrmq.store.crypto import Cipher
from workerrmq.store.models import ConsumerStats, WorkerRecord, as_utc, utcnow


@pytest.fixture
def queues(request: pytest.FixtureRequest) -> Callable[[int], list[str]]:
    """*n* queues named idle-*, made and deleted by test_worker_scale's ``many_queues``."""
    make = request.getfixturevalue("many_queues")
    return lambda n: make(n, "idle")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    """A SQLite URL on /dev/shm where there is one (hundreds of definitions, one transaction
    each, wait for no disk), removed afterwards."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield f"sqlite:///{tmp_path}/idle.sqlite3"
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="wrmq-idle-") as folder:
        yield f"sqlite:///{folder}/idle.sqlite3"


@pytest.fixture
def channel_max_64(broker: str) -> Iterator[str]:
    """An AMQP URL over which every connection negotiates channel_max 64 (see TuneProxy)."""
    parts = urlsplit(broker)
    proxy = TuneProxy(parts.hostname or "127.0.0.1", parts.port or 5672, 64)
    proxy.heal()
    yield _via(broker, proxy.port)
    proxy.cut()


def _count() -> int:
    return int(os.environ.get("WORKERRMQ_IDLE_CONSUMERS", "500"))


def _consuming(worker: EngineThread) -> int:
    runners = list(worker.engine.runners.values())  # a copy: the engine changes it meanwhile
    return sum(r.status == "consuming" for r in runners)


def _rows(db: Database, worker_id: str) -> dict[str, dt.datetime]:
    """The worker's statistics rows: consumer id -> when each was last written."""
    with db.session() as session:
        found = session.execute(
            select(ConsumerStats.consumer_id, ConsumerStats.updated_at).where(
                ConsumerStats.worker_id == worker_id
            )
        )
        return {cid: as_utc(at) for cid, at in found}


def _heartbeat(db: Database, worker_id: str) -> dt.datetime | None:
    with db.session() as session:
        beat = session.scalar(select(WorkerRecord.last_heartbeat).where(WorkerRecord.id == worker_id))
        return as_utc(beat) if beat is not None else None


def _beats(db: Database, worker_id: str, times: int) -> None:
    """Wait until the worker's heartbeat moved *times* times: as many statistics rounds."""
    for _ in range(times):
        last = _heartbeat(db, worker_id)
        wait_for(
            lambda last=last: (beat := _heartbeat(db, worker_id)) is not None and beat != last,
            timeout=30,
            what="the worker's next heartbeat",
        )


def _started(
    queues: Callable[[int], list[str]],
    make_settings: Callable[..., object],
    start_engine: Callable[..., EngineThread],
    url: str,
    database_url: str,
    **settings: object,
) -> tuple[EngineThread, list[str], list[str], Database]:
    """*_count()* consumers, each on a queue of its own, all consuming on one worker."""
    config = make_settings(database_url=database_url, **settings)
    names = queues(_count())
    ids = _define(config, names, url)  # type: ignore[arg-type]
    worker = start_engine(config, reconcile_interval=0.5, report_interval=0.3)
    wait_for(
        lambda: _consuming(worker) == len(ids), timeout=300, interval=0.2, what="every consumer consuming"
    )
    return worker, names, ids, Database(database_url)


def test_idle_consumers_write_no_statistics_and_still_show_as_running(
    queues, database, make_settings, start_engine, endpoint, broker
):
    worker, names, ids, db = _started(queues, make_settings, start_engine, endpoint.url, database)
    engine = worker.engine
    try:
        # Every consumer's first figures are written once...
        wait_for(lambda: len(_rows(db, engine.worker_id)) == len(ids), timeout=60, what="a row per consumer")
        _beats(db, engine.worker_id, 2)
        before = _rows(db, engine.worker_id)
        # ...and then, idle, not again, round after round; the heartbeat goes on.
        _beats(db, engine.worker_id, 5)
        assert _rows(db, engine.worker_id) == before

        # One consumer delivers: its row, and only its row, is written again.
        _publish_one_each(broker, [names[0]])
        wait_for(lambda: endpoint.count() == 1, what="the delivery")
        wait_for(
            lambda: _rows(db, engine.worker_id)[ids[0]] != before[ids[0]],
            timeout=30,
            what="its row rewritten",
        )
        after = _rows(db, engine.worker_id)
        assert {cid for cid in ids if after[cid] != before[cid]} == {ids[0]}

        # A row far older than the freshness window still counts as running while the worker
        # heartbeats: what the API shows does not depend on idle rows being rewritten.
        with db.session() as session:
            session.execute(
                update(ConsumerStats)
                .where(ConsumerStats.worker_id == engine.worker_id)
                .values(updated_at=utcnow() - dt.timedelta(minutes=10))
            )
        store = ConsumerStore(db, Cipher.from_settings(engine.settings))
        stats = store.stats_of(ids[:3])
        for cid in ids[:3]:
            assert stats[cid]["running_on"] == [engine.worker_id], stats[cid]
            assert stats[cid]["status"] == ["consuming"], stats[cid]
        assert stats[ids[0]]["delivered"] == 1
    finally:
        worker.stop()
    # Stopped, the worker marked every row of its own stopped.
    stats = ConsumerStore(db, Cipher.from_settings(engine.settings)).stats_of(ids)
    assert all(s["running_on"] == [] and s["status"] == ["stopped"] for s in stats.values()), stats
    assert stats[ids[0]]["delivered"] == 1  # the totals stay
    db.dispose()


def test_a_changed_consumer_restarts_and_the_others_are_left_alone(
    queues, database, make_settings, start_engine, endpoint, broker
):
    worker, names, ids, db = _started(queues, make_settings, start_engine, endpoint.url, database)
    engine = worker.engine
    try:
        runners = dict(engine.runners)
        placed = {cid: runner.spec for cid, runner in runners.items()}
        read = {spec.id: spec for spec in engine._specs}
        store = ConsumerStore(db, Cipher.from_settings(engine.settings))
        changed = store.update(ids[0], {"timeout": 7.0})
        wait_for(
            lambda: (
                (r := engine.runners.get(ids[0])) is not None
                and r.spec.version == changed.version
                and r.status == "consuming"
            ),
            timeout=30,
            what="the changed consumer restarted with its new version",
        )
        assert engine.runners[ids[0]] is not runners[ids[0]]
        # Every other runner is the one that was there, with the very definition it had, and
        # the engine holds the very definitions it read before: none was read again (and
        # compared field by field) for one consumer's change.
        now_read = {spec.id: spec for spec in engine._specs}
        for cid in ids[1:]:
            assert engine.runners[cid] is runners[cid]
            assert engine.runners[cid].spec is placed[cid]
            assert now_read[cid] is read[cid]
        # All still deliver.
        _publish_one_each(broker, names[:20])
        wait_for(lambda: len(set(endpoint.ids())) == 20, timeout=30, what="20 deliveries")
    finally:
        worker.stop()
        db.dispose()


def test_consumers_start_spread_over_the_connections_they_need(
    queues, database, make_settings, channel_max_64, start_engine, endpoint, broker
):
    """channel_max 64: 200 consumers need four connections (the first also carries the control
    channel, each its failure router's). They are opened together and share the consumers."""
    config = make_settings(database_url=database, rabbitmq_url=channel_max_64)
    names = queues(200)
    _define(config, names, endpoint.url)
    worker = start_engine(config)
    wait_for(lambda: _consuming(worker) == 200, timeout=120, interval=0.2, what="200 consumers consuming")
    pool = worker.engine.pool
    assert pool is not None
    assert len(pool.links) == 1 + -(-(200 - 62) // 63), [link.free for link in pool.links]
    assert pool.opened == len(pool.links)  # none closed by the broker for a channel too many
    carried = [link.channel_max - link.free for link in pool.links]
    assert min(carried) > 30, carried  # each took a share: filled one after another, the last had 13
    _publish_one_each(broker, names)
    wait_for(lambda: len(set(endpoint.ids())) == 200, timeout=60, what="200 deliveries")


def test_a_stop_lets_go_of_every_consumer_and_loses_no_message(
    queues, database, make_settings, start_engine, endpoint, broker
):
    """Messages published while the worker stops are each delivered once or still in their
    queue afterwards; no consumer and no connection of the worker is left."""
    worker, names, ids, db = _started(queues, make_settings, start_engine, endpoint.url, database)
    engine = worker.engine
    pool = engine.pool
    assert pool is not None
    links = list(pool.links)
    _publish_one_each(broker, names[:100])
    wait_for(lambda: endpoint.count() >= 10, timeout=30, what="deliveries under way")
    worker.stop()
    assert not worker.running
    assert all(not link.alive for link in links)

    counts = asyncio.run(_depths_and_consumers(broker, names))
    assert sum(consumers for _, consumers in counts.values()) == 0, "a consumer was left"
    delivered = set(endpoint.ids())
    for name in names[:100]:
        ready, _ = counts[name]
        # Once: delivered (and acked, so not in the queue), or back in the queue, not both.
        assert (name in delivered) != (ready == 1), (name, ready, name in delivered)
    assert all(counts[name][0] == 0 for name in names[100:])
    with db.session() as session:
        stopped = session.scalar(select(WorkerRecord.stopped_at).where(WorkerRecord.id == engine.worker_id))
    assert stopped is not None
    db.dispose()


async def _depths_and_consumers(url: str, queues: list[str]) -> dict[str, tuple[int, int]]:
    """Each queue's ready messages and consumers, from passive declares."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        found = {}
        for name in queues:
            declared = await channel.queue_declare(name, passive=True)
            found[name] = (declared.message_count or 0, declared.consumer_count or 0)
        return found
    finally:
        await connection.close()
