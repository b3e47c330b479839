"""The cases: relay throughput, latency, publish API, isolation, scale curves.

Each case returns plain data (lists of per-run figures); bench.report turns it
into medians, ratios and the verdict against the targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import orjson

from bench.common import (
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

#: A Standard Webhooks secret: signing is on for every WorkerRMQ consumer of the benchmark.
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: (a) as tuned for the benchmark (concurrency = the plain relay's prefetch), (a1) the same with
#: one engine process (``--processes 1``), (a0) a consumer made by the seed's ``/createConsumer``
#: with no options, (a) with ``batch`` (100 messages a request), with ``reply`` (each answer
#: published to a queue), with a ``filter`` (a CEL expression over the JSON body and the routing
#: key, true for every message), as CloudEvents (structured mode: each body wrapped in a JSON
#: envelope), with endpoint ``auth`` (OAuth2 client credentials against the endpoint's token
#: route: one token fetched, then the cached one on every request) and on a worker started with
#: ``ATTEMPT_LOG=false`` (what the attempt log costs is (a) against it), then the plain relay, the
#: seed's design and the two halves of the floor.
#: The order is the run's (rotated each run): the contenders that need the worker restarted
#: (another environment, one engine process) come together, so a size costs three restarts.
RELAY_CONTENDERS = (
    "workerrmq",
    "workerrmq_defaults",
    "batch",
    "reply",
    "filter",
    "cloudevents",
    "auth",
    "no_attempt_log",
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
}
#: What a worker contender's ``workerrmq worker`` gets in its environment beyond the run's.
WORKER_ENV: dict[str, dict[str, str]] = {
    "no_attempt_log": {"ATTEMPT_LOG": "false"},
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

    def contender(self, module: str, *args: object) -> Proc:
        argv = [sys.executable, "-m", f"bench.contenders.{module}", *map(str, args)]
        # Under --profile the baseline relay is profiled too, to compare like with like.
        return self.spawn(
            module, argv, cwd=Path(__file__).resolve().parent.parent, profile=module == "plain_relay"
        )

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
        self, bucket: str, count: int, label: str, *, proc: Proc | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Wait until the endpoint has *count* requests in *bucket* (or time is up)."""
        deadline = time.monotonic() + (timeout or self.plan.drain_timeout)
        timed_out = False
        meter = CpuMeter(proc) if proc is not None else None
        while True:
            stats = await self.endpoint.stats(bucket)
            if meter is not None:
                meter.mark(stats.count)
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
        return {
            "rate": stats.rate(),
            "count": stats.count,
            "timed_out": timed_out,
            "seconds": stats.last - stats.first,
            "_meter": meter,
        }


class CpuMeter:
    """CPU time a process spends per message, from the first message seen to the end.

    CPU time, unlike wall time, hardly depends on what else the machine runs, so it
    shows how much work a contender does per message even on a busy machine.
    """

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.start: float | None = None
        self.first_count = 0
        self.last_count = 0

    def mark(self, count: int) -> None:
        if self.start is None and count > 0:
            self.start = self.proc.cpu_seconds()
            self.first_count = count
        self.last_count = max(self.last_count, count)

    def per_message_us(self) -> float | None:
        """Call after the process stopped (or at the end, for one that keeps running)."""
        end = self.proc.cpu_seconds()
        handled = self.last_count - self.first_count
        if self.start is None or end is None or handled < 1:
            return None
        return (end - self.start) / handled * 1e6


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
    if meter is not None:  # by now a contender has exited; the worker still runs
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
        proc = ctx.contender(
            "http_only", "--target", target, "--count", n, "--size", size, "--concurrency", plan.prefetch
        )
        try:
            return await ctx.watch(bucket, n, label, proc=proc)
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
        proc = ctx.contender(
            module, "--amqp-url", ctx.amqp_url, "--queue", queue, "--target", target, "--count", n, *extra
        )
        timeout = plan.seed_timeout if contender == "seed" else None
        try:
            return await ctx.watch(bucket, n, label, proc=proc, timeout=timeout)
        finally:
            ctx.cleanup.stop(proc)
    finally:
        await broker.delete(queue)
        if replies is not None:
            await broker.delete(replies)


async def _worker_relay(
    ctx: Context, contender: str, queue: str, target: str, bucket: str, n: int, label: str
) -> dict[str, Any]:
    """Drain *queue* through a WorkerRMQ worker; the consumer is dropped afterwards."""
    worker = await ctx.ensure_worker(processes=WORKER_CONTENDERS[contender], env=WORKER_ENV.get(contender))
    if contender == "workerrmq_defaults":
        # The seed's route with nothing but the queue (and where to send, which the seed
        # takes from DEFAULT_TARGET_URL): every other field at its default.
        await ctx.api.call("POST", "/createConsumer", {"queueName": queue, "target_url": target})
        try:
            return await ctx.watch(bucket, n, label, proc=worker)
        finally:
            await ctx.api.call("POST", "/deleteConsumer", {"queueName": queue})
            await ctx.broker.wait_consumers([queue], 0, timeout=15)
    consumer_id = await ctx.consumer(queue, target, **feature_fields(ctx, contender, bucket))
    try:
        result = await ctx.watch(bucket, n, label, proc=worker)
        if contender == "no_attempt_log":
            # Measuring a worker that still logs would show no cost at all: make sure it is off.
            logged = await ctx.api.call("GET", f"/api/v1/consumers/{consumer_id}/attempts")
            if logged["total"]:
                raise RuntimeError(f"{label}: {logged['total']} attempts logged with ATTEMPT_LOG=false")
    finally:
        await ctx.drop_consumer(consumer_id, queue)
    if contender == "auth":
        # One per engine process (each has its own cache) when every later request went out
        # with the cached token.
        result["token_fetches"] = (await ctx.endpoint.stats(bucket)).tokens
    return result


async def _broker_only(ctx: Context, queue: str, n: int, label: str) -> dict[str, Any]:
    proc = ctx.contender("broker_only", "--amqp-url", ctx.amqp_url, "--queue", queue, "--count", n)
    deadline = time.monotonic() + ctx.plan.drain_timeout
    meter = CpuMeter(proc)
    try:
        while proc.alive() and time.monotonic() < deadline:
            ready, _ = await ctx.broker.counts(queue)
            meter.mark(n - ready)
            ctx.progress.tick(f"{label}: {n - ready:,}/{n:,}")
            await asyncio.sleep(0.05)
    finally:
        code = ctx.cleanup.stop(proc)
    lines = [line for line in proc.tail(5).splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        raise RuntimeError(f"{label}: the broker-only consumer failed (exit {code}):\n{proc.tail()}")
    stats = orjson.loads(lines[-1])
    seconds = stats["last"] - stats["first"]
    rate = (stats["count"] - 1) / seconds if seconds > 0 else None
    meter.mark(stats["count"])
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
            proc = ctx.contender(
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
        consumers.append((await ctx.consumer(healthy, ctx.endpoint.url("ok", bucket)), healthy))
        before = (await ctx.endpoint.stats(fail_bucket)).count
        result = await ctx.watch(bucket, n, label, proc=ctx.worker)
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


async def scale_case(ctx: Context) -> dict[str, Any]:
    """For each count of ``ctx.scale_counts`` (rising): that many consumers defined, then a cold
    ``workerrmq worker --processes 1`` start per run, timed until every queue has a consumer;
    then its RSS and idle CPU. Every consumer and queue it made is deleted at the end."""
    plan, broker = ctx.plan, ctx.broker
    ctx.stop_worker()  # the worker of the other cases would take these consumers too
    counts = sorted(set(ctx.scale_counts))
    names = [f"{broker.prefix}-scale-{i:05d}" for i in range(max(counts))]
    target = ctx.endpoint.url("ok", broker.name("scale"))
    results: dict[str, Any] = {"processes": SCALE_PROCESSES, "idle_seconds": plan.idle_seconds, "points": {}}
    defined: list[str] = []  # consumer ids, for the clean-up
    declared = 0
    try:
        for count in counts:
            label = f"scale · {count:,} consumers"
            for name in names[declared:count]:
                await broker.declare(name)
                declared += 1
                ctx.progress.tick(f"{label}: declaring queues {declared:,}/{count:,}")
            started = time.perf_counter()
            await _define_consumers(ctx, names[len(defined) : count], target, defined)
            point: dict[str, Any] = {"define_seconds": time.perf_counter() - started, "runs": []}
            results["points"][str(count)] = point
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
        ctx.stop_worker()
        await _delete_consumers(ctx, defined)
        for start in range(0, declared, 100):
            await broker.delete(*names[start : min(declared, start + 100)])
    return results


async def _define_consumers(ctx: Context, names: list[str], target: str, defined: list[str]) -> None:
    """Create a consumer on each queue of *names* through the API; ids go into *defined*."""
    semaphore = asyncio.Semaphore(16)
    total = len(defined) + len(names)

    async def define(name: str) -> None:
        async with semaphore:
            defined.append(await ctx.consumer(name, target, concurrency=32))
        ctx.progress.tick(f"scale: defining consumers {len(defined):,}/{total:,}")

    await asyncio.gather(*(define(name) for name in names))


async def _delete_consumers(ctx: Context, ids: list[str]) -> None:
    semaphore = asyncio.Semaphore(16)
    deleted = 0

    async def delete(consumer_id: str) -> None:
        nonlocal deleted
        async with semaphore:
            with contextlib.suppress(Exception):  # reported below by what is left
                await ctx.api.delete_consumer(consumer_id)
                deleted += 1
        ctx.progress.tick(f"scale: deleting consumers {deleted:,}/{len(ids):,}")

    await asyncio.gather(*(delete(i) for i in ids))
    if deleted < len(ids):
        ctx.progress.say(f"scale: {len(ids) - deleted} consumer(s) could not be deleted")


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
    ctx.stop_worker()
    stop_seconds = time.monotonic() - stop_started
    result = {
        "consumers": len(names),
        "consuming_seconds": consuming_seconds,
        "rss_mb": max(rss_start, rss_end) / 2**20,
        "largest_process_rss_mb": max(largest_start, largest_end) / 2**20,
        "idle_cpu_percent": used / idle_elapsed * 100,
        "stop_seconds": stop_seconds,
    }
    result["_summary"] = (
        f"all consuming after {consuming_seconds:.2f}s, RSS {result['rss_mb']:.0f} MB, idle CPU "
        f"{result['idle_cpu_percent']:.1f}% of a core over {idle_elapsed:.0f}s, stopped in "
        f"{stop_seconds:.1f}s"
    )
    return result


async def _until_consumers(
    ctx: Context, worker: Proc | None, names: list[str], want: int, deadline: float, label: str
) -> None:
    """Poll the broker's live counts (passive declares; the management API's lag by seconds)
    until every queue has at least *want* consumers (0: none)."""
    pending = list(names)
    while pending:
        if worker is not None and not worker.alive():
            raise RuntimeError(f"the worker exited: {worker.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{label}: {len(pending):,} of {len(names):,} queues still "
                f"{'had fewer than ' + str(want) if want else 'had'} consumers "
                f"when the time was up ({ctx.plan.scale_timeout:.0f}s)"
            )
        counts = await ctx.broker.consumers_of(pending)
        pending = [n for n in pending if (counts[n] < want if want else counts[n] > 0)]
        ctx.progress.tick(
            f"{label}: {len(names) - len(pending):,}/{len(names):,} {'consuming' if want else 'let go'}"
        )
        if pending:
            await asyncio.sleep(0.05)


CASES: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "relay": relay_case,
    "latency": latency_case,
    "publish": publish_case,
    "isolation": isolation_case,
    "scale": scale_case,
}

__all__ = ["CASES", "Context", "median"]
