"""What every case uses: the plan, progress, child processes, the broker, the endpoint, the API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import aiohttp
import aiormq

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# -- the plan ------------------------------------------------------------------------------


#: The scale curve's points by default: the counts of the targets (1,000 and 10,000 consumers on
#: one worker process) and two beside them. Past about 2,000 the worker's channels take more than
#: one connection (RabbitMQ allows 2,047 channels on each by default).
SCALE_COUNTS = (100, 1000, 5000, 10000)

#: The worker's last work for a relay run may come a while after the endpoint got the last
#: message: its response read, the ack, and the attempt log's rows written (every second). Its
#: CPU meter's final sample is taken at the end of its last busy moment within this many seconds.
WORKER_TAIL = 1.2


@dataclasses.dataclass(frozen=True)
class Plan:
    """How big each case is. ``full()`` is the benchmark, ``quick()`` the smoke version."""

    quick: bool
    runs: int
    messages: int  # pre-filled per throughput run
    sizes: tuple[int, ...]
    prefetch: int  # the plain relay's prefetch and the WorkerRMQ consumer's concurrency
    drain_timeout: float  # a drain still running after this is stopped and counted as it stands
    seed_timeout: float  # the same for (c), the slowest by far: its rate is steady long before
    latency_rate: int  # messages/s
    latency_seconds: float
    latency_warmup: float  # seconds at the start that are not counted
    publish_seconds: float
    publish_clients: int
    batch_size: int
    batch_clients: int
    scale_counts: tuple[int, ...]  # consumers on one worker process, one point each
    scale_timeout: float  # per cold start, at the largest count
    idle_seconds: float  # idle CPU is measured over this once every consumer consumes

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            runs=3,
            messages=20_000,
            sizes=(200, 16 * 1024),
            prefetch=64,
            drain_timeout=240.0,
            seed_timeout=60.0,
            latency_rate=1000,
            latency_seconds=10.0,
            latency_warmup=1.0,
            publish_seconds=5.0,
            publish_clients=32,
            batch_size=500,
            batch_clients=4,
            scale_counts=SCALE_COUNTS,
            scale_timeout=300.0,  # well past the 30 s target: a slow start still gets its figure
            idle_seconds=20.0,
        )

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(
            quick=True,
            runs=1,
            messages=500,
            sizes=(200, 16 * 1024),
            prefetch=64,
            drain_timeout=30.0,
            seed_timeout=30.0,
            latency_rate=1000,
            latency_seconds=1.0,
            latency_warmup=0.2,
            publish_seconds=1.0,
            publish_clients=32,
            batch_size=100,
            batch_clients=4,
            scale_counts=(20,),
            scale_timeout=60.0,
            idle_seconds=1.0,
        )


# -- numbers ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (fraction 0.99 for p99)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def message_body(size: int, n: int = 0) -> bytes:
    """A JSON body of exactly *size* bytes."""
    head = b'{"n": %d, "pad": "' % n
    return (head + b"x" * size)[: size - 2] + b'"}'


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def free_port(count: int = 1) -> int:
    """A free loopback port, with the *count* - 1 ports after it free too (``workerrmq
    worker`` gives its Nth engine process ``WORKER_BIND``'s port + N)."""
    for _ in range(100):
        with contextlib.ExitStack() as held:
            first = held.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port + count - 1 > 65535:
                continue
            try:
                for nth in range(1, count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port + nth))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no {count} free consecutive ports on loopback")


def require_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK and not host.startswith("127."):
        raise SystemExit(f"bench: {what} must be on this machine (loopback), got host {host!r}")


# -- progress --------------------------------------------------------------------------------


class Progress:
    """One line per finished step, with the elapsed time; a live counter on a terminal."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.live = self.stream.isatty()
        self._dirty = False
        self._last_tick = 0.0

    def _stamp(self) -> str:
        elapsed = int(time.monotonic() - self.started)
        return f"[{elapsed // 60:02d}:{elapsed % 60:02d}]"

    def say(self, text: str) -> None:
        if self._dirty:
            self.stream.write("\r\033[K")
            self._dirty = False
        self.stream.write(f"{self._stamp()} {text}\n")
        self.stream.flush()

    def tick(self, text: str) -> None:
        if not self.live or time.monotonic() - self._last_tick < 0.2:
            return
        self._last_tick = time.monotonic()
        self.stream.write(f"\r\033[K{self._stamp()}   {text}")
        self.stream.flush()
        self._dirty = True


# -- who used the machine ----------------------------------------------------------------------


class CpuAccount:
    """CPU used during the benchmark: by it (this process and its children), by RabbitMQ, and by
    everything else on the machine, which only adds noise to the figures."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float]:
        import psutil

        total = psutil.cpu_times()
        busy = (
            total.user
            + total.nice
            + total.system
            + getattr(total, "irq", 0)
            + getattr(total, "softirq", 0)
            + getattr(total, "steal", 0)
        )
        own = os.times()
        mine = own.user + own.system + own.children_user + own.children_system
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                mine += times.user + times.system
        broker = 0.0
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] == "beam.smp":
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    broker += times.user + times.system
        return time.monotonic(), busy, mine, broker

    def finish(self) -> dict[str, float]:
        """Shares of the machine (100% = every core busy) since this was created."""
        end = self._sample()
        wall, busy, mine, broker = (b - a for a, b in zip(self._start, end, strict=True))
        capacity = max(wall * (os.cpu_count() or 1), 1e-9)
        return {
            "busy_percent": round(busy / capacity * 100, 1),
            "benchmark_percent": round(mine / capacity * 100, 1),
            "rabbitmq_percent": round(broker / capacity * 100, 1),
            "others_percent": round(max(0.0, busy - mine - broker) / capacity * 100, 1),
        }


# -- child processes -------------------------------------------------------------------------


class Proc:
    """A child in its own session (Ctrl-C reaches only bench.run, which stops it in order)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: Path,
        profiled: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        self.profiled = profiled  # argv runs the program under ``py-spy record``
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.time()
        self._rusage: Any = None  # resource usage, once it exited and was reaped
        self.popen = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The program's pid (under py-spy: its child's, once it started)."""
        if self.profiled:
            import psutil

            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.popen.pid).children()
                if children:
                    return int(children[0].pid)
        return self.popen.pid

    def alive(self) -> bool:
        return not self._reap(0)

    def _reap(self, timeout: float) -> bool:
        """True once the child exited; reaps it with wait4 to keep its CPU time."""
        deadline = time.monotonic() + timeout
        while self.popen.returncode is None:
            try:
                pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self.popen.poll()
                return True
            if pid:
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                self._rusage = usage
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the program and its child processes used so far, also
        after it exited (``workerrmq worker`` runs one engine process per core)."""
        if self._rusage is not None:
            return float(self._rusage.ru_utime + self._rusage.ru_stime)
        return tree_cpu_seconds(self.pid)

    def release(self) -> None:
        """Let a contender started through ``bench.gate`` go on (it waits for this signal)."""
        from bench.gate import GO

        os.kill(self.pid, GO)

    def rss_bytes(self) -> tuple[int, int]:
        """Resident memory of the program with its child processes: (sum, largest one)."""
        return tree_rss(self.pid)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after *timeout* s; returns the exit code."""
        if self.alive():
            # Under py-spy the program gets the signal; py-spy writes its profile when it exits.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if not self._reap(timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self._reap(5)
        self._log_file.close()
        return self.popen.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of *pid* and every descendant, the exited ones it reaped included."""
    import psutil

    procs = _tree(pid)
    if not procs:
        return None
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            own = process_cpu_seconds(proc.pid)
            total += (t.user + t.system if own is None else own) + t.children_user + t.children_system
    return total


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, every thread) of the running process *pid*, to the microsecond:
    the kernel's CPU-time clock of that process (Linux; what ``clock_getcpuclockid(3)`` gives).
    /proc's counters, which psutil reads, move in steps of 10 ms, too coarse for a run that costs
    a process a few tens of milliseconds. None where there is no such clock, or *pid* is gone."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # CPUCLOCK_SCHED of a whole process
    except OSError:
        return None


def tree_rss(pid: int) -> tuple[int, int]:
    import psutil

    sizes = []
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            sizes.append(proc.memory_info().rss)
    return sum(sizes), max(sizes, default=0)


class Cleanup:
    """Everything bench.run started or created, undone in reverse order whatever happens."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.procs: list[Proc] = []
        self.queues: set[str] = set()

    def track(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 20.0) -> int | None:
        code = proc.stop(timeout)
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        return code

    def close(self) -> None:
        """Stop every child still running, then delete every queue still listed (over AMQP)."""
        for proc in reversed(list(self.procs)):
            self.stop(proc, timeout=10.0)
        if not self.queues:
            return
        import pika  # the seed contender's client; synchronous, so usable after the loop is gone

        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        except Exception as exc:  # noqa: BLE001 - report and leave the names
            print(f"bench: could not delete {len(self.queues)} queues: {exc}", file=sys.stderr)
            return
        try:
            for name in sorted(self.queues):
                channel = connection.channel()
                try:
                    channel.queue_delete(name)
                    self.queues.discard(name)
                except pika.exceptions.ChannelClosedByBroker:
                    self.queues.discard(name)  # already gone
                finally:
                    if channel.is_open:
                        channel.close()
        finally:
            connection.close()


# -- the broker ------------------------------------------------------------------------------


class Broker:
    """bench.run's own AMQP connection: declare, pre-fill, look at and delete queues."""

    def __init__(self, url: str, cleanup: Cleanup, prefix: str) -> None:
        self.url = url
        self.cleanup = cleanup
        self.prefix = prefix
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._confirming: aio_pika.abc.AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._pool: list[aiormq.abc.AbstractChannel] = []  # for consumers_of

    async def open(self) -> None:
        self._connection = await aio_pika.connect(
            self.url, client_properties={"connection_name": f"bench {self.prefix}"}
        )
        self._channel = await self._connection.channel(publisher_confirms=False)
        self._confirming = await self._connection.channel(publisher_confirms=True)
        self._raw = await self._channel.get_underlay_channel()

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), 5)

    def name(self, kind: str) -> str:
        return f"{self.prefix}-{kind}-{uuid.uuid4().hex[:6]}"

    async def declare(self, name: str) -> str:
        assert self._channel is not None
        self.cleanup.queues.add(name)
        self.cleanup.queues.add(f"{name}.dlq")  # WorkerRMQ consumers declare it
        await self._channel.declare_queue(name, durable=True)
        return name

    async def delete(self, *names: str) -> None:
        assert self._raw is not None
        for name in names:
            for queue in (name, f"{name}.dlq"):
                await self._raw.queue_delete(queue)
                self.cleanup.queues.discard(queue)

    async def purge(self, name: str) -> None:
        assert self._raw is not None
        await self._raw.queue_purge(name)

    async def counts(self, name: str) -> tuple[int, int]:
        """(ready messages, consumers) of an existing queue, as the broker sees them now."""
        assert self._raw is not None
        ok = await self._raw.queue_declare(name, passive=True)
        return ok.message_count or 0, ok.consumer_count or 0

    async def prefill(
        self,
        name: str,
        count: int,
        size: int,
        tick: Callable[[str], None] | None = None,
        *,
        reply_to: str | None = None,
    ) -> float:
        """Publish *count* persistent messages of *size* bytes with confirms (each asking for
        an answer at *reply_to* when given); returns msg/s."""
        assert self._confirming is not None
        exchange = self._confirming.default_exchange
        started = time.perf_counter()
        window = 500
        for start in range(0, count, window):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            message_body(size, n),
                            content_type="application/json",
                            message_id=uuid.uuid4().hex,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            reply_to=reply_to,
                            correlation_id=str(n) if reply_to else None,
                        ),
                        name,
                    )
                    for n in range(start, min(count, start + window))
                )
            )
            if tick is not None:
                tick(f"pre-filling {name}: {min(count, start + window):,}/{count:,}")
        return count / (time.perf_counter() - started)

    async def publish_now(self, name: str, body: bytes) -> None:
        """One persistent message, no confirm awaited (the latency case paces these)."""
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                message_id=uuid.uuid4().hex,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            name,
        )

    async def consumers_of(self, names: Sequence[str], channels: int = 8) -> dict[str, int]:
        """The broker's live consumer count of each queue in *names* (passive declares,
        spread over *channels* channels of their own so many queues are read in parallel)."""
        counts: dict[str, int] = {}

        async def read(raw: aiormq.abc.AbstractChannel, shard: Sequence[str]) -> None:
            for name in shard:
                ok = await raw.queue_declare(name, passive=True)
                counts[name] = ok.consumer_count or 0

        pool = await self._channels(channels)
        await asyncio.gather(*(read(raw, names[i::channels]) for i, raw in enumerate(pool)))
        return counts

    async def declare_many(
        self, names: Sequence[str], tick: Callable[[str], None] | None = None, channels: int = 8
    ) -> None:
        """``declare`` each queue of *names*, on *channels* channels at once."""
        for name in names:
            self.cleanup.queues.update((name, f"{name}.dlq"))
        done = 0

        async def declare(raw: aiormq.abc.AbstractChannel, shard: Sequence[str]) -> None:
            nonlocal done
            for name in shard:
                await raw.queue_declare(name, durable=True)
                done += 1
                if tick is not None:
                    tick(f"declaring queues {done:,}/{len(names):,}")

        pool = await self._channels(channels)
        await asyncio.gather(*(declare(raw, names[i::channels]) for i, raw in enumerate(pool)))

    async def delete_many(
        self, names: Sequence[str], tick: Callable[[str], None] | None = None, channels: int = 8
    ) -> None:
        """``delete`` each queue of *names* with its dead-letter queue, on *channels* channels at
        once. What cannot be deleted stays in ``cleanup.queues``: ``Cleanup.close`` tries again."""
        done = 0

        async def delete(raw: aiormq.abc.AbstractChannel, shard: Sequence[str]) -> None:
            nonlocal done
            for name in shard:
                for queue in (name, f"{name}.dlq"):
                    await raw.queue_delete(queue)
                    self.cleanup.queues.discard(queue)
                done += 1
                if tick is not None:
                    tick(f"deleting queues {done:,}/{len(names):,}")

        pool = await self._channels(channels)
        outcomes = await asyncio.gather(
            *(delete(raw, names[i::channels]) for i, raw in enumerate(pool)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                left = sum(1 for name in names if name in self.cleanup.queues)
                print(f"bench: {left} queues not deleted yet: {outcome!r}", file=sys.stderr)
                break

    async def _channels(self, count: int) -> list[aiormq.abc.AbstractChannel]:
        """*count* channels of bench.run's connection for work spread over them (a channel
        the broker closed after an error is replaced)."""
        assert self._connection is not None
        self._pool = [raw for raw in self._pool if not raw.is_closed]
        while len(self._pool) < count:
            channel = await self._connection.channel(publisher_confirms=False)
            self._pool.append(await channel.get_underlay_channel())
        return self._pool[:count]

    async def wait_consumers(self, names: Sequence[str], want: int, timeout: float) -> bool:
        """True once every queue in *names* has *want* consumers (0: none), within *timeout*."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            still = []
            for name in pending:
                _, consumers = await self.counts(name)
                if (consumers >= want) if want else (consumers == 0):
                    continue
                still.append(name)
            pending = still
            if pending:
                await asyncio.sleep(0.02)
        return not pending


# -- the endpoint ----------------------------------------------------------------------------


@dataclasses.dataclass
class BucketStats:
    count: int
    first: float
    last: float
    latencies: list[float] = dataclasses.field(default_factory=list)
    published: list[float] = dataclasses.field(default_factory=list)
    tokens: int = 0  # OAuth2 tokens the endpoint issued for the bucket
    first_count: int = 1  # messages of the first request: 1, or a batch's items

    def rate(self) -> float | None:
        """Messages per second between the first and the last arrival (those of the first
        request arrived at its start, so they are not counted)."""
        if self.count <= self.first_count or self.last <= self.first:
            return None
        return (self.count - self.first_count) / (self.last - self.first)


class EndpointClient:
    def __init__(self, port: int, http: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = http

    def url(self, kind: str, bucket: str) -> str:
        return f"{self.base}/{kind}/{bucket}"

    async def ping(self) -> bool:
        try:
            async with self.http.get(f"{self.base}/_ping") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def stats(self, bucket: str, *, latencies: bool = False) -> BucketStats:
        query = "?lat=1" if latencies else ""
        async with self.http.get(f"{self.base}/_stats/{bucket}{query}") as response:
            data = await response.json()
        return BucketStats(**data)


# -- WorkerRMQ's API ---------------------------------------------------------------------------


class ApiError(RuntimeError):
    pass


class ApiClient:
    def __init__(self, base: str, key: str, http: aiohttp.ClientSession) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {key}"}
        self.http = http

    async def ready(self) -> bool:
        try:
            async with self.http.get(f"{self.base}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def call(self, method: str, path: str, body: Any = None, expect: Sequence[int] = (200,)) -> Any:
        async with self.http.request(
            method, f"{self.base}{path}", json=body, headers=self.headers
        ) as response:
            text = await response.text()
            if response.status not in expect:
                raise ApiError(f"{method} {path}: {response.status} {text[:300]}")
            return json.loads(text) if text else None

    async def create_consumer(self, **fields: Any) -> str:
        consumer = await self.call("POST", "/api/v1/consumers", fields, expect=(201,))
        return str(consumer["id"])

    async def delete_consumer(self, ref: str) -> None:
        await self.call("DELETE", f"/api/v1/consumers/{quote(ref, safe='')}", expect=(204, 404))


async def wait_until(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Await *condition* (a coroutine function) until truthy; RuntimeError after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
