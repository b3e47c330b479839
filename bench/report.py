"""Turn bench.run's results into docs/PERFORMANCE.md (medians, ratios, targets) and a PNG chart."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import median

CONTENDER_NAMES = {
    "workerrmq": "(a) WorkerRMQ worker",
    "plain": "(b) plain aio-pika + aiohttp relay",
    "seed": "(c) seed design (pika + requests)",
    "broker_only": "(d) ceiling: broker only",
    "http_only": "(d) ceiling: HTTP only",
}
SHORT_NAMES = {
    "workerrmq": "(a) WorkerRMQ",
    "plain": "(b) plain",
    "seed": "(c) seed",
    "broker_only": "(d) broker-only",
    "http_only": "(d) HTTP-only",
}
ISOLATION_NAMES = {
    "alone": "healthy consumer alone",
    "failing_circuit_on": "beside a failing consumer, circuit breaker on (default)",
    "failing_circuit_off": "beside a failing consumer, circuit breaker off (stress)",
}
PUBLISH_NAMES = {
    "api_single": "WorkerRMQ API, one message per request",
    "mgmt_single": "RabbitMQ management API, one message per request",
    "api_batch": "WorkerRMQ API, batches",
    "amqp_batch": "ceiling: AMQP straight from aiormq, no API, batches",
}

#: What limits WorkerRMQ where a target is missed: from profiling the code of 2026-12-02 with
#: ``python -m bench.run --profile DIR`` (py-spy), ``python -m bench.hotspots`` and the CPU
#: counters of the processes. Shown under the targets table for each target a run misses;
#: re-check them after changing the code.
_CPU_BOUND = (
    "Relaying is CPU-bound here: RabbitMQ, the endpoint and the relay share 2 cores, so msg/s "
    "follows the CPU each message costs everyone (the CPU/msg column is the relay's own share). "
    "The worker already does less per message than a first version did: each delivery is handled "
    "in aiormq's own task with no aio-pika message object around it, acks are collected for 2 ms "
    "and settled with `multiple=True` (`worker/acks.py`; about 12 deliveries per ack frame "
    "measured), the headers, signing key, URL and timeout of an endpoint are built once, and "
    "Prometheus series are made once per consumer. What is left (py-spy) is the same work the "
    "plain relay does, plus a little: aiohttp's request path with its socket write "
    "(`StreamWriter._writelines`, about 11% of the worker's samples) and response parsing, "
    "aiormq's frame reads and writes, uvloop's own loop (about 9%), and per message the "
    "Standard Webhooks HMAC and ten request headers instead of one. Two engine processes are "
    "what lift it above the single-process plain relay, by 1.1× to 1.3× across this session's "
    "runs (the ranges in the relay table overlap)."
)
LIMITS: dict[str, str] = {
    "a_vs_b": _CPU_BOUND,
    "a_vs_ceiling": "The broker-only ceiling consumes and acks with no HTTP at all; every relay "
    "adds one POST per message, and the endpoint that answers it runs on the same 2 cores. See "
    "the note above.",
    "a_vs_c": _CPU_BOUND,
    "latency_p50": "Latencies far above a millisecond are a backlog: the relay did not keep up "
    "with 1,000 msg/s while other processes took the CPU (see the CPU line above). On a quiet "
    "machine p50 is under 1 ms (run with `--wait-quiet`).",
    "latency_p99": "See the p50 note.",
    "publish_single": "WorkerRMQ answers only after the broker's publisher confirm (a persistent "
    "message is confirmed after it is written to disk); the management API answers without one. "
    "A plain publish takes the fast lane (`api/fastlane.py`: orjson, checks proven against the "
    "request schema, no marshmallow), so what is left per request is Gunicorn's gthread worker "
    "(the request is read by its main thread, run on a pool thread, written back), Flask's "
    "request and response objects, the API-key check (cached 2 s), the access-log line and "
    "metrics, and a hop to the publisher's event-loop thread and back. At 32 clients the two "
    "Gunicorn processes are CPU-bound beside RabbitMQ on 2 cores. Levers left: a lighter worker "
    "class than gthread, and publishing from the request thread without the hop.",
    "publish_batch": "The row `ceiling` publishes the same batches straight from aiormq with "
    "confirms, with no HTTP and no JSON: the API matches it within the run-to-run spread, so "
    "the limit is below the API. RabbitMQ itself spends 70 to 80 µs of CPU per persistent, "
    "confirmed message on this machine (measured from beam.smp's CPU counters while "
    "publishing 20,000 messages), so on 2 "
    "cores shared with the publisher 20,000 msg/s is out of reach of any client here; aiormq's "
    "`basic_publish` adds about 85 µs of client CPU per message (a task, a lock, a timeout scope, "
    "a future and pamqp marshalling each). Writing a whole batch's frames at once costs about "
    "19 µs per message (measured: 12,400 msg/s, broker-bound), but needs aiormq's channel "
    "internals (delivery tags, the confirmation map), which WorkerRMQ does not reach into.",
    "isolation_failing_circuit_on": "With the breaker on, the failing consumer makes only a "
    "handful of requests; the healthy consumer's loss is within the spread of its runs alone (see "
    "the range in the isolation table): noise, not interference.",
    "isolation_failing_circuit_off": "With the breaker off, every failed request of the other "
    "consumer is followed by a confirmed republish to a delay queue or its dead-letter queue, in "
    "the same worker processes: on 2 cores that CPU is what the healthy consumer loses. The "
    "default circuit breaker is the protection; a per-consumer CPU budget (lower concurrency "
    "while a consumer fails) would bound it without the breaker.",
    "scale_time": "Each engine opens a channel per consumer and declares its queue and dead-letter "
    "queue, 50 consumers at a time; 1,000 consumers on 2 engines are 2,000 channels.",
    "scale_rss": "`workerrmq worker` is a bare supervisor (about 12 MB; it execs into "
    "`python -m workerrmq.supervisor` and imports neither the engine's libraries nor the "
    "settings) and one engine per core. Each engine consumes every queue, so 1,000 consumers "
    "are 1,000 channels per engine, about 14 KB each in aiormq (measured on 1,000 channels; "
    "aio-pika's channel wrapper, 7 KB more, is not used), on top of about 60 MB of libraries "
    "(SQLAlchemy, aiohttp, aio-pika, prometheus_client). Metric series and the latency window "
    "are made only for consumers that delivered, and alembic is loaded only when the schema "
    "needs migrating. Levers left: `--processes 1` for many mostly idle consumers (half the "
    "channels), or `instances` to run a consumer on fewer engines.",
}


# -- numbers ---------------------------------------------------------------------------------


def _ok(runs: Sequence[dict[str, Any]] | None, key: str = "rate") -> list[float]:
    return [r[key] for r in runs or () if isinstance(r, dict) and r.get(key) is not None]


def _med(runs: Sequence[dict[str, Any]] | None, key: str = "rate") -> float | None:
    return median(_ok(runs, key))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _num(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def _spread(runs: Sequence[dict[str, Any]] | None, key: str = "rate", digits: int = 0) -> str:
    """`` (min–max)`` of the runs, or nothing for a single run."""
    values = _ok(runs, key)
    if len(values) < 2:
        return ""
    return f" ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def _errors(runs: Sequence[dict[str, Any]] | None) -> int:
    return sum(1 for r in runs or () if isinstance(r, dict) and "error" in r)


@dataclasses.dataclass
class Target:
    key: str
    what: str
    needed: str
    measured: str
    value: float | None  # the figure compared with the bound
    bound: float
    at_least: bool  # True: value >= bound passes; False: value <= bound (or < for strict)
    strict: bool = False

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.at_least:
            return self.value >= self.bound
        return self.value < self.bound if self.strict else self.value <= self.bound

    @property
    def verdict(self) -> str:
        met = self.met
        if met is None:
            return "no figure"
        if met:
            return "**met**"
        if self.at_least:
            short = (1 - self.value / self.bound) * 100
            return f"**missed** by {short:.0f}% (×{self.value / self.bound:.2f} of the target)"
        return f"**missed**: ×{self.value / self.bound:.2f} the limit"


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians of everything the report shows."""
    out: dict[str, Any] = {}
    relay = results.get("relay") or {}
    if "error" not in relay:
        out["relay"] = {
            size: {c: _med(runs) for c, runs in by_contender.items()} for size, by_contender in relay.items()
        }
    latency = results.get("latency") or {}
    if "error" not in latency:
        out["latency"] = {
            c: {k: _med(runs, k) for k in ("p50_ms", "p99_ms", "max_ms")} for c, runs in latency.items()
        }
    publish = results.get("publish") or {}
    if "error" not in publish:
        out["publish"] = {k: _med(publish.get(k)) for k in PUBLISH_NAMES}
    isolation = results.get("isolation") or {}
    if "error" not in isolation:
        out["isolation"] = {k: _med(isolation.get(k)) for k in ISOLATION_NAMES}
    scale = results.get("scale") or {}
    if "error" not in scale:
        out["scale"] = {
            k: _med(scale.get("runs"), k)
            for k in ("consuming_seconds", "rss_mb", "idle_cpu_percent", "stop_seconds")
        }
    return out


def targets(results: dict[str, Any]) -> list[Target]:
    s = summarize(results)
    relay = s.get("relay", {}).get("200", {})
    a, b, c, broker = (relay.get(k) for k in ("workerrmq", "plain", "seed", "broker_only"))
    lat = s.get("latency", {}).get("workerrmq", {})
    pub = s.get("publish", {})
    iso = s.get("isolation", {})
    scale = s.get("scale", {})
    k = results.get("meta", {}).get("plan", {}).get("scale_consumers", 1000)
    single = _ratio(pub.get("api_single"), pub.get("mgmt_single"))
    rows = [
        Target(
            "a_vs_b",
            "relay 200 B: (a) WorkerRMQ vs (b) plain relay",
            "≥ 1.3×",
            f"{_num(a)} vs {_num(b)} msg/s = ×{_num(_ratio(a, b), 2)}",
            _ratio(a, b),
            1.3,
            True,
        ),
        Target(
            "a_vs_c",
            "relay 200 B: (a) WorkerRMQ vs (c) seed design",
            "≥ 6×",
            f"{_num(a)} vs {_num(c)} msg/s = ×{_num(_ratio(a, c), 1)}",
            _ratio(a, c),
            6.0,
            True,
        ),
        Target(
            "a_vs_ceiling",
            "relay 200 B: (a) WorkerRMQ vs broker-only ceiling",
            "≥ 60%",
            f"{_num(a)} vs {_num(broker)} msg/s = {_num(_pct(_ratio(a, broker)))}%",
            _ratio(a, broker),
            0.60,
            True,
        ),
        Target(
            "latency_p50",
            "latency at 1,000 msg/s, (a) p50",
            "≤ 3 ms",
            _num(lat.get("p50_ms"), 2, " ms"),
            lat.get("p50_ms"),
            3.0,
            False,
        ),
        Target(
            "latency_p99",
            "latency at 1,000 msg/s, (a) p99",
            "≤ 15 ms",
            _num(lat.get("p99_ms"), 2, " ms"),
            lat.get("p99_ms"),
            15.0,
            False,
        ),
        Target(
            "publish_single",
            "single-message publish: WorkerRMQ API vs management API",
            "≥ 2×",
            f"{_num(pub.get('api_single'))} vs {_num(pub.get('mgmt_single'))} msg/s = ×{_num(single, 2)}",
            single,
            2.0,
            True,
        ),
        Target(
            "publish_batch",
            "batch publish through the WorkerRMQ API",
            "≥ 20,000 msg/s",
            f"{_num(pub.get('api_batch'))} msg/s",
            pub.get("api_batch"),
            20_000,
            True,
        ),
    ]
    for variant, note in (
        ("failing_circuit_on", "circuit breaker on (default)"),
        ("failing_circuit_off", "circuit breaker off (stress)"),
    ):
        ratio = _ratio(iso.get(variant), iso.get("alone"))
        rows.append(
            Target(
                f"isolation_{variant}",
                f"isolation, {note}: healthy throughput kept",
                "≥ 90% (cost ≤ 10%)",
                f"{_num(iso.get(variant))} vs {_num(iso.get('alone'))} msg/s alone = "
                f"{_num(_pct(ratio))}% (cost {_num(_pct(1 - ratio) if ratio is not None else None)}%)",
                ratio,
                0.90,
                True,
            )
        )
    rows += [
        Target(
            "scale_time",
            f"scale: {k:,} consumers consuming after a cold worker start",
            "≤ 10 s",
            _num(scale.get("consuming_seconds"), 2, " s"),
            scale.get("consuming_seconds"),
            10.0,
            False,
        ),
        Target(
            "scale_rss",
            f"scale: worker RSS with {k:,} consumers",
            "< 200 MB",
            _num(scale.get("rss_mb"), 0, " MB"),
            scale.get("rss_mb"),
            200.0,
            False,
            strict=True,
        ),
    ]
    return rows


def _pct(ratio: float | None) -> float | None:
    return ratio * 100 if ratio is not None else None


# -- Markdown --------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    plan = meta.get("plan", {})
    versions = meta.get("versions", {})
    runs = plan.get("runs", "?")
    lines: list[str] = [
        "# Performance",
        "",
        "Generated by `./run.sh bench` (`python -m bench.run`), issue 5's benchmark: every",
        "contender on the same machine, in the same run, against the same RabbitMQ and the same",
        "local HTTP endpoint. Figures are **medians of "
        f"{runs} run{'s' if runs != 1 else ''}** (range of the runs in brackets);",
        "ratios are taken between medians of this one run.",
        "",
    ]
    if meta.get("quick"):
        lines += [
            "> **Quick mode** (smoke test): tiny sizes, one run. These figures are not",
            "> the benchmark; run `./run.sh bench` for it.",
            "",
        ]
    lines += [
        f"- Date: {meta.get('date', '?')}; wall time {meta.get('seconds', '?')} s",
        f"- Machine: {meta.get('cpus', '?')} cores ({meta.get('cpu_model', '?')}), "
        f"{meta.get('memory_gib', '?')} GiB; everything on loopback",
        f"- RabbitMQ {versions.get('rabbitmq', '?')} (Erlang {versions.get('erlang', '?')}); "
        f"Python {versions.get('python', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("python", "rabbitmq", "erlang")),
        f"- Command: `{meta.get('command', 'python -m bench.run')}`" + _git_note(meta.get("git") or {}),
        _cpu_line(meta),
        "",
        "## Against the targets (issue 5, item 7)",
        "",
        "| target | needed | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    rows = targets(results)
    for t in rows:
        lines.append(f"| {t.what} | {t.needed} | {t.measured} | {t.verdict} |")
    met = sum(t.met is True for t in rows)
    missed = [t for t in rows if t.met is False]
    lines += ["", f"{met} of {len(rows)} targets met."]
    if missed:
        lines += [
            "",
            "Missed: "
            + "; ".join(
                f"{t.what} ({t.verdict.replace('**', '').replace('missed', '').strip(': ')})" for t in missed
            )
            + ".",
        ]
        notes = [(t, LIMITS[t.key]) for t in missed if t.key in LIMITS]
        if notes:
            lines += ["", "What limits them (profiled with py-spy under this benchmark):", ""]
            lines += [f"- **{t.what}**: {note}" for t, note in notes]
    lines += ["", "![The benchmark's medians](performance.png)", ""]
    lines += _relay_section(results) + _latency_section(results) + _publish_section(results)
    lines += _isolation_section(results) + _scale_section(results) + _method_section(results)
    return "\n".join(lines).rstrip() + "\n"


def _git_note(git: dict[str, Any]) -> str:
    if not git.get("commit"):
        return ""
    note = f" on commit `{git['commit']}`"
    if git.get("source"):
        note += " (a clean export of it)"
    if git.get("changed_files"):
        note += f" with {git['changed_files']} uncommitted change(s) under workerrmq/"
    return note


def _cpu_line(meta: dict[str, Any]) -> str:
    cpu = meta.get("cpu")
    if not cpu:
        return ""
    line = (
        f"- CPU during the run (100% = both cores): {cpu['busy_percent']:.0f}% busy; "
        f"the benchmark's processes {cpu['benchmark_percent']:.0f}%, "
        f"RabbitMQ {cpu['rabbitmq_percent']:.0f}%, "
        f"other processes {cpu['others_percent']:.0f}%"
    )
    if cpu["others_percent"] > 5:
        line += " — **the machine was not quiet; the figures carry that noise**"
    load = meta.get("load_average_at_start")
    if load:
        line += f"; load average at the start {load[0]:.2f}"
    return line


def _relay_section(results: dict[str, Any]) -> list[str]:
    relay = results.get("relay")
    plan = results.get("meta", {}).get("plan", {})
    lines = ["## Relay throughput (case 2)", ""]
    if not relay or "error" in relay:
        return lines + [f"Not measured: {(relay or {}).get('error', 'case not run')}", ""]
    n = plan.get("messages", 0)
    lines += [
        f"A queue pre-filled with {n:,} persistent messages, drained into the endpoint; "
        "msg/s between the first and the last request the endpoint received "
        "(broker-only: between the first and the last ack).",
        "",
    ]
    sizes = list(relay)
    header = "| contender |"
    rule = "| --- |"
    for size in sizes:
        label = _size(int(size))
        header += f" {label} msg/s | {label} ×(a) | {label} CPU/msg |"
        rule += " ---: | ---: | ---: |"
    lines += [header, rule]
    for contender in CONTENDER_NAMES:
        row = f"| {CONTENDER_NAMES[contender]} |"
        for size in sizes:
            runs = relay[size].get(contender)
            value = _med(runs)
            a = _med(relay[size].get("workerrmq"))
            cell = _num(value) + _spread(runs)
            if any(isinstance(r, dict) and r.get("timed_out") for r in runs or ()):
                cell += " †"
            if _errors(runs):
                cell += f" [{_errors(runs)} failed]"
            row += f" {cell} | {_num(_ratio(a, value), 2)} | {_num(_med(runs, 'cpu_us_per_msg'), 0, ' µs')} |"
        lines.append(row)
    lines += [
        "",
        "×(a): how many times (a) is faster than the row. CPU/msg: CPU time (user + "
        "system) of the contender's own process per message while it drained, which depends "
        "far less than msg/s on what else the machine was doing (RabbitMQ's and the "
        "endpoint's share is not in it). † a run was stopped at the time limit and counted "
        "as it stood.",
        "",
    ]
    return lines


def _size(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 else f"{size} B"


def _latency_section(results: dict[str, Any]) -> list[str]:
    latency = results.get("latency")
    plan = results.get("meta", {}).get("plan", {})
    lines = ["## Latency (case 3)", ""]
    if not latency or "error" in latency:
        return lines + [f"Not measured: {(latency or {}).get('error', 'case not run')}", ""]
    lines += [
        f"{plan.get('latency_rate', 0):,} messages/s of 200 B published for "
        f"{plan.get('latency_seconds', 0):g} s; the body carries the publish time; the endpoint "
        f"records arrival minus publish time. The first {plan.get('latency_warmup', 0):g} s are "
        "not counted.",
        "",
        "| contender | p50 | p99 | max | messages counted |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for contender, runs in latency.items():
        counted = _med(runs, "count")
        lines.append(
            f"| {CONTENDER_NAMES.get(contender, contender)} "
            f"| {_num(_med(runs, 'p50_ms'), 2, ' ms')} "
            f"| {_num(_med(runs, 'p99_ms'), 2, ' ms')}{_spread(runs, 'p99_ms', 1)} "
            f"| {_num(_med(runs, 'max_ms'), 1, ' ms')} | {_num(counted)} |"
        )
    return lines + [""]


def _publish_section(results: dict[str, Any]) -> list[str]:
    publish = results.get("publish")
    plan = results.get("meta", {}).get("plan", {})
    lines = ["## Publish API (case 4)", ""]
    if not publish or "error" in publish:
        return lines + [f"Not measured: {(publish or {}).get('error', 'case not run')}", ""]
    lines += [
        "`workerrmq api` as the README starts it (Gunicorn, API_WORKERS=2 × API_THREADS=8, "
        "SQLite, LOG_LEVEL=INFO) against RabbitMQ's management API "
        "(`POST /api/exchanges/%2F/amq.default/publish`); 200 B messages, persistent, "
        f"aiohttp clients, {plan.get('publish_seconds', 0):g} s per run after a warm-up. "
        "WorkerRMQ answers after the broker's publisher confirm; the management API does not "
        "wait for one.",
        "",
        "| what | clients | messages/s | request p50 | request p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    single = plan.get("publish_clients")
    batch_clients = plan.get("batch_clients")
    clients = {
        "api_single": single,
        "mgmt_single": single,
        "api_batch": batch_clients,
        "amqp_batch": batch_clients,
    }
    for kind, name in PUBLISH_NAMES.items():
        runs = publish.get(kind)
        if kind in ("api_batch", "amqp_batch"):
            name += f" of {publish.get('batch_size', plan.get('batch_size'))}"
        lines.append(
            f"| {name} | {clients[kind]} | {_num(_med(runs))}{_spread(runs)} "
            f"| {_num(_med(runs, 'p50_ms'), 1, ' ms')} | {_num(_med(runs, 'p99_ms'), 1, ' ms')} |"
        )
    return lines + [""]


def _isolation_section(results: dict[str, Any]) -> list[str]:
    isolation = results.get("isolation")
    plan = results.get("meta", {}).get("plan", {})
    lines = ["## Isolation (case 5)", ""]
    if not isolation or "error" in isolation:
        return lines + [f"Not measured: {(isolation or {}).get('error', 'case not run')}", ""]
    lines += [
        f"One WorkerRMQ worker; a healthy consumer drains {plan.get('messages', 0):,} messages of "
        "200 B, alone, then while a second consumer (its queue as full) delivers to an endpoint "
        "that answers 503 to every request (3 attempts, retries after 50–100 ms through the delay "
        "queues, then its dead-letter queue).",
        "",
        "| healthy consumer | msg/s | share of alone | failing requests meanwhile "
        "| worker CPU per healthy message |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    alone = _med(isolation.get("alone"))
    for variant, name in ISOLATION_NAMES.items():
        runs = isolation.get(variant)
        value = _med(runs)
        failing = _med(runs, "failing_requests") if variant != "alone" else None
        lines.append(
            f"| {name} | {_num(value)}{_spread(runs)} "
            f"| {_num(_pct(_ratio(value, alone)), 0, '%')} | {_num(failing)} "
            f"| {_num(_med(runs, 'cpu_us_per_msg'), 0, ' µs')} |"
        )
    return lines + [""]


def _scale_section(results: dict[str, Any]) -> list[str]:
    scale = results.get("scale")
    lines = ["## Scale (case 6)", ""]
    if not scale or "error" in scale:
        return lines + [f"Not measured: {(scale or {}).get('error', 'case not run')}", ""]
    k = scale.get("consumers", 0)
    runs = scale.get("runs")
    idle = results.get("meta", {}).get("plan", {}).get("idle_seconds", 0)
    lines += [
        f"{k:,} consumers (one queue each, signing on) defined through the API "
        f"(took {_num(scale.get('define_seconds'), 1, ' s')}); then a cold `workerrmq worker` "
        "start, timed until the broker reports a consumer on every queue (passive declares), then "
        "until every engine process consumes every queue. RSS (summed over the supervisor and its "
        f"engines) after that; idle CPU over {idle:g} s with no messages.",
        "",
        "| time until all consuming | … on every engine process | worker RSS, all processes "
        "| largest process | idle CPU (one core = 100%) | graceful stop |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {_num(_med(runs, 'consuming_seconds'), 2, ' s')}"
        f"{_spread(runs, 'consuming_seconds', 2)} "
        f"| {_num(_med(runs, 'every_engine_seconds'), 2, ' s')} "
        f"({_num(_med(runs, 'engine_processes'))} engines) "
        f"| {_num(_med(runs, 'rss_mb'), 0, ' MB')} "
        f"| {_num(_med(runs, 'largest_process_rss_mb'), 0, ' MB')} "
        f"| {_num(_med(runs, 'idle_cpu_percent'), 1, '%')} "
        f"| {_num(_med(runs, 'stop_seconds'), 1, ' s')} |",
        "",
    ]
    return lines


def _processes(results: dict[str, Any]) -> str:
    chosen = results.get("meta", {}).get("worker_processes")
    if chosen:
        return f"`--processes {chosen}`"
    return "its default: one engine process per core, under a supervisor"


def _method_section(results: dict[str, Any]) -> list[str]:
    plan = results.get("meta", {}).get("plan", {})
    prefetch = plan.get("prefetch", 64)
    return [
        "## How it is measured",
        "",
        "- **Endpoint**: `bench/endpoint.py`, aiohttp's low-level server on uvloop in its own "
        "process; answers 200 (503 for the failing consumer), counts requests per bucket, "
        "records arrival times.",
        "- **(a) WorkerRMQ**: `workerrmq worker` as a process, as users run it "
        f"({_processes(results)}), with the consumer "
        "created through `POST /api/v1/consumers` of a running `workerrmq api`: signing secret on "
        "(Standard Webhooks), statistics reported every 2 s, `/metrics` served on `WORKER_BIND`, "
        f"INFO logging, `concurrency` {prefetch} (the plain relay's prefetch), shared by the "
        "engine processes.",
        f"- **(b) plain relay**: `bench/contenders/plain_relay.py`, aio-pika + aiohttp on uvloop, "
        f"prefetch {prefetch}, one keep-alive session, one ack per message after a 2xx.",
        "- **(c) seed design**: `bench/contenders/seed_relay.py`, pika `BlockingConnection`, "
        "prefetch 1, `requests.post` per message (a new connection each), ack after a 2xx.",
        f"- **(d) ceilings**: `broker_only.py` consumes and acks with aio-pika "
        f"(prefetch {prefetch}, one ack each, no HTTP); `http_only.py` POSTs the same bodies "
        f"with {prefetch} in flight "
        "on one aiohttp session, no broker.",
        "- Each relay run gets a fresh queue; the contenders' order rotates between runs. All "
        "processes share the 2 cores with RabbitMQ, the endpoint and the benchmark driver.",
        "- Raw figures of every run: `performance.json` beside this file.",
        "",
    ]


# -- chart -----------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(results)
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    title = "WorkerRMQ benchmark (issue 5)"
    if results.get("meta", {}).get("quick"):
        title += " — QUICK MODE, not the benchmark"
    fig.suptitle(f"{title}: medians, {results.get('meta', {}).get('date', '')}")
    colors = {
        "workerrmq": "#d62728",
        "plain": "#1f77b4",
        "seed": "#7f7f7f",
        "broker_only": "#2ca02c",
        "http_only": "#9467bd",
    }

    for ax, size in zip(axes[0][:2], ("200", "16384"), strict=True):
        values = s.get("relay", {}).get(size, {})
        keys = list(CONTENDER_NAMES)
        heights = [values.get(k) or 0 for k in keys]
        bars = ax.bar([SHORT_NAMES[k] for k in keys], heights, color=[colors[k] for k in keys])
        _label_bars(ax, bars, heights, "{:,.0f}")
        ax.set_title(f"Relay throughput, {_size(int(size))} messages")
        ax.set_ylabel("messages/s")
        ax.tick_params(axis="x", rotation=20)

    ax = axes[0][2]
    lat = s.get("latency", {})
    keys = [k for k in ("workerrmq", "plain") if k in lat]
    width = 0.25
    for i, stat in enumerate(("p50_ms", "p99_ms", "max_ms")):
        heights = [lat[k].get(stat) or 0 for k in keys]
        bars = ax.bar(
            [j + (i - 1) * width for j in range(len(keys))], heights, width, label=stat.replace("_ms", "")
        )
        _label_bars(ax, bars, heights, "{:.1f}")
    ax.set_xticks(range(len(keys)), [SHORT_NAMES[k] for k in keys])
    ax.axhline(3, color="green", linestyle=":", linewidth=1, label="p50 target 3 ms")
    ax.axhline(15, color="orange", linestyle=":", linewidth=1, label="p99 target 15 ms")
    ax.set_yscale("log")
    tallest = max([lat[k].get(stat) or 0 for k in keys for stat in ("p50_ms", "p99_ms", "max_ms")] + [15])
    ax.set_ylim(top=tallest * 30)  # room for the legend above the bars
    ax.set_ylabel("ms (log)")
    ax.set_title("Publish-to-endpoint latency at 1,000 msg/s")
    ax.legend(fontsize=7, loc="upper left", ncol=2)

    ax = axes[1][0]
    pub = s.get("publish", {})
    keys = list(PUBLISH_NAMES)
    heights = [pub.get(k) or 0 for k in keys]
    bars = ax.bar(
        ["API single", "mgmt API single", "API batch", "AMQP batch\n(ceiling)"],
        heights,
        color=["#d62728", "#7f7f7f", "#ff9896", "#c7c7c7"],
    )
    _label_bars(ax, bars, heights, "{:,.0f}")
    ax.axhline(20_000, color="orange", linestyle=":", linewidth=1, label="batch target 20,000/s")
    ax.set_yscale("log")
    ax.set_ylabel("messages/s (log)")
    ax.set_title("Publishing")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    iso = s.get("isolation", {})
    keys = list(ISOLATION_NAMES)
    heights = [iso.get(k) or 0 for k in keys]
    bars = ax.bar(
        ["alone", "+ failing\n(breaker on)", "+ failing\n(breaker off)"],
        heights,
        color=["#d62728", "#ff9896", "#ffbb78"],
    )
    _label_bars(ax, bars, heights, "{:,.0f}")
    if iso.get("alone"):
        ax.axhline(
            iso["alone"] * 0.9, color="orange", linestyle=":", linewidth=1, label="90% of alone (target)"
        )
        ax.legend(fontsize=8)
    ax.set_ylabel("healthy consumer, messages/s")
    ax.set_title("Isolation")

    ax = axes[1][2]
    scale = s.get("scale", {})
    k = (results.get("scale") or {}).get("consumers", 0)
    seconds, rss = scale.get("consuming_seconds"), scale.get("rss_mb")
    heights = [(seconds or 0) / 10 * 100, (rss or 0) / 200 * 100]
    bars = ax.bar(
        [f"until all consuming\n({_num(seconds, 2, ' s')})", f"worker RSS\n({_num(rss, 0, ' MB')})"],
        heights,
        color=["#d62728", "#ff9896"],
    )
    _label_bars(ax, bars, heights, "{:.0f}%")
    ax.axhline(100, color="orange", linestyle=":", linewidth=1, label="target (10 s, 200 MB)")
    ax.set_ylabel("% of the target's limit")
    ax.set_title(
        f"Scale: {k:,} consumers, one `workerrmq worker`\nidle CPU "
        f"{_num(scale.get('idle_cpu_percent'), 1, '%')} of a core",
        fontsize=11,
    )
    ax.legend(fontsize=8)

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _label_bars(ax: Any, bars: Any, values: Sequence[float], fmt: str) -> None:
    for bar, value in zip(bars, values, strict=True):
        if value:
            ax.annotate(
                fmt.format(value),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def write(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = out / "PERFORMANCE.md"
    png = out / "performance.png"
    md.write_text(markdown(results))
    chart(results, png)
    return [md, png]


if __name__ == "__main__":
    import json
    import sys

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/performance.json")
    print("\n".join(map(str, write(json.loads(source.read_text()), source.parent))))
