"""Many consumers on one worker, and changes to one consumer while another hangs.

A connection carries at most the channel_max it negotiated; the worker spreads its
consumers' channels over as many connections as they need. The small-limit tests
make the broker offer a small channel_max through a proxy that rewrites the
broker's Connection.Tune, so the broker itself enforces the small limit, on
connections of these tests only.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiormq
import pytest
from aiormq import spec

from tests.endpoint import Endpoint, Received
from tests.support import TcpProxy, wait_for
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.consumers import ConsumerStore
from workerrmq.store.crypto import Cipher

_TUNE = (10, 30)  # Connection.Tune: class 10, method 30
_FRAME_END = b"\xce"


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("closed during the handshake")
        data += chunk
    return data


def _read_frame(sock: socket.socket) -> bytes:
    header = _read_exact(sock, 7)
    (size,) = struct.unpack(">I", header[3:7])
    return header + _read_exact(sock, size + 1)


class TuneProxy(TcpProxy):
    """A proxy to the broker that lowers the channel_max the broker offers to *channel_max*.

    The client answers Tune-Ok with what it was offered, and the broker then enforces
    that value on the connection: one channel too many and it closes the connection.
    """

    def __init__(self, target_host: str, target_port: int, channel_max: int) -> None:
        super().__init__(target_host, target_port)
        self.channel_max = channel_max

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            b.sendall(_read_exact(a, 8))  # the protocol header
            while True:
                frame = _read_frame(b)
                if frame[0] == 1 and struct.unpack(">HH", frame[7:11]) == _TUNE:
                    frame = frame[:11] + struct.pack(">H", self.channel_max) + frame[13:]
                    a.sendall(frame)
                    break
                a.sendall(frame)
                b.sendall(_read_frame(a))  # Start-Ok (or Secure-Ok)
        except OSError:
            a.close()
            b.close()
            return
        super()._pump(a, b)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))


@pytest.fixture
def small_channel_max(broker: str) -> Iterator[Callable[[int], str]]:
    """An AMQP URL over which every connection negotiates the given channel_max."""
    proxies: list[TuneProxy] = []

    def make(channel_max: int) -> str:
        parts = urlsplit(broker)
        proxy = TuneProxy(parts.hostname or "127.0.0.1", parts.port or 5672, channel_max)
        proxy.heal()
        proxies.append(proxy)
        return _via(broker, proxy.port)

    yield make
    for proxy in proxies:
        proxy.cut()


@pytest.fixture
def many_queues(broker: str) -> Iterator[Callable[..., list[str]]]:
    """Declare *n* queues (and one dead-letter queue they share); all deleted afterwards.

    Take it before ``start_engine``: then the worker has stopped before its queues go.
    """
    made: list[str] = []

    def make(n: int, kind: str = "scale") -> list[str]:
        prefix = f"{kind}-{uuid.uuid4().hex[:8]}"
        names = [f"{prefix}-{i}" for i in range(n)]
        made.extend([*names, f"{prefix}.dlq"])
        asyncio.run(_in_bulk(broker, [*names, f"{prefix}.dlq"], declare=True))
        return names

    yield make
    if made:
        asyncio.run(_in_bulk(broker, made, declare=False))


async def _in_bulk(url: str, queues: list[str], *, declare: bool) -> None:
    """Declare (durable) or delete *queues* over one channel without waiting for each answer.

    A channel carries out its methods in order, so the answer to one more synchronous
    method means every declare or delete before it is done (one that failed would have
    closed the channel, and that method would raise).
    """
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name in queues:
            if declare:
                await channel.queue_declare(name, durable=True, nowait=True)
            else:
                await channel.queue_delete(name, nowait=True)
        await channel.basic_qos(prefetch_count=0)
    finally:
        await connection.close()


def _define(settings: Settings, queues: list[str], target_url: str, **fields: object) -> list[str]:
    """One consumer per queue, written straight to the store (the API is not under test)."""
    db = Database(settings.database_url)
    db.migrate()
    store = ConsumerStore(db, Cipher.from_settings(settings))
    dlq = queues[0].rsplit("-", 1)[0] + ".dlq"
    ids = [
        store.create(
            {
                "name": q,
                "queue": q,
                "target_url": target_url,
                "dead_letter_queue": dlq,
                "concurrency": 1,
                **fields,
            }
        ).id
        for q in queues
    ]
    db.dispose()
    return ids


def _publish_one_each(broker: str, queues: list[str]) -> None:
    """One message to each queue (its name as body and id), each confirmed by the broker."""
    asyncio.run(_publish_confirmed(broker, queues))


async def _publish_confirmed(url: str, queues: list[str]) -> None:
    """All messages in flight at once rather than one confirm at a time: 2,100 round trips
    would be most of the delivery figure."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        confirms = await asyncio.gather(
            *(
                channel.basic_publish(
                    name.encode(), routing_key=name, properties=spec.Basic.Properties(message_id=name)
                )
                for name in queues
            )
        )
        assert all(isinstance(c, spec.Basic.Ack) for c in confirms), confirms
    finally:
        await connection.close()


def _worker_connections(mgmt, worker_id: str) -> list[dict]:
    return [c for c in mgmt.list_connections() if worker_id in str(c.get("client_properties"))]


# -- many consumers ---------------------------------------------------------------------------


def test_consumers_spread_over_connections_within_channel_max(
    many_queues, make_settings, small_channel_max, start_engine, endpoint, broker, mgmt
):
    """With channel_max 8, 20 consumers need at least three connections; on one connection
    the broker would close it at the ninth channel, and nothing would be delivered."""
    settings = make_settings(rabbitmq_url=small_channel_max(8))
    queues = many_queues(20)
    _define(settings, queues, endpoint.url)
    worker = start_engine(settings)
    wait_for(
        lambda: sum(r.status == "consuming" for r in worker.engine.runners.values()) == 20,
        timeout=30,
        what="20 consumers consuming",
    )
    _publish_one_each(broker, queues)
    wait_for(lambda: set(endpoint.ids()) == set(queues), timeout=30, what="one delivery per consumer")

    pool = worker.engine.pool
    assert pool is not None
    # At least three: 20 consumers' channels over channel_max 8; the worker's own channels (the
    # failure router's, the control channel, and those opened later) may need one more.
    assert len(pool.links) >= 3, [link.channel_max for link in pool.links]
    assert all(link.channel_max == 8 for link in pool.links)
    connections = wait_for(
        # Listed with their figures (channels) once the broker's next statistics sample is in,
        # which a busy broker can take well over 15 s to produce.
        lambda: (
            len(c := _worker_connections(mgmt, worker.engine.worker_id)) == len(pool.links)
            and all("channels" in x for x in c)
            and c
        ),
        timeout=45,
        what="the worker's connections, with their figures, in the management API",
    )
    # None was closed by the broker and reopened: each connection made is one in use.
    assert pool.opened == len(pool.links)
    assert all(c["channel_max"] == 8 and c["channels"] <= 8 for c in connections), connections


def test_a_consumer_past_the_limit_says_why_and_the_others_run(
    make_settings, small_channel_max, start_engine, endpoint, make_consumer, client, admin, broker
):
    """One connection allowed, channel_max 8: six consumers fit (the failure router and the
    control channel take two), the others report no_capacity, and the six deliver."""
    settings = make_settings(rabbitmq_url=small_channel_max(8), worker_max_connections=1)
    worker = start_engine(settings)
    consumers = [make_consumer(endpoint.url)[0] for _ in range(8)]
    statuses = lambda: sorted(r.status for r in worker.engine.runners.values())  # noqa: E731
    wait_for(
        lambda: statuses() == ["consuming"] * 6 + ["no_capacity"] * 2,
        timeout=30,
        what="six consuming, two refused",
    )
    refused = [c for c in consumers if worker.engine.runners[c["id"]].status == "no_capacity"]
    running = [c for c in consumers if c not in refused]
    _publish_one_each(broker, [c["queue"] for c in running])
    wait_for(
        lambda: set(endpoint.ids()) == {c["queue"] for c in running},
        timeout=30,
        what="the six running consumers to deliver",
    )

    shown = wait_for(
        lambda: (
            (s := client.get(f"/api/v1/consumers/{refused[0]['id']}", headers=admin).json["stats"])["status"]
            == ["no_capacity"]
            and s
        ),
        timeout=15,
        what="the API to show why the consumer does not run",
    )
    assert "WORKER_MAX_CONNECTIONS" in shown["last_error"], shown
    assert worker.engine.connected.is_set()


@pytest.fixture
def ram_sqlite(tmp_path: Path) -> Iterator[str]:
    """A SQLite URL on a RAM-backed file system where there is one (``/dev/shm``): 2,100
    definitions written one transaction each then wait for no disk flush (a busy disk made
    that half a minute). Removed after the test."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield f"sqlite:///{tmp_path}/scale.sqlite3"
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="wrmq-scale-") as folder:
        yield f"sqlite:///{folder}/scale.sqlite3"


def _scale_count() -> int:
    return int(os.environ.get("WORKERRMQ_SCALE_CONSUMERS", "2100"))


@pytest.mark.timeout(1800)
def test_thousands_of_consumers_on_one_worker_all_deliver(
    many_queues, ram_sqlite, make_settings, start_engine, endpoint, broker, mgmt
):
    """More consumers than one connection's default channel_max (2,047), each delivering
    once. ``WORKERRMQ_SCALE_CONSUMERS=10000`` runs the 10,000-consumer measurement."""
    count = _scale_count()
    settings = make_settings(database_url=ram_sqlite)
    queues = many_queues(count)
    _define(settings, queues, endpoint.url)
    rss_before = _rss_mb()
    started = time.monotonic()
    worker = start_engine(settings, reconcile_interval=5.0, report_interval=5.0)
    wait_for(
        lambda: sum(r.status == "consuming" for r in worker.engine.runners.values()) == count,
        timeout=max(120, count / 20),
        interval=0.5,
        what=f"{count} consumers consuming",
    )
    running_after = time.monotonic() - started
    published = time.monotonic()
    _publish_one_each(broker, queues)
    wait_for(
        lambda: len(set(endpoint.ids())) == count,
        timeout=max(60, count / 50),
        interval=0.5,
        what=f"{count} deliveries",
    )
    consumed_after = time.monotonic() - published
    pool = worker.engine.pool
    assert pool is not None
    assert set(endpoint.ids()) == set(queues)
    # The first connection also carries the control channel; each has its failure router's.
    channel_max = pool.links[0].channel_max
    assert len(pool.links) == 1 + -(-max(0, count - (channel_max - 2)) // (channel_max - 1))
    print(
        f"\n{count} consumers: all consuming {running_after:.1f}s after start, one message each "
        f"delivered in {consumed_after:.1f}s; {len(pool.links)} connections "
        f"(channel_max {pool.links[0].channel_max}); test process RSS {rss_before:.0f} -> "
        f"{_rss_mb():.0f} MB (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- one consumer's change never waits on another ------------------------------------------------


class HoldingEndpoint(Endpoint):
    """An endpoint that holds each answer until the test sets :attr:`release`.

    The hold blocks the endpoint's own event loop, so it answers one request at a time: the
    tests give it one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.respond = self._held

    def _held(self, _received: Received) -> tuple[int, dict[str, str]]:
        self.release.wait(120)
        return 200, {}


@pytest.fixture
def slow_endpoint() -> Iterator[HoldingEndpoint]:
    with HoldingEndpoint() as ep:
        try:
            yield ep
        finally:
            ep.release.set()  # before the endpoint's loop is asked to stop


#: The hanging consumer's request timeout: longer than the test waits for the new consumer,
#: so that its delivery is still in flight whenever the new one arrives.
HANG_TIMEOUT = 120


@pytest.mark.parametrize("change", ["pause", "patch"])
def test_a_hanging_consumer_being_changed_does_not_hold_up_a_new_one(
    change, slow_endpoint, settings, start_engine, endpoint, make_consumer, client, admin, broker
):
    """The engine applies each change without waiting for another consumer's deliveries: a
    new consumer delivers while a changed consumer's request still hangs (held by the
    endpoint until the test lets it go; its timeout is far beyond the wait)."""
    worker = start_engine(settings, reconcile_interval=300)  # only control messages drive it
    slow, slow_queue = make_consumer(slow_endpoint.url, timeout=HANG_TIMEOUT)
    worker.runner(slow["id"])
    _publish_one_each(broker, [slow_queue])
    wait_for(lambda: slow_endpoint.count() == 1, what="the hanging delivery")
    try:
        if change == "pause":
            assert client.post(f"/api/v1/consumers/{slow['id']}/pause", headers=admin).status_code == 200
        else:
            answer = client.patch(
                f"/api/v1/consumers/{slow['id']}", json={"timeout": HANG_TIMEOUT - 1}, headers=admin
            )
            assert answer.status_code == 200
        _, fast_queue = make_consumer(endpoint.url)
        _publish_one_each(broker, [fast_queue])
        wait_for(
            lambda: endpoint.count() == 1,
            timeout=HANG_TIMEOUT / 2,
            interval=0.02,
            what="the new consumer's delivery while the changed consumer's request hangs",
        )
    finally:
        slow_endpoint.release.set()
    wait_for(lambda: slow_endpoint.received[0].status == 200, what="the released delivery's answer")
    assert slow_endpoint.count() == 1  # the hanging delivery is not repeated meanwhile


def test_an_empty_patch_restarts_nothing(settings, start_engine, endpoint, make_consumer, client, admin):
    worker = start_engine(settings, reconcile_interval=300)
    consumer, _ = make_consumer(endpoint.url)
    runner = worker.runner(consumer["id"])

    answer = client.patch(f"/api/v1/consumers/{consumer['id']}", json={}, headers=admin)
    assert answer.status_code == 200 and answer.json["version"] == consumer["version"]
    same = client.patch(
        f"/api/v1/consumers/{consumer['id']}", json={"timeout": consumer["timeout"]}, headers=admin
    )
    assert same.json["version"] == consumer["version"]
    # Another consumer created afterwards shows that the worker has reconciled since.
    other, _ = make_consumer(endpoint.url)
    worker.runner(other["id"])
    assert worker.engine.runners[consumer["id"]] is runner
    assert runner.status == "consuming" and runner.spec.version == consumer["version"]
