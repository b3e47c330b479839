"""The cases: relay throughput, latency, publish API, isolation, scale curves.

Each case returns plain data (lists of per-run figures); bench.report turns it
into medians, ratios and the verdict against the targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import orjson

from bench.common import (
    WORKER_TAIL,
    ApiClient,
    Broker,
    Cleanup,
    EndpointClient,
    Plan,
    Proc,
    Progress,
    basic_auth,
    free_port,
    median,
    message_body,
    percentile,
)
from bench.endpoint import CLIENT_ID, CLIENT_SECRET
from bench.gate import DONE, READY

#: A Standard Webhooks secret: signing is on for every WorkerRMQ consumer of the benchmark.
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: (a) as tuned for the benchmark (concurrency = the plain relay's prefetch), (a1) the same with
#: one engine process (``--processes 1``), (a0) a consumer made by the seed's ``/createConsumer``
#: with no options, (a) with ``batch`` (100 messages a request), with ``reply`` (each answer
#: published to a queue), with a ``filter`` (a CEL expression over the JSON body and the routing
#: key, true for every message), as CloudEvents (structured mode: each body wrapped in a JSON
#: envelope), with endpoint ``auth`` (OAuth2 client credentials against the endpoint's token
#: route: one token fetched, then the cached one on every request) and on a worker started with
#: ``ATTEMPT_LOG=false`` (what the attempt log costs is (a) against it) and on a worker started with
#: ``HTTP_CLIENT=reqwest`` (deliveries through pyreqwest instead of aiohttp), then the plain relay,
#: the seed's design and the two halves of the floor.
#: The order is the run's (rotated each run): the contenders that need the worker restarted
#: (another environment, one engine process) come together, so a size costs four restarts.
RELAY_CONTENDERS = (
    "workerrmq",
    "workerrmq_defaults",
    "batch",
    "reply",
    "filter",
    "cloudevents",
    "auth",
    "no_attempt_log",
    "reqwest",
    "workerrmq_1p",
    "plain",
    "seed",
    "broker_only",
    "http_only",
)
#: The contenders that are a WorkerRMQ worker, with the ``--processes`` each runs (None: the
#: run's choice).
WORKER_CONTENDERS: dict[str, int | None] = {
    "workerrmq": None,
    "workerrmq_1p": 1,
    "workerrmq_defaults": None,
    "batch": None,
    "reply": None,
    "filter": None,
    "cloudevents": None,
    "auth": None,
    "no_attempt_log": None,
    "reqwest": None,
}
#: What a worker contender's ``workerrmq worker`` gets in its environment beyond the run's.
WORKER_ENV: dict[str, dict[str, str]] = {
    "no_attempt_log": {"ATTEMPT_LOG": "false"},
    "reqwest": {"HTTP_CLIENT": "reqwest"},
}
#: The (a) consumer with a feature on: the (a) consumer's extra fields (see ``feature_fields``)
#: and the endpoint's route of the same name (``bench/endpoint.py``).
FEATURES = ("batch", "reply", "filter", "cloudevents", "auth")
#: The (a) consumer's fields for the contenders that are (a) with a feature on.
FEATURE_FIELDS: dict[str, dict[str, Any]] = {
    "batch": {"batch": {"max_messages": 100, "max_wait_ms": 50}},
    "reply": {"reply": True},
    # True for every message, so that all are delivered: what it costs is the evaluation.
    "filter": {"filter": 'body.n >= 0 && routing_key != ""'},
    "cloudevents": {"format": "cloudevents-structured"},
}


def feature_fields(ctx: Context, contender: str, bucket: str) -> dict[str, Any]:
    """The fields the (a) consumer gets for *contender* (none for (a) itself)."""
    if contender == "auth":
        return {
            "auth": {
                "type": "oauth2",
                "token_url": ctx.endpoint.url("token", bucket),
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            }
        }
    return dict(FEATURE_FIELDS.get(contender, {}))


LATENCY_CONTENDERS = ("workerrmq", "plain")


class Context:
    """What the cases share: the plan, the processes, the clients."""

    def __init__(
        self,
        *,
        plan: Plan,
        progress: Progress,
        cleanup: Cleanup,
        broker: Broker,
        endpoint: EndpointClient,
        api: ApiClient,
        http: aiohttp.ClientSession,
        tmp: Path,
        amqp_url: str,
        management_url: str,
        api_key: str,
        api_base: str,
        workerrmq_argv: Callable[..., list[str]],
        workerrmq_env: dict[str, str],
    ) -> None:
        self.plan = plan
        self.progress = progress
        self.cleanup = cleanup
        self.broker = broker
        self.endpoint = endpoint
        self.api = api
        self.http = http
        self.tmp = tmp
        self.amqp_url = amqp_url
        self.management_url = management_url
        self.api_key = api_key
        self.api_base = api_base
        self.workerrmq_argv = workerrmq_argv
        self.workerrmq_env = workerrmq_env
        self.worker: Proc | None = None
        self._worker_processes: int | None = None  # what ``ensure_worker`` started it with
        self._worker_extra_env: dict[str, str] = {}  # and with which variables beyond the run's
        self.scale_counts: tuple[int, ...] = plan.scale_counts
        self.label = ""  # which side of a --compare run this is ("" otherwise)
        self.source: Path | None = None  # the checkout its WorkerRMQ runs from (None: installed)
        self.contenders: tuple[str, ...] = RELAY_CONTENDERS
        self.profile_dir: Path | None = None  # run WorkerRMQ's processes under py-spy into it
        self._spawned = 0

    # -- processes ---------------------------------------------------------------------------

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        profile: bool = False,
    ) -> Proc:
        self._spawned += 1
        log = self.tmp / "logs" / f"{self._spawned:03d}-{name}.log"
        log.parent.mkdir(exist_ok=True)
        profiled = profile and self.profile_dir is not None
        if profiled:
            assert self.profile_dir is not None
            out = self.profile_dir / f"{self._spawned:03d}-{name}.txt"
            argv = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--format",
                "raw",
                "--subprocesses",
                "--rate",
                "250",
                "--output",
                str(out),
                "--",
                *argv,
            ]
        return self.cleanup.track(Proc(name, argv, env=env, cwd=cwd, log=log, profiled=profiled))

    async def contender(self, module: str, *args: object) -> tuple[Proc, CpuMeter]:
        """Start ``bench.contenders.<module>`` with *args* through ``bench.gate``: once it has
        loaded its libraries, its CPU meter takes the baseline sample, then it is let go."""
        argv = [sys.executable, "-m", "bench.gate", f"bench.contenders.{module}", *map(str, args)]
        # Under --profile the baseline relay is profiled too, to compare like with like.
        proc = self.spawn(
            module, argv, cwd=Path(__file__).resolve().parent.parent, profile=module == "plain_relay"
        )
        try:
            if not await _gate_line(proc, READY, 60):
                raise RuntimeError(f"the contender {module} was not ready (exited, or 60 s):\n{proc.tail()}")
            meter = CpuMeter(proc, gated=True)
            proc.release()
        except BaseException:
            self.cleanup.stop(proc)
            raise
        return proc, meter

    async def start_worker(
        self, name: str = "worker", processes: int | None = None, env: dict[str, str] | None = None
    ) -> Proc:
        """``workerrmq worker`` as users run it (``--processes`` if given; else the run's
        choice; *env* added to the run's environment); returns once it says it is connected."""
        argv = (
            self.workerrmq_argv("worker", worker_processes=processes)
            if processes
            else self.workerrmq_argv("worker")
        )
        engines = int(argv[argv.index("--processes") + 1]) if "--processes" in argv else os.cpu_count() or 1
        proc = self.spawn(
            name, argv, env={**self.worker_env(engines), **(env or {})}, cwd=self.tmp, profile=True
        )
        # Every engine process, not only the first: one still starting while the first
        # delivers would put its start-up into the CPU per message of the run.
        deadline = time.monotonic() + 60
        try:
            while sum(line.endswith(" connected") for line in proc.tail(500).splitlines()) < engines:
                if not proc.alive():
                    raise RuntimeError(f"the worker exited: {proc.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the worker's {engines} engine process(es) did not all connect within 60s:\n"
                        + proc.tail()
                    )
                await asyncio.sleep(0.05)
        except BaseException:
            # Left running, it would take the next contenders' consumers beside their worker.
            self.cleanup.stop(proc)
            raise
        return proc

    def worker_env(self, engines: int = 1) -> dict[str, str]:
        """The workers' environment: each of its *engines* engine processes serves its /metrics
        (and health) on a port of its own, ``WORKER_BIND``'s port + its index."""
        return {**self.workerrmq_env, "WORKER_BIND": f"127.0.0.1:{free_port(engines)}"}

    async def ensure_worker(self, processes: int | None = None, env: dict[str, str] | None = None) -> Proc:
        """The running worker, (re)started when it is gone, or runs another number of engine
        processes than *processes* (None: the run's choice), or was started with other
        variables than *env* (added to the run's environment; None: none)."""
        env = env or {}
        if self.worker is not None and (self._worker_processes != processes or self._worker_extra_env != env):
            self.stop_worker()
        if self.worker is None or not self.worker.alive():
            self.worker = await self.start_worker(processes=processes, env=env)
            self._worker_processes = processes
            self._worker_extra_env = env
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.cleanup.stop(self.worker, timeout=30)
            self.worker = None

    # -- WorkerRMQ consumers -------------------------------------------------------------------

    async def consumer(self, queue: str, target: str, **fields: Any) -> str:
        fields.setdefault("concurrency", self.plan.prefetch)
        return await self.api.create_consumer(
            name=queue, queue=queue, target_url=target, signing_secret=SIGNING_SECRET, **fields
        )

    async def drop_consumer(self, consumer_id: str, queue: str) -> None:
        await self.api.delete_consumer(consumer_id)
        await self.broker.wait_consumers([queue], 0, timeout=15)

    # -- measuring -----------------------------------------------------------------------------

    async def watch(
        self,
        bucket: str,
        count: int,
        label: str,
        *,
        proc: Proc | None = None,
        meter: CpuMeter | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait until the endpoint has *count* requests in *bucket* (or time is up); *proc* is
        the process delivering them, *meter* its CPU meter, which takes its final sample here."""
        deadline = time.monotonic() + (timeout or self.plan.drain_timeout)
        timed_out = False
        while True:
            stats = await self.endpoint.stats(bucket)
            if stats.count >= count:
                break
            if proc is not None and not proc.alive():
                stats = await self.endpoint.stats(bucket)  # it may have finished just now
                if stats.count >= count:
                    break
                raise RuntimeError(f"{label}: the contender exited early:\n{proc.tail()}")
            if time.monotonic() > deadline:
                timed_out = True
                break
            self.progress.tick(f"{label}: {stats.count:,}/{count:,}")
            await asyncio.sleep(0.05)
        if meter is not None:
            await meter.finish(stats.count, done=not timed_out)
        return {
            "rate": stats.rate(),
            "count": stats.count,
            "timed_out": timed_out,
            "seconds": stats.last - stats.first,
            "_meter": meter,
        }


#: The worker's CPU meter samples it this often ...
_TICK = 0.05
#: ... and counts it busy while it uses more than this share of a core.
_BUSY = 0.05
#: Before its baseline sample, the worker's meter waits for this many ticks in a row in which
#: it was not busy (an idle worker has a burst now and then), at most ``_QUIET_WAIT`` s.
_QUIET_TICKS = 4
_QUIET_WAIT = 5.0
#: How long a contender's meter waits for it to finish after its last message, and to exit.
_EXIT_WAIT = 15.0


class CpuMeter:
    """CPU time a process spends per message: a sample before its first message, another after
    its last, and the count of messages in between.

    CPU time, unlike wall time, hardly depends on what else the machine runs, so it shows how
    much work a contender does per message even on a busy machine. The samples bracket the
    whole run, so a run of a few hundred messages, drained between two polls of the endpoint,
    gets a figure too. What a run costs once (a contender's connection, a consumer's start) is
    in it; over the benchmark's 20,000 messages that is little.
    """

    def __init__(self, proc: Proc, *, gated: bool = False, tail: float = 0.0) -> None:
        self.proc = proc
        self.gated = gated  # a contender run by bench.gate: the end is when its main() returned
        self.tail = tail  # it keeps running: the end is its last busy tick within *tail* s
        self.start = proc.cpu_seconds()
        self.end: float | None = None
        self.handled = 0

    @classmethod
    async def of_worker(cls, worker: Proc) -> CpuMeter:
        """The meter of a run on the running *worker*: its baseline once the worker is quiet
        (what it still does for its start or an earlier run is not this run's)."""
        await _until_quiet(worker, _QUIET_WAIT)
        return cls(worker, tail=WORKER_TAIL)

    async def finish(self, handled: int, *, done: bool) -> None:
        """The final sample, after the last of *handled* messages arrived (*done*: every
        message of the run did; else the run was cut at its time limit)."""
        self.handled = handled
        if self.gated:
            finished = done and await _gate_line(self.proc, DONE, _EXIT_WAIT)
            self.end = self.proc.cpu_seconds()
            if finished:  # let it exit, and wait for that: stopped meanwhile, it would fail
                self.proc.release()
                deadline = time.monotonic() + _EXIT_WAIT
                while self.proc.alive() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
        elif done and self.tail and self.proc.alive():
            self.end = await _end_of_work(self.proc, self.tail)
        else:
            self.end = self.proc.cpu_seconds()

    def per_message_us(self) -> float | None:
        if self.start is None or self.end is None or self.handled < 1:
            return None
        return (self.end - self.start) / self.handled * 1e6


async def _cpu_ticks(proc: Proc, seconds: float) -> AsyncIterator[tuple[float, bool]]:
    """For *seconds*, every ``_TICK``: *proc*'s CPU time and whether it was busy since the last."""
    last, at = proc.cpu_seconds(), time.monotonic()
    deadline = at + seconds
    while last is not None and time.monotonic() < deadline:
        await asyncio.sleep(_TICK)
        now, now_at = proc.cpu_seconds(), time.monotonic()
        if now is None:
            return
        yield now, (now - last) > _BUSY * (now_at - at)
        last, at = now, now_at


async def _gate_line(proc: Proc, line: str, timeout: float) -> bool:
    """True once *proc* printed *line* (one of ``bench.gate``'s); False if it exited first or
    *timeout* s passed."""
    deadline = time.monotonic() + timeout
    while line not in proc.tail(3):
        if not proc.alive() or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _until_quiet(proc: Proc, timeout: float) -> None:
    """Return after ``_QUIET_TICKS`` ticks in a row in which *proc* was not busy, or after
    *timeout* s."""
    quiet = 0
    async for _, busy in _cpu_ticks(proc, timeout):
        quiet = 0 if busy else quiet + 1
        if quiet >= _QUIET_TICKS:
            return


async def _end_of_work(proc: Proc, seconds: float) -> float | None:
    """*proc*'s CPU time at the end of its last busy tick within the next *seconds*."""
    end = proc.cpu_seconds()
    async for now, busy in _cpu_ticks(proc, seconds):
        if busy:
            end = now
    return end


def _fmt_rate(result: dict[str, Any] | None) -> str:
    if not result or result.get("rate") is None:
        return "no figure"
    text = f"{result['rate']:,.0f} msg/s"
    if result.get("cpu_us_per_msg") is not None:
        text += f", {result['cpu_us_per_msg']:,.0f} µs CPU per message"
    if result.get("timed_out"):
        text += f" (stopped after {result['count']:,} at the time limit)"
    return text


async def guarded(ctx: Context, label: str, step: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run one measurement; a failure is recorded and reported, and the benchmark goes on."""
    try:
        result = await step()
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        message = f"{type(exc).__name__}: {exc}"
        ctx.progress.say(f"{label}: FAILED {message[:500]}")
        return {"error": message[:2000]}
    meter = result.pop("_meter", None)
    if meter is not None:
        result["cpu_us_per_msg"] = meter.per_message_us()
    ctx.progress.say(f"{label}: {result.pop('_summary', None) or _fmt_rate(result)}")
    return result


# -- case 2: relay throughput ----------------------------------------------------------------


async def relay_once(ctx: Context, contender: str, size: int, label: str) -> dict[str, Any]:
    plan, broker = ctx.plan, ctx.broker
    n = plan.messages
    bucket = broker.name(f"relay-{contender}")
    target = ctx.endpoint.url(contender if contender in FEATURES else "ok", bucket)
    if contender == "http_only":
        proc, meter = await ctx.contender(
            "http_only", "--target", target, "--count", n, "--size", size, "--concurrency", plan.prefetch
        )
        try:
            return await ctx.watch(bucket, n, label, proc=proc, meter=meter)
        finally:
            ctx.cleanup.stop(proc)
    queue = await broker.declare(broker.name(f"relay-{contender}"))
    replies = await broker.declare(broker.name("replies")) if contender == "reply" else None
    try:
        await broker.prefill(queue, n, size, tick=ctx.progress.tick, reply_to=replies)
        if contender in WORKER_CONTENDERS:
            return await _worker_relay(ctx, contender, queue, target, bucket, n, label)
        if contender == "broker_only":
            return await _broker_only(ctx, queue, n, label)
        module = {"plain": "plain_relay", "seed": "seed_relay"}[contender]
        extra = ("--prefetch", plan.prefetch) if contender == "plain" else ()
        proc, meter = await ctx.contender(
            module, "--amqp-url", ctx.amqp_url, "--queue", queue, "--target", target, "--count", n, *extra
        )
        timeout = plan.seed_timeout if contender == "seed" else None
        try:
            return await ctx.watch(bucket, n, label, proc=proc, meter=meter, timeout=timeout)
        finally:
            ctx.cleanup.stop(proc)
    finally:
        await broker.delete(queue)
        if replies is not None:
            await broker.delete(replies)


async def _worker_relay(
    ctx: Context, contender: str, queue: str, target: str, bucket: str, n: int, label: str
) -> dict[str, Any]:
    """Drain *queue* through a WorkerRMQ worker; the consumer is dropped afterwards. The
    worker's CPU meter starts before the consumer is made."""
    worker = await ctx.ensure_worker(processes=WORKER_CONTENDERS[contender], env=WORKER_ENV.get(contender))
    meter = await CpuMeter.of_worker(worker)
    if contender == "workerrmq_defaults":
        # The seed's route with nothing but the queue (and where to send, which the seed
        # takes from DEFAULT_TARGET_URL): every other field at its default.
        await ctx.api.call("POST", "/createConsumer", {"queueName": queue, "target_url": target})
        try:
            return await ctx.watch(bucket, n, label, proc=worker, meter=meter)
        finally:
            await ctx.api.call("POST", "/deleteConsumer", {"queueName": queue})
            await ctx.broker.wait_consumers([queue], 0, timeout=15)
    consumer_id = await ctx.consumer(queue, target, **feature_fields(ctx, contender, bucket))
    try:
        result = await ctx.watch(bucket, n, label, proc=worker, meter=meter)
        if contender == "no_attempt_log":
            # Measuring a worker that still logs would show no cost at all: make sure it is off.
            logged = await ctx.api.call("GET", f"/api/v1/consumers/{consumer_id}/attempts")
            if logged["total"]:
                raise RuntimeError(f"{label}: {logged['total']} attempts logged with ATTEMPT_LOG=false")
        if contender == "reqwest" and not _pyreqwest_running(worker.pid):
            # A worker that ignored HTTP_CLIENT (an older one) would measure aiohttp again.
            raise RuntimeError(f"{label}: no engine process delivered through pyreqwest")
    finally:
        await ctx.drop_consumer(consumer_id, queue)
    if contender == "auth":
        # One per engine process (each has its own cache) when every later request went out
        # with the cached token.
        result["token_fetches"] = (await ctx.endpoint.stats(bucket)).tokens
    return result


def _pyreqwest_running(pid: int) -> bool:
    """True if *pid* or a descendant runs pyreqwest's thread, which starts with the first
    pyreqwest client: an engine on ``HTTP_CLIENT=aiohttp`` makes none."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in procs:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    if (task / "comm").read_text().strip() == "pyreqwest":
                        return True
    return False


async def _broker_only(ctx: Context, queue: str, n: int, label: str) -> dict[str, Any]:
    proc, meter = await ctx.contender(
        "broker_only", "--amqp-url", ctx.amqp_url, "--queue", queue, "--count", n
    )
    deadline = time.monotonic() + ctx.plan.drain_timeout
    try:
        while proc.alive() and DONE not in proc.tail(3) and time.monotonic() < deadline:
            ready, _ = await ctx.broker.counts(queue)
            ctx.progress.tick(f"{label}: {n - ready:,}/{n:,}")
            await asyncio.sleep(0.05)
        lines = [line for line in proc.tail(5).splitlines() if line.startswith("{")]
        if lines:
            stats = orjson.loads(lines[-1])
            await meter.finish(stats["count"], done=True)
    finally:
        code = ctx.cleanup.stop(proc)
    if code != 0 or not lines:
        raise RuntimeError(f"{label}: the broker-only consumer failed (exit {code}):\n{proc.tail()}")
    seconds = stats["last"] - stats["first"]
    rate = (stats["count"] - 1) / seconds if seconds > 0 else None
    return {"rate": rate, "count": stats["count"], "timed_out": False, "seconds": seconds, "_meter": meter}


async def relay_case(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    contenders = ctx.contenders
    results: dict[str, Any] = {str(size): {c: [] for c in contenders} for size in plan.sizes}
    for size in plan.sizes:
        for run in range(plan.runs):
            # Rotate the order each run, so no contender always goes first (or after the slowest).
            order = contenders[run % len(contenders) :] + contenders[: run % len(contenders)]
            for contender in order:
                label = f"relay {_size(size)} · {contender} · run {run + 1}/{plan.runs}"
                results[str(size)][contender].append(
                    await guarded(ctx, label, lambda c=contender, s=size, lb=label: relay_once(ctx, c, s, lb))
                )
    return results


def _size(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 else f"{size} B"


# -- case 3: latency -------------------------------------------------------------------------


async def latency_once(ctx: Context, contender: str, label: str) -> dict[str, Any]:
    plan, broker = ctx.plan, ctx.broker
    total = int(plan.latency_rate * plan.latency_seconds)
    bucket = broker.name(f"lat-{contender}")
    target = ctx.endpoint.url("lat", bucket)
    queue = await broker.declare(broker.name(f"lat-{contender}"))
    consumer_id: str | None = None
    proc: Proc | None = None
    try:
        if contender == "workerrmq":
            await ctx.ensure_worker()
            consumer_id = await ctx.consumer(queue, target)
        else:
            proc, _ = await ctx.contender(
                "plain_relay",
                "--amqp-url",
                ctx.amqp_url,
                "--queue",
                queue,
                "--target",
                target,
                "--count",
                total,
                "--prefetch",
                plan.prefetch,
            )
        if not await broker.wait_consumers([queue], 1, timeout=30):
            raise RuntimeError(f"{label}: nothing consumes {queue}")
        pad = b"x" * 200
        interval = 1 / plan.latency_rate
        started_wall = time.time()
        started = time.perf_counter()
        for i in range(total):
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await broker.publish_now(queue, (b"%.6f " % time.time() + pad)[:200])
            if i % 500 == 0:
                ctx.progress.tick(f"{label}: published {i:,}/{total:,}")
        published_rate = total / (time.perf_counter() - started)
        await ctx.watch(bucket, total, label, proc=proc or ctx.worker, timeout=30)
        stats = await ctx.endpoint.stats(bucket, latencies=True)
    finally:
        if consumer_id is not None:
            await ctx.drop_consumer(consumer_id, queue)
        if proc is not None:
            ctx.cleanup.stop(proc)
        await broker.delete(queue)
    counted = [
        lat
        for pub, lat in zip(stats.published, stats.latencies, strict=True)
        if pub >= started_wall + plan.latency_warmup
    ]
    if not counted:
        raise RuntimeError(f"{label}: no message arrived after the warm-up")
    result = {
        "p50_ms": percentile(counted, 0.50) * 1000,
        "p99_ms": percentile(counted, 0.99) * 1000,
        "max_ms": max(counted) * 1000,
        "count": len(counted),
        "received": stats.count,
        "sent": total,
        "published_rate": published_rate,
    }
    result["_summary"] = (
        f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
        f"max {result['max_ms']:.1f} ms at {published_rate:,.0f} msg/s"
    )
    return result


async def latency_case(ctx: Context) -> dict[str, Any]:
    results: dict[str, Any] = {c: [] for c in LATENCY_CONTENDERS}
    for run in range(ctx.plan.runs):
        for contender in LATENCY_CONTENDERS if run % 2 == 0 else LATENCY_CONTENDERS[::-1]:
            label = f"latency · {contender} · run {run + 1}/{ctx.plan.runs}"
            results[contender].append(
                await guarded(ctx, label, lambda c=contender, lb=label: latency_once(ctx, c, lb))
            )
    return results


# -- case 4: publish API ---------------------------------------------------------------------


async def hammer(
    request: Callable[[aiohttp.ClientSession], Awaitable[int]],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    label: str,
    progress: Progress,
) -> dict[str, Any]:
    """*clients* loops send *request* for *warmup* + *seconds*; messages of the timed part count.

    *request* returns how many messages one call published (0 for a failure).
    """
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    counted = {"messages": 0, "requests": 0, "failures": 0}
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        begin = time.perf_counter()
        counting_from = begin + warmup
        until = counting_from + seconds

        async def client() -> None:
            while (now := time.perf_counter()) < until:
                try:
                    published = await request(http)
                except aiohttp.ClientError:
                    published = 0
                done = time.perf_counter()
                if now >= counting_from:
                    counted["requests"] += 1
                    counted["messages"] += published
                    counted["failures"] += published == 0
                    latencies.append(done - now)
                progress.tick(f"{label}: {counted['messages']:,} messages")

        await asyncio.gather(*(client() for _ in range(clients)))
        # Requests still in flight at `until` finished after it: count the real window.
        window = max(time.perf_counter() - counting_from, 1e-9)
    if counted["requests"] and counted["failures"] == counted["requests"]:
        raise RuntimeError(f"{label}: every request failed")
    return {
        "rate": counted["messages"] / window,
        "requests_per_s": counted["requests"] / window,
        "messages": counted["messages"],
        "failures": counted["failures"],
        "p50_ms": (percentile(latencies, 0.5) or 0) * 1000,
        "p99_ms": (percentile(latencies, 0.99) or 0) * 1000,
    }


class Publishers:
    """The four ways of publishing the publish case compares, as ``hammer`` requests.

    ``api_single`` and ``api_batch`` go through *ctx*'s WorkerRMQ API; ``mgmt_single``
    through RabbitMQ's management API; ``amqp_batch`` straight from aiormq (the ceiling of
    any API over an AMQP client: no HTTP, no JSON). Use as ``async with``; the queue is
    purged after each measurement and deleted at the end.
    """

    def __init__(self, ctx: Context, queue: str) -> None:
        self.ctx = ctx
        self.queue = queue
        plan = ctx.plan
        text = message_body(200).decode()
        self._auth = {"Authorization": f"Bearer {ctx.api_key}", "Content-Type": "application/json"}
        self._api_url = f"{ctx.api_base}/api/v1/queues/{queue}/messages"
        self._single = orjson.dumps({"body": text})
        self._batch = orjson.dumps({"messages": [{"body": text}] * plan.batch_size})
        mgmt = ctx.management_url.rstrip("/")
        user, password = _credentials(mgmt)
        self._mgmt_url = _strip_credentials(mgmt) + "/api/exchanges/%2F/amq.default/publish"
        self._mgmt_body = orjson.dumps(
            {
                "properties": {"delivery_mode": 2, "content_type": "text/plain"},
                "routing_key": queue,
                "payload": text,
                "payload_encoding": "string",
            }
        )
        self._mgmt_headers = {"Content-Type": "application/json", "Authorization": basic_auth(user, password)}
        self._amqp_body = text.encode()
        self._amqp: Any = None
        self._channel: Any = None
        self.kinds: dict[str, tuple[Callable[[aiohttp.ClientSession], Awaitable[int]], int]] = {
            "api_single": (self.api_single, plan.publish_clients),
            "mgmt_single": (self.mgmt_single, plan.publish_clients),
            "api_batch": (self.api_batch, plan.batch_clients),
            "amqp_batch": (self.amqp_batch, plan.batch_clients),
        }

    async def __aenter__(self) -> Publishers:
        self._amqp = await aiormq.connect(self.ctx.amqp_url)
        self._channel = await self._amqp.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._amqp.close()

    async def api_single(self, http: aiohttp.ClientSession) -> int:
        async with http.post(self._api_url, data=self._single, headers=self._auth) as response:
            await response.read()
            return 1 if response.status == 201 else 0

    async def api_batch(self, http: aiohttp.ClientSession) -> int:
        async with http.post(self._api_url, data=self._batch, headers=self._auth) as response:
            data = await response.read()
            return int(orjson.loads(data)["published"]) if response.status == 200 else 0

    async def amqp_batch(self, _http: aiohttp.ClientSession) -> int:
        properties = aiormq.spec.Basic.Properties(delivery_mode=2, content_type="text/plain")
        confirms = await asyncio.gather(
            *(
                self._channel.basic_publish(
                    self._amqp_body, routing_key=self.queue, properties=properties, mandatory=True, wait=False
                )
                for _ in range(self.ctx.plan.batch_size)
            )
        )
        return sum(isinstance(c, aiormq.spec.Basic.Ack) for c in confirms)

    async def mgmt_single(self, http: aiohttp.ClientSession) -> int:
        async with http.post(self._mgmt_url, data=self._mgmt_body, headers=self._mgmt_headers) as response:
            data = await response.read()
            return 1 if response.status == 200 and orjson.loads(data).get("routed") else 0

    async def measure(self, kind: str, label: str) -> dict[str, Any]:
        """One timed run of *kind*, failures recorded (see ``_guarded``)."""
        request, clients = self.kinds[kind]
        plan = self.ctx.plan

        async def step() -> dict[str, Any]:
            try:
                return await hammer(
                    request,
                    clients=clients,
                    seconds=plan.publish_seconds,
                    warmup=min(1.0, plan.publish_seconds / 5),
                    label=label,
                    progress=self.ctx.progress,
                )
            finally:
                await self.ctx.broker.purge(self.queue)

        return await guarded(self.ctx, label, step)


async def publish_case(ctx: Context) -> dict[str, Any]:
    plan, broker = ctx.plan, ctx.broker
    queue = await broker.declare(broker.name("publish"))
    try:
        async with Publishers(ctx, queue) as publishers:
            order = list(publishers.kinds)
            results: dict[str, Any] = {kind: [] for kind in order}
            for run in range(plan.runs):
                for kind in order[run % len(order) :] + order[: run % len(order)]:
                    clients = publishers.kinds[kind][1]
                    label = f"publish · {kind} · {clients} clients · run {run + 1}/{plan.runs}"
                    results[kind].append(await publishers.measure(kind, label))
    finally:
        await broker.delete(queue)
    results["batch_size"] = plan.batch_size
    return results


def _credentials(url: str) -> tuple[str, str]:
    match = re.match(r"^\w+://([^:@/]+):([^@/]*)@", url)
    return (match.group(1), match.group(2)) if match else ("guest", "guest")


def _strip_credentials(url: str) -> str:
    return re.sub(r"^(\w+://)[^@/]*@", r"\1", url)


# -- case 5: isolation -----------------------------------------------------------------------


ISOLATION_VARIANTS = {
    # The failing consumer retries fast (50-100 ms delay tiers, 3 attempts, then its DLQ),
    # so nothing of it lingers in the shared delay queues after the case.
    "alone": None,
    "failing_circuit_on": {},  # circuit breaker as configured by default (10 failures, 30 s)
    "failing_circuit_off": {"circuit_threshold": 100_000},  # it never pauses: the worst case
}


async def isolation_once(ctx: Context, variant: str, label: str) -> dict[str, Any]:
    plan, broker = ctx.plan, ctx.broker
    n = plan.messages
    await ctx.ensure_worker()
    healthy = await broker.declare(broker.name("iso-ok"))
    failing: str | None = None
    consumers: list[tuple[str, str]] = []
    bucket = broker.name("iso-ok")
    fail_bucket = broker.name("iso-fail")
    try:
        await broker.prefill(healthy, n, 200, tick=ctx.progress.tick)
        extra = ISOLATION_VARIANTS[variant]
        if extra is not None:
            failing = await broker.declare(broker.name("iso-fail"))
            # Each of its messages makes 3 requests: half as many keep it busy throughout.
            await broker.prefill(failing, max(n // 2, 100), 200, tick=ctx.progress.tick)
            consumers.append(
                (
                    await ctx.consumer(
                        failing,
                        ctx.endpoint.url("fail", fail_bucket),
                        max_attempts=3,
                        initial_delay=0.05,
                        max_delay=0.1,
                        **extra,
                    ),
                    failing,
                )
            )
            await _wait_count(ctx, fail_bucket, 10, timeout=30)
        # The failing consumer's work is in the worker's CPU per healthy message: it starts at
        # once and ends with the healthy consumer's last message (no tail: it never goes quiet).
        assert ctx.worker is not None
        meter = CpuMeter(ctx.worker)
        consumers.append((await ctx.consumer(healthy, ctx.endpoint.url("ok", bucket)), healthy))
        before = (await ctx.endpoint.stats(fail_bucket)).count
        result = await ctx.watch(bucket, n, label, proc=ctx.worker, meter=meter)
        result["failing_requests"] = (await ctx.endpoint.stats(fail_bucket)).count - before
        return result
    finally:
        for consumer_id, queue in reversed(consumers):
            await ctx.drop_consumer(consumer_id, queue)
        await broker.delete(healthy, *([failing] if failing else []))


async def _wait_count(ctx: Context, bucket: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await ctx.endpoint.stats(bucket)).count < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the failing endpoint got under {count} requests in {timeout}s")
        await asyncio.sleep(0.05)


async def isolation_case(ctx: Context) -> dict[str, Any]:
    variants = list(ISOLATION_VARIANTS)
    results: dict[str, Any] = {v: [] for v in variants}
    for run in range(ctx.plan.runs):
        for variant in variants[run % 3 :] + variants[: run % 3]:
            label = f"isolation · {variant} · run {run + 1}/{ctx.plan.runs}"
            results[variant].append(
                await guarded(ctx, label, lambda v=variant, lb=label: isolation_once(ctx, v, lb))
            )
    return results


# -- case 6: scale curves ----------------------------------------------------------------------

#: The scale curves run on one engine process: ``workerrmq worker --processes 1``.
SCALE_PROCESSES = 1
#: After SIGTERM, a scale worker still running this many seconds later is killed (and noted).
SCALE_STOP_TIMEOUT = 30.0


async def scale_case(ctx: Context) -> dict[str, Any]:
    """For each count of ``ctx.scale_counts`` (rising): that many consumers defined, then a cold
    ``workerrmq worker --processes 1`` start per run, timed until every queue has a consumer;
    then its RSS and idle CPU. Whatever happens, the worker is stopped and every consumer and
    queue the case made is deleted at the end (what even that leaves, bench.run's clean-up
    deletes)."""
    plan, broker = ctx.plan, ctx.broker
    ctx.stop_worker()  # the worker of the other cases would take these consumers too
    counts = sorted(set(ctx.scale_counts))
    names = [f"{broker.prefix}-scale-{i:05d}" for i in range(max(counts))]
    target = ctx.endpoint.url("ok", broker.name("scale"))
    results: dict[str, Any] = {
        "processes": SCALE_PROCESSES,
        "idle_seconds": plan.idle_seconds,
        "stop_timeout": SCALE_STOP_TIMEOUT,
        "points": {},
    }
    declared = defined = 0  # names[:declared] were (being) declared, names[:defined] given a consumer
    try:
        for count in counts:
            label = f"scale · {count:,} consumers"

            def tick(text: str, label: str = label) -> None:
                ctx.progress.tick(f"{label}: {text}")

            point: dict[str, Any] = {"runs": []}
            results["points"][str(count)] = point
            try:
                first, declared = declared, count
                await broker.declare_many(names[first:count], tick=tick)
                started = time.perf_counter()
                first, defined = defined, count
                await _define_consumers(ctx, names[first:count], target, tick)
            except Exception as exc:  # noqa: BLE001 - the smaller counts' figures stand
                point["runs"].append({"error": f"setting up: {type(exc).__name__}: {exc}"[:2000]})
                ctx.progress.say(f"{label}: FAILED setting up: {type(exc).__name__}: {exc}"[:500])
                break
            point["define_seconds"] = time.perf_counter() - started
            ctx.progress.say(f"{label}: defined through the API in {point['define_seconds']:.1f}s")
            for run in range(plan.runs):
                run_label = f"{label} · run {run + 1}/{plan.runs}"
                point["runs"].append(
                    await guarded(
                        ctx, run_label, lambda c=count, lb=run_label: scale_once(ctx, names[:c], lb)
                    )
                )
            if all("error" in r for r in point["runs"]):
                ctx.progress.say(f"{label}: every run failed; the larger counts are skipped")
                break
    finally:
        cleaning = time.monotonic()
        ctx.stop_worker()
        try:
            await _delete_consumers(ctx, names[:defined])
        finally:
            await broker.delete_many(names[:declared], tick=lambda text: ctx.progress.tick(f"scale: {text}"))
            ctx.progress.say(
                f"scale: clean-up of {declared:,} queues (with their dead-letter queues and "
                f"consumers) took {time.monotonic() - cleaning:.0f}s"
            )
    return results


async def _define_consumers(ctx: Context, names: list[str], target: str, tick: Callable[[str], None]) -> None:
    """A consumer on each queue of *names*, named as its queue, through the API (16 requests at
    once); the first failure stops the others and is raised."""
    semaphore = asyncio.Semaphore(16)
    done = 0

    async def define(name: str) -> None:
        nonlocal done
        async with semaphore:
            await ctx.consumer(name, target, concurrency=32)
        done += 1
        tick(f"defining consumers {done:,}/{len(names):,}")

    try:
        async with asyncio.TaskGroup() as group:
            for name in names:
                group.create_task(define(name))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _delete_consumers(ctx: Context, names: list[str]) -> None:
    """Delete the consumer of each queue of *names*, by its name (also one whose creation was
    cut short; one that is not there is no error)."""
    semaphore = asyncio.Semaphore(16)
    deleted = 0
    failures: list[str] = []

    async def delete(name: str) -> None:
        nonlocal deleted
        async with semaphore:
            try:
                await ctx.api.delete_consumer(name)
            except Exception as exc:  # noqa: BLE001 - counted and reported below
                failures.append(f"{type(exc).__name__}: {exc}")
                return
        deleted += 1
        ctx.progress.tick(f"scale: deleting consumers {deleted:,}/{len(names):,}")

    await asyncio.gather(*(delete(name) for name in names))
    if failures:
        ctx.progress.say(f"scale: {len(failures)} consumer(s) could not be deleted: {failures[0][:300]}")


async def scale_once(ctx: Context, names: list[str], label: str) -> dict[str, Any]:
    started = time.monotonic()
    worker = ctx.worker = ctx.spawn(
        "worker-scale",
        ctx.workerrmq_argv("worker", worker_processes=SCALE_PROCESSES),
        env=ctx.worker_env(SCALE_PROCESSES),
        cwd=ctx.tmp,
    )
    ctx._worker_processes = SCALE_PROCESSES
    ctx._worker_extra_env = {}
    try:
        return await _measure_scale(ctx, worker, names, started, label)
    finally:
        ctx.stop_worker()
        # The next cold start must not count this worker's consumers.
        with contextlib.suppress(Exception):
            await _until_consumers(ctx, None, names, 0, time.monotonic() + 30, label)


async def _measure_scale(
    ctx: Context, worker: Proc, names: list[str], started: float, label: str
) -> dict[str, Any]:
    plan = ctx.plan
    deadline = started + plan.scale_timeout
    await _until_consumers(ctx, worker, names, 1, deadline, label)
    consuming_seconds = time.monotonic() - started
    await asyncio.sleep(1.0)  # let start-up work settle
    rss_start, largest_start = worker.rss_bytes()
    cpu_before = worker.cpu_seconds() or 0.0
    idle_started = time.monotonic()
    await asyncio.sleep(plan.idle_seconds)
    used = (worker.cpu_seconds() or 0.0) - cpu_before
    idle_elapsed = time.monotonic() - idle_started
    rss_end, largest_end = worker.rss_bytes()
    if not worker.alive():
        raise RuntimeError(f"the worker exited while idle: {worker.tail()}")
    stop_started = time.monotonic()
    code = ctx.cleanup.stop(worker, timeout=SCALE_STOP_TIMEOUT)
    ctx.worker = None
    stop_seconds = time.monotonic() - stop_started
    result = {
        "consumers": len(names),
        "consuming_seconds": consuming_seconds,
        "rss_mb": max(rss_start, rss_end) / 2**20,
        "largest_process_rss_mb": max(largest_start, largest_end) / 2**20,
        "idle_cpu_percent": used / idle_elapsed * 100,
        "stop_seconds": stop_seconds,
        # Still running SIGTERM + SCALE_STOP_TIMEOUT s later, it was killed.
        "stop_killed": code == -signal.SIGKILL,
    }
    stopped = (
        f"killed {SCALE_STOP_TIMEOUT:.0f}s after SIGTERM"
        if result["stop_killed"]
        else f"stopped in {stop_seconds:.1f}s"
    )
    result["_summary"] = (
        f"all consuming after {consuming_seconds:.2f}s, RSS {result['rss_mb']:.0f} MB, idle CPU "
        f"{result['idle_cpu_percent']:.1f}% of a core over {idle_elapsed:.0f}s, {stopped}"
    )
    return result


async def _until_consumers(
    ctx: Context, worker: Proc | None, names: list[str], want: int, deadline: float, label: str
) -> None:
    """Poll the broker's live counts (passive declares; the management API's lag by seconds)
    until every queue has at least *want* consumers (0: none)."""
    pending = list(names)
    wait = f"{deadline - time.monotonic():.0f}s"
    while pending:
        if worker is not None and not worker.alive():
            raise RuntimeError(f"the worker exited: {worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{label}: {len(pending):,} of {len(names):,} queues still "
                f"{'had fewer than ' + str(want) if want else 'had'} consumers "
                f"when the time was up ({wait})"
            )
        pending = await _still_pending(ctx.broker, pending, want)
        ctx.progress.tick(
            f"{label}: {len(names) - len(pending):,}/{len(names):,} {'consuming' if want else 'let go'}"
        )
        if pending:
            await asyncio.sleep(0.05)


async def _still_pending(broker: Broker, pending: list[str], want: int, chunk: int = 64) -> list[str]:
    """The queues of *pending* that do not yet have *want* consumers (0: that still have some).

    Read in order, *chunk* queues at a time, stopping at the first chunk with a queue still to
    go: the worker starts its consumers in about this order, and while it starts thousands,
    reading every queue each round would load the broker that the start is waiting for."""
    for start in range(0, len(pending), chunk):
        part = pending[start : start + chunk]
        counts = await broker.consumers_of(part)
        left = [n for n in part if (counts[n] < want if want else counts[n] > 0)]
        if left:
            return left + pending[start + chunk :]
    return []


CASES: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "relay": relay_case,
    "latency": latency_case,
    "publish": publish_case,
    "isolation": isolation_case,
    "scale": scale_case,
}

__all__ = ["CASES", "Context", "median"]
