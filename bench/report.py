"""Turn bench.run's results into docs/PERFORMANCE.md (medians, ratios, targets) and a PNG chart."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import SCALE_COUNTS, WORKER_TAIL, median

CONTENDER_NAMES = {
    "workerrmq": "(a) WorkerRMQ worker",
    "workerrmq_1p": "(a1) WorkerRMQ, one engine process",
    "workerrmq_defaults": "(a0) WorkerRMQ, seed's /createConsumer defaults",
    "batch": "(a) with batch (100 messages a request)",
    "reply": "(a) with reply (each answer published to a queue)",
    "filter": "(a) with a filter (CEL over the JSON body and routing key, true for all)",
    "cloudevents": "(a) as CloudEvents (structured mode)",
    "auth": "(a) with endpoint auth (OAuth2 client credentials, cached token)",
    "no_attempt_log": "(a) on a worker without the attempt log (ATTEMPT_LOG=false)",
    "reqwest": "(a) on a worker delivering through pyreqwest (HTTP_CLIENT=reqwest)",
    "plain": "(b) plain aio-pika + aiohttp relay",
    "seed": "(c) seed design (pika + requests)",
    "broker_only": "(d) floor: broker only",
    "http_only": "(d) floor: HTTP only",
}
SHORT_NAMES = {
    "workerrmq": "(a) WorkerRMQ",
    "workerrmq_1p": "(a1) 1 process",
    "workerrmq_defaults": "(a0) defaults",
    "batch": "(a) batch",
    "reply": "(a) reply",
    "filter": "(a) filter",
    "cloudevents": "(a) CloudEvents",
    "auth": "(a) auth",
    "no_attempt_log": "(a) no log",
    "reqwest": "(a) reqwest",
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

# -- why a target is missed or not measured ------------------------------------------------------
#
# Each note says what the target's figure depends on and quotes this run's own figures; none
# quotes a profile or a measurement of another run, which the code may have moved past.
# ``python -m bench.run --profile DIR`` and ``python -m bench.hotspots DIR/*.txt`` show where a
# run's CPU goes.


def _cores(results: dict[str, Any]) -> str:
    cpus = results.get("meta", {}).get("cpus")
    return f"the machine's {cpus} cores" if cpus else "the machine's cores"


def _relay_sizes(s: dict[str, Any]) -> list[str]:
    return [size for size in ("200", "16384") if size in s.get("relay", {})]


def _relay_note(results: dict[str, Any], s: dict[str, Any]) -> str:
    """Throughput and CPU per message of the relays, which the CPU and defaults targets compare."""
    figures = []
    for size in _relay_sizes(s):
        relay, cpu = s["relay"][size], s.get("cpu", {}).get(size, {})
        who, mine = _efficient(cpu)
        figures.append(
            f"{_size(int(size))}: (a) {_num(relay.get('workerrmq'))} msg/s, "
            f"(a0) {_num(relay.get('workerrmq_defaults'))}, (b) {_num(relay.get('plain'))}; "
            f"CPU per message {who} {_num(mine, 0, ' µs')}, (b) {_num(cpu.get('plain'), 0, ' µs')}"
        )
    busy = (results.get("meta", {}).get("cpu") or {}).get("busy_percent")
    during = f" ({busy:.0f}% busy during the run)" if busy is not None else ""
    return (
        f"RabbitMQ, the endpoint and the relay share {_cores(results)}{during}, so a relay's msg/s "
        "follows the CPU each message costs all of them, of which the CPU/msg column is the "
        "relay's own share. In this run: " + "; ".join(figures) + ". Per message (a) does more than "
        "(b): it signs each request (Standard Webhooks), records each attempt in the attempt log "
        "and keeps statistics and metrics for its consumer; what the attempt log costs is in "
        "the Feature costs table."
    )


def _floor_note(results: dict[str, Any], s: dict[str, Any]) -> str:
    figures = []
    for size in _relay_sizes(s):
        cpu = s.get("cpu", {}).get(size, {})
        who, mine = _efficient(cpu)
        figures.append(
            f"{_size(int(size))}: {who} {_num(mine, 0, ' µs')} against "
            f"{_num(cpu.get('broker_only'), 0)} + {_num(cpu.get('http_only'), 0)} µs"
        )
    return (
        "The floor is two bare clients: one consumes and acks with no HTTP, the other POSTs the same "
        "bodies with no broker. Whatever a relay does beyond that per message (reading the "
        "delivery, building the request, settling the ack, its own bookkeeping) is above the "
        "floor. In this run: " + "; ".join(figures) + "."
    )


def _latency_note(results: dict[str, Any], s: dict[str, Any]) -> str:
    lat = s.get("latency", {})
    a, b = lat.get("workerrmq", {}), lat.get("plain", {})
    return (
        f"p50 / p99 in this run: (a) {_num(a.get('p50_ms'), 2)} / {_num(a.get('p99_ms'), 2)} ms, "
        f"(b) {_num(b.get('p50_ms'), 2)} / {_num(b.get('p99_ms'), 2)} ms. A p99 far above the p50 is "
        "a backlog: the relay fell behind the publishing rate for a while, as it does when other "
        "processes take the CPU (see the CPU line above; `--wait-quiet` waits for a quiet machine)."
    )


def _publish_single_note(results: dict[str, Any], s: dict[str, Any]) -> str:
    pub = s.get("publish", {})
    return (
        "WorkerRMQ answers a publish only after the broker's publisher confirm (a persistent "
        "message is confirmed once it is written to disk); the management API answers without "
        "waiting for one. Each request also passes the API's HTTP server, the API-key check and "
        f"the access log, in processes that share {_cores(results)} with RabbitMQ and the clients. "
        f"In this run: {_num(pub.get('api_single'))} against {_num(pub.get('mgmt_single'))} msg/s."
    )


def _publish_batch_note(results: dict[str, Any], s: dict[str, Any]) -> str:
    pub = s.get("publish", {})
    return (
        "The row `ceiling` publishes the same batches straight from aiormq with confirms, with no "
        "HTTP and no JSON; both wait for RabbitMQ to confirm each persistent message, and RabbitMQ "
        f"shares {_cores(results)} with the publishers. In this run: "
        f"{_num(pub.get('api_batch'))} against {_num(pub.get('amqp_batch'))} msg/s."
    )


def _scale_note(results: dict[str, Any], s: dict[str, Any]) -> str:
    """Start-up time, memory and idle CPU over the consumer counts this run measured."""
    points = {c: p for c, p in s.get("scale", {}).items() if p.get("consuming_seconds") is not None}
    curve = "; ".join(
        f"{c:,}: {_num(p.get('consuming_seconds'), 1, ' s')}, {_num(p.get('rss_mb'), 0, ' MB')}, "
        f"{_num(p.get('idle_cpu_percent'), 1, '%')} idle CPU"
        for c, p in sorted(points.items())
    )
    slope = ""
    with_rss = sorted(c for c, p in points.items() if p.get("rss_mb") is not None)
    if len(with_rss) >= 2 and with_rss[-1] > with_rss[0]:
        low, high = with_rss[0], with_rss[-1]
        per = (points[high]["rss_mb"] - points[low]["rss_mb"]) / (high - low) * 1024
        slope = f" Between {low:,} and {high:,} consumers the RSS grew by {per:,.0f} KB per consumer."
    return (
        "A cold start gives each consumer a channel (a connection carries at most the broker's "
        "channel_max, 2,047 by default, so thousands take several) and on it checks the queue, "
        "declares the dead-letter queue, sets the prefetch and starts consuming: round trips "
        "to the broker, overlapped but bound by how fast RabbitMQ answers them on these cores. "
        "Each consumer costs memory (its channel, its runner) and, idle, some periodic work "
        "(statistics, checks of the definitions, heartbeats on each connection). In this run "
        "(time until all consume, RSS, idle CPU): " + (curve or "no point measured") + "." + slope
    )


#: Why a target may be missed, by target key: each shown under the targets table for a missed one.
LIMITS: dict[str, Callable[[dict[str, Any], dict[str, Any]], str]] = {
    "cpu_200": _relay_note,
    "cpu_16384": _relay_note,
    "defaults_200": _relay_note,
    "defaults_16384": _relay_note,
    "floor_200": _floor_note,
    "floor_16384": _floor_note,
    "latency_p99": _latency_note,
    "publish_single": _publish_single_note,
    "publish_batch": _publish_batch_note,
    **{
        f"scale_{count}_{figure}": _scale_note
        for count in (1000, 10000)
        for figure in ("time", "rss", "idle")
    },
}


def _and(counts: Sequence[int]) -> str:
    """``100, 1,000 and 5,000``."""
    names = [f"{c:,}" for c in counts]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _not_measured(results: dict[str, Any], unmeasured: Sequence[Target]) -> list[str]:
    """Why the scale targets of *unmeasured* have no figure: the counts this run's curve had."""
    counts = sorted({int(t.key.split("_")[1]) for t in unmeasured if t.key.startswith("scale_")})
    if not counts:
        return []
    scale = results.get("scale") or {}
    planned = results.get("meta", {}).get("plan", {}).get("scale_counts") or []
    if "scale" not in results or "error" in scale:
        why = scale.get("error") or "the scale case was not run"
        return [f"No scale figure: {why}."]
    points = scale_points(results)
    notes = []
    absent = [c for c in counts if c not in points and c not in planned]
    if absent:
        notes.append(
            f"This run's scale curve had {_and(sorted(points)) or 'no'} consumers (`--scale-counts`), "
            f"not {_and(absent)}; the full run's default is {','.join(map(str, SCALE_COUNTS))}."
        )
    for count in counts:
        if count in absent:
            continue
        errors = [r["error"] for r in (points.get(count) or {}).get("runs") or () if "error" in r]
        if count not in points:
            notes.append(f"{count:,} consumers were not measured: a smaller count failed before it.")
        elif errors:
            notes.append(f"{count:,} consumers: every run failed; the first: {errors[0][:300]}")
    return notes


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
        out["cpu"] = {
            size: {c: _med(runs, "cpu_us_per_msg") for c, runs in by_contender.items()}
            for size, by_contender in relay.items()
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
    out["scale"] = {
        count: {k: _med(point.get("runs"), k) for k in SCALE_FIGURES}
        for count, point in scale_points(results).items()
    }
    return out


#: What the scale curves measure at each point.
SCALE_FIGURES = ("consuming_seconds", "rss_mb", "largest_process_rss_mb", "idle_cpu_percent", "stop_seconds")


def scale_points(results: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The scale case's points by consumer count (a run of the older single-count case is one
    point, measured with the worker's default engine processes)."""
    scale = results.get("scale") or {}
    if "error" in scale:
        return {}
    if "points" in scale:
        return {
            int(count): point for count, point in sorted(scale["points"].items(), key=lambda i: int(i[0]))
        }
    if scale.get("consumers"):
        return {
            int(scale["consumers"]): {
                "runs": scale.get("runs"),
                "define_seconds": scale.get("define_seconds"),
            }
        }
    return {}


def _efficient(cpu: dict[str, Any]) -> tuple[str, float | None]:
    """The WorkerRMQ contender whose CPU/msg the efficiency targets use: one engine process
    when measured, else the default worker."""
    if cpu.get("workerrmq_1p") is not None:
        return "(a1)", cpu["workerrmq_1p"]
    return "(a)", cpu.get("workerrmq")


def targets(results: dict[str, Any]) -> list[Target]:
    """The targets table: each target with what was measured and the verdict."""
    s = summarize(results)
    rows: list[Target] = []
    for size in ("200", "16384"):
        cpu = s.get("cpu", {}).get(size, {})
        who, mine = _efficient(cpu)
        plain = cpu.get("plain")
        rows.append(
            Target(
                f"cpu_{size}",
                f"relay {_size(int(size))}: CPU per message, one engine process "
                "(`--processes 1`), vs (b) plain relay",
                "≤ 0.7×",
                f"{who} {_num(mine, 0, ' µs')} vs {_num(plain, 0, ' µs')} = ×{_num(_ratio(mine, plain), 2)}",
                _ratio(mine, plain),
                0.7,
                False,
            )
        )
    for size in ("200", "16384"):
        cpu = s.get("cpu", {}).get(size, {})
        who, mine = _efficient(cpu)
        parts = (cpu.get("broker_only"), cpu.get("http_only"))
        floor = sum(parts) if None not in parts else None  # type: ignore[arg-type]
        rows.append(
            Target(
                f"floor_{size}",
                f"relay {_size(int(size))}: CPU per message vs the floor (broker-only + HTTP-only)",
                "≤ 1.3×",
                f"{who} {_num(mine, 0, ' µs')} vs {_num(parts[0], 0)} + {_num(parts[1], 0)} µs "
                f"= ×{_num(_ratio(mine, floor), 2)}",
                _ratio(mine, floor),
                1.3,
                False,
            )
        )
    for size in ("200", "16384"):
        relay = s.get("relay", {}).get(size, {})
        a0, b = relay.get("workerrmq_defaults"), relay.get("plain")
        rows.append(
            Target(
                f"defaults_{size}",
                f"relay {_size(int(size))}: (a0) seed's `/createConsumer` defaults vs (b) plain relay",
                "≥ 1.3×",
                f"{_num(a0)} vs {_num(b)} msg/s = ×{_num(_ratio(a0, b), 2)}",
                _ratio(a0, b),
                1.3,
                True,
            )
        )
    rows += _feature_targets(s)
    lat = s.get("latency", {})
    a99, b99 = (lat.get(c, {}).get("p99_ms") for c in ("workerrmq", "plain"))
    rows.append(
        Target(
            "latency_p99",
            "latency at 1,000 msg/s: p99 of (a) vs (b) plain relay",
            "≤ 1.5×",
            f"{_num(a99, 2, ' ms')} vs {_num(b99, 2, ' ms')} = ×{_num(_ratio(a99, b99), 2)}",
            _ratio(a99, b99),
            1.5,
            False,
        )
    )
    pub = s.get("publish", {})
    single = _ratio(pub.get("api_single"), pub.get("mgmt_single"))
    rows.append(
        Target(
            "publish_single",
            "single-message publish: WorkerRMQ API vs management API",
            "≥ 2×",
            f"{_num(pub.get('api_single'))} vs {_num(pub.get('mgmt_single'))} msg/s = ×{_num(single, 2)}",
            single,
            2.0,
            True,
        )
    )
    batch = _ratio(pub.get("api_batch"), pub.get("amqp_batch"))
    rows.append(
        Target(
            "publish_batch",
            "batch publish: WorkerRMQ API vs the AMQP ceiling",
            "≥ 90%",
            f"{_num(pub.get('api_batch'))} vs {_num(pub.get('amqp_batch'))} msg/s = {_num(_pct(batch))}%",
            batch,
            0.9,
            True,
        )
    )
    rows += _scale_targets(s.get("scale", {}), (results.get("scale") or {}).get("processes"))
    return rows


def _feature_targets(s: dict[str, Any]) -> list[Target]:
    """Batches raise (a)'s throughput at least 3× at 200 B; the attempt log costs (a) at most 5%
    of its throughput (a against the same consumer on a worker without the log)."""
    relay, cpu = s.get("relay", {}), s.get("cpu", {})
    a, batch = (relay.get("200", {}).get(c) for c in ("workerrmq", "batch"))
    rows = [
        Target(
            "batch_200",
            "relay 200 B: (a) with batches of 100 vs (a)",
            "≥ 3×",
            f"{_num(batch)} vs {_num(a)} msg/s = ×{_num(_ratio(batch, a), 2)}",
            _ratio(batch, a),
            3.0,
            True,
        )
    ]
    for size in ("200", "16384"):
        with_log, without = (relay.get(size, {}).get(c) for c in ("workerrmq", "no_attempt_log"))
        cpu_with, cpu_without = (cpu.get(size, {}).get(c) for c in ("workerrmq", "no_attempt_log"))
        rows.append(
            Target(
                f"attempt_log_{size}",
                f"relay {_size(int(size))}: (a) with the attempt log vs (a) on a worker without it "
                "(`ATTEMPT_LOG=false`)",
                "≥ 0.95× (≤ 5% lost)",
                f"{_num(with_log)} vs {_num(without)} msg/s = ×{_num(_ratio(with_log, without), 2)}; "
                f"CPU/msg {_num(cpu_with, 0, ' µs')} vs {_num(cpu_without, 0, ' µs')}",
                _ratio(with_log, without),
                0.95,
                True,
            )
        )
    return rows


def _scale_targets(scale: dict[int, dict[str, float | None]], processes: int | None) -> list[Target]:
    rows = []
    on = "one worker process" if processes == 1 else "`workerrmq worker`"
    limits = {1000: (10.0, 200.0, None), 10000: (30.0, 800.0, 10.0)}
    for count, (seconds, mb, idle) in limits.items():
        point = scale.get(count, {})
        key = f"scale_{count}"
        rows.append(
            Target(
                f"{key}_time",
                f"scale: {count:,} consumers on {on}, all consuming after a cold start",
                f"≤ {seconds:g} s",
                _num(point.get("consuming_seconds"), 2, " s"),
                point.get("consuming_seconds"),
                seconds,
                False,
            )
        )
        rows.append(
            Target(
                f"{key}_rss",
                f"scale: worker RSS with {count:,} consumers",
                f"≤ {mb:,.0f} MB",
                _num(point.get("rss_mb"), 0, " MB"),
                point.get("rss_mb"),
                mb,
                False,
            )
        )
        if idle is not None:
            rows.append(
                Target(
                    f"{key}_idle",
                    f"scale: idle CPU with {count:,} consumers",
                    f"≤ {idle:g}% of a core",
                    _num(point.get("idle_cpu_percent"), 1, "%"),
                    point.get("idle_cpu_percent"),
                    idle,
                    False,
                )
            )
    return rows


def _pct(ratio: float | None) -> float | None:
    return ratio * 100 if ratio is not None else None


# -- Markdown --------------------------------------------------------------------------------


def markdown(results: dict[str, Any], history: Sequence[dict[str, Any]] = ()) -> str:
    """PERFORMANCE.md: the targets, the across-runs table from *history*, then each case."""
    meta = results.get("meta", {})
    plan = meta.get("plan", {})
    versions = meta.get("versions", {})
    runs = plan.get("runs", "?")
    lines: list[str] = [
        "# Performance",
        "",
        "Generated by `./run.sh bench` (`python -m bench.run`): every",
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
        "## Against the targets",
        "",
        "| target | needed | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    rows = targets(results)
    for t in rows:
        lines.append(f"| {t.what} | {t.needed} | {t.measured} | {t.verdict} |")
    met = sum(t.met is True for t in rows)
    missed = [t for t in rows if t.met is False]
    unmeasured = [t for t in rows if t.met is None]
    lines += [
        "",
        f"{met} of {len(rows)} targets met" + (f", {len(unmeasured)} not measured." if unmeasured else "."),
    ]
    for reason in _not_measured(results, unmeasured):
        lines += ["", reason]
    if missed:
        lines += [
            "",
            "Missed: "
            + "; ".join(
                f"{t.what} ({t.verdict.replace('**', '').replace('missed', '').strip(': ')})" for t in missed
            )
            + ".",
        ]
        summary = summarize(results)
        notes = [(t, LIMITS[t.key](results, summary)) for t in missed if t.key in LIMITS]
        if notes:
            lines += ["", "What they depend on, with this run's figures:", ""]
            shown: dict[str, str] = {}
            for t, note in notes:
                lines.append(f"- **{t.what}**: " + (f"as for {shown[note]}." if note in shown else note))
                shown.setdefault(note, t.what)
    lines += ["", "![The benchmark's medians](performance.png)", ""]
    lines += _history_section(history)
    lines += _relay_section(results) + _feature_section(results)
    lines += _latency_section(results) + _publish_section(results)
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
        f"- CPU during the run (100% = all {meta.get('cpus', '?')} cores): {cpu['busy_percent']:.0f}% busy; "
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
        "system) of the contender's own processes per message over the whole run (see How it "
        "is measured), which depends far less than msg/s on what else the machine was doing "
        "(RabbitMQ's and the endpoint's share is not in it). † a run was stopped at the time "
        "limit and counted as it stood.",
        "",
    ]
    return lines


def _size(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 else f"{size} B"


#: The rows of the feature costs table: (a) with one feature on, (a) without the attempt log, and
#: (a) delivering through pyreqwest.
FEATURE_CONTENDERS = ("batch", "reply", "filter", "cloudevents", "auth", "no_attempt_log", "reqwest")


def _feature_section(results: dict[str, Any]) -> list[str]:
    """Each feature on the (a) consumer beside the plain (a) consumer of the same run."""
    relay = results.get("relay")
    lines = ["## Feature costs", ""]
    if not relay or "error" in relay:
        return lines + [f"Not measured: {(relay or {}).get('error', 'case not run')}", ""]
    sizes = list(relay)
    measured = [c for c in FEATURE_CONTENDERS if any(relay[size].get(c) for size in sizes)]
    if not measured or not any(relay[size].get("workerrmq") for size in sizes):
        return lines + ["Not measured: run the relay case with `workerrmq` and a feature contender.", ""]
    lines += [
        "The (a) consumer with one feature on, drained like (a) in the same run (the same kind of worker, "
        "same endpoint, same messages): msg/s, the worker's CPU per message, and both as a "
        "multiple of plain (a)'s (msg/s ÷ (a) above 1 is faster than (a); CPU ÷ (a) above 1 "
        "costs more per message). For batches, a message is an item of a batch request.",
        "",
    ]
    header, rule = "| contender |", "| --- |"
    for size in sizes:
        label = _size(int(size))
        header += f" {label} msg/s | {label} ÷ (a) | {label} CPU/msg | {label} CPU ÷ (a) |"
        rule += " ---: | ---: | ---: | ---: |"
    lines += [header, rule]
    for contender in ("workerrmq", *measured):
        row = f"| {CONTENDER_NAMES[contender]} |"
        for size in sizes:
            runs = relay[size].get(contender)
            rate, cpu = _med(runs), _med(runs, "cpu_us_per_msg")
            a_rate = _med(relay[size].get("workerrmq"))
            a_cpu = _med(relay[size].get("workerrmq"), "cpu_us_per_msg")
            cell = _num(rate) + _spread(runs)
            if _errors(runs):
                cell += f" [{_errors(runs)} failed]"
            row += (
                f" {cell} | ×{_num(_ratio(rate, a_rate), 2)} | {_num(cpu, 0, ' µs')} "
                f"| ×{_num(_ratio(cpu, a_cpu), 2)} |"
            )
        lines.append(row)
    lines += ["", *_feature_notes(relay, measured)]
    return lines + [""]


def _feature_notes(relay: dict[str, Any], measured: Sequence[str]) -> list[str]:
    notes = []
    if "auth" in measured:
        fetches = [r.get("token_fetches") for size in relay for r in relay[size].get("auth") or ()]
        fetches = [f for f in fetches if f is not None]
        seen = f"{min(fetches)}–{max(fetches)}" if fetches and min(fetches) != max(fetches) else None
        counted = seen or (str(fetches[0]) if fetches else "—")
        notes.append(
            "- Endpoint auth: an OAuth2 client-credentials token from the endpoint's own token "
            f"route, good for an hour; token requests per run: {counted} (one per engine process, "
            "each caches its own), so the figure is the cached-token path: a Bearer header per "
            "request after one fetch."
        )
    if "no_attempt_log" in measured:
        notes.append(
            "- Without the attempt log: the same consumer on a worker started with "
            "`ATTEMPT_LOG=false`; what the log costs is (a) against this row (see the targets)."
        )
    if "reqwest" in measured:
        notes.append(
            "- pyreqwest: the same consumer on a worker started with `HTTP_CLIENT=reqwest`, which "
            "delivers through pyreqwest (Rust reqwest) instead of aiohttp; CPU ÷ (a) below 1 is "
            "what the other client saves per message."
        )
    for feature, text in (
        ("batch", "Batches: `batch` of at most 100 messages or 50 ms, one JSON-array request each."),
        ("reply", "Reply: each answer published with a confirm to the message's `reply_to` queue."),
        (
            "filter",
            "Filter: a CEL expression over the JSON body and the routing key, true for every "
            "message, so all are delivered and the cost is the evaluation.",
        ),
        ("cloudevents", "CloudEvents: structured mode, each body wrapped in a JSON envelope."),
    ):
        if feature in measured:
            notes.append(f"- {text}")
    return notes


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


def _killed(runs: Sequence[dict[str, Any]] | None) -> str:
    killed = sum(1 for r in runs or () if isinstance(r, dict) and r.get("stop_killed"))
    return f" (killed: {killed} of {len(runs or ())} runs)" if killed else ""


def _scale_section(results: dict[str, Any]) -> list[str]:
    scale = results.get("scale")
    lines = ["## Scale curves (case 6)", ""]
    points = scale_points(results)
    if not points:
        return lines + [f"Not measured: {(scale or {}).get('error', 'case not run')}", ""]
    processes = (scale or {}).get("processes")
    idle = (scale or {}).get("idle_seconds") or results.get("meta", {}).get("plan", {}).get("idle_seconds", 0)
    on = (
        f"`workerrmq worker --processes {processes}`"
        if processes
        else "`workerrmq worker` (its default processes)"
    )
    lines += [
        "For each count, that many consumers (one queue each, signing on) defined through the API; "
        f"then a cold start of {on}, timed until the broker has a consumer on every queue (its live "
        "counts, read with passive declares); RSS of the worker's processes after that; idle CPU "
        f"over {idle:g} s with no messages; then SIGTERM, timed until the worker has exited (killed if "
        f"it still ran {(scale or {}).get('stop_timeout', 30):g} s later). Every consumer and queue is "
        "deleted at the end.",
        "",
        "| consumers | defined through the API in | time until all consuming | worker RSS "
        "| largest process | idle CPU (one core = 100%) | stop after SIGTERM |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count, point in points.items():
        runs = point.get("runs")
        failed = f" [{_errors(runs)} failed]" if _errors(runs) else ""
        lines.append(
            f"| {count:,} | {_num(point.get('define_seconds'), 1, ' s')} "
            f"| {_num(_med(runs, 'consuming_seconds'), 2, ' s')}"
            f"{_spread(runs, 'consuming_seconds', 2)}{failed} "
            f"| {_num(_med(runs, 'rss_mb'), 0, ' MB')} "
            f"| {_num(_med(runs, 'largest_process_rss_mb'), 0, ' MB')} "
            f"| {_num(_med(runs, 'idle_cpu_percent'), 1, '%')} "
            f"| {_num(_med(runs, 'stop_seconds'), 1, ' s')}{_killed(runs)} |"
        )
    errors = [r["error"] for point in points.values() for r in point.get("runs") or () if "error" in r]
    if errors:
        lines += ["", f"First failure: {errors[0][:300]}"]
    return lines + [""]


# -- across runs -----------------------------------------------------------------------------

#: The across-runs file, beside PERFORMANCE.md: one entry per complete full run.
HISTORY_FILE = "performance-history.json"
#: The across-runs table's columns: (entry key, heading, format).
HISTORY_COLUMNS = (
    ("a_vs_b_200", "(a) ÷ (b) msg/s, 200 B", "×{:.2f}"),
    ("cpu_vs_b_200", "CPU/msg ÷ (b), 200 B", "×{:.2f}"),
    ("floor_multiple_200", "CPU/msg ÷ floor, 200 B", "×{:.2f}"),
    ("defaults_vs_b_200", "(a0) defaults ÷ (b), 200 B", "×{:.2f}"),
    ("p99_vs_b", "p99 ÷ (b)", "×{:.2f}"),
    ("publish_vs_mgmt", "publish ÷ management API", "×{:.2f}"),
    ("batch_vs_amqp", "batch ÷ AMQP", "{:.0%}"),
    ("relay_batch_vs_a_200", "(a) batches ÷ (a), 200 B", "×{:.2f}"),
    ("attempt_log_200", "(a) ÷ (a) without attempt log, 200 B", "×{:.2f}"),
    ("reqwest_cpu_200", "CPU/msg (a) reqwest ÷ (a), 200 B", "×{:.2f}"),
    ("scale_1000", "1,000 consumers", "{}"),
    ("scale_10000", "10,000 consumers", "{}"),
)


def load_history(path: Path) -> list[dict[str, Any]]:
    """The entries of *path*, oldest first ([] when it does not exist)."""
    import json

    try:
        return list(json.loads(path.read_text()))
    except FileNotFoundError:
        return []


def history_entry(results: dict[str, Any]) -> dict[str, Any]:
    """This run's row of the across-runs table."""
    meta = results.get("meta", {})
    git = meta.get("git") or {}
    s = summarize(results)
    relay, cpu = s.get("relay", {}).get("200", {}), s.get("cpu", {}).get("200", {})
    who, mine = _efficient(cpu)
    parts = (cpu.get("broker_only"), cpu.get("http_only"))
    lat, pub = s.get("latency", {}), s.get("publish", {})
    rows = targets(results)
    commit = git.get("commit") or "?"
    if git.get("changed_files"):
        commit += f"+{git['changed_files']}"
    return _rounded(
        {
            "commit": commit,
            "date": meta.get("date"),
            "note": meta.get("note") or "",
            "efficient_contender": who,
            "a_vs_b_200": _ratio(relay.get("workerrmq"), relay.get("plain")),
            "cpu_vs_b_200": _ratio(mine, cpu.get("plain")),
            "floor_multiple_200": _ratio(mine, sum(parts) if None not in parts else None),  # type: ignore[arg-type]
            "defaults_vs_b_200": _ratio(relay.get("workerrmq_defaults"), relay.get("plain")),
            "p99_vs_b": _ratio(*(lat.get(c, {}).get("p99_ms") for c in ("workerrmq", "plain"))),
            "publish_vs_mgmt": _ratio(pub.get("api_single"), pub.get("mgmt_single")),
            "batch_vs_amqp": _ratio(pub.get("api_batch"), pub.get("amqp_batch")),
            "relay_batch_vs_a_200": _ratio(relay.get("batch"), relay.get("workerrmq")),
            "attempt_log_200": _ratio(relay.get("workerrmq"), relay.get("no_attempt_log")),
            "reqwest_cpu_200": _ratio(cpu.get("reqwest"), cpu.get("workerrmq")),
            "scale_processes": (results.get("scale") or {}).get("processes"),
            **{
                f"scale_{count}": [point.get("consuming_seconds"), point.get("rss_mb")]
                for count, point in s.get("scale", {}).items()
            },
            "met": sum(t.met is True for t in rows),
            "measured": sum(t.met is not None for t in rows),
            "targets": len(rows),
        }
    )


def _rounded(value: Any) -> Any:
    """*value* with every float to 4 significant digits (the history is read by people too)."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _history_section(history: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "## Across runs",
        "",
        "One row per complete full run (`./run.sh bench`, every case and contender), appended to "
        f"`{HISTORY_FILE}` by the run itself, so a regression shows. Ratios are within each run. "
        "CPU/msg is (a1), one engine process, where it was measured, else (a) (marked). Scale: "
        "time until all consume and RSS, on one worker process (older runs: the default two).",
        "",
    ]
    if not history:
        return lines + ["No full run recorded yet.", ""]
    lines += [
        "| commit | date | what changed | "
        + " | ".join(h for _, h, _ in HISTORY_COLUMNS)
        + " | targets met |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in HISTORY_COLUMNS) + " | ---: |",
    ]
    for entry in history:
        cells = [_history_cell(entry, key, fmt) for key, _, fmt in HISTORY_COLUMNS]
        lines.append(
            f"| `{entry.get('commit', '?')}` | {entry.get('date') or '—'} | {entry.get('note') or '—'} | "
            + " | ".join(cells)
            + f" | {entry.get('met', '?')} of {entry.get('measured', '?')} measured |"
        )
    return lines + [""]


def _history_cell(entry: dict[str, Any], key: str, fmt: str) -> str:
    value = entry.get(key)
    if value is None:
        return "—"
    if key.startswith("scale_"):
        seconds, mb = value
        text = f"{_num(seconds, 1, ' s')}, {_num(mb, 0, ' MB')}"
        return text + (" (2 processes)" if not entry.get("scale_processes") else "")
    text = fmt.format(value)
    if key in ("cpu_vs_b_200", "floor_multiple_200") and entry.get("efficient_contender") == "(a)":
        text += " (a)"
    return text


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
        "- **(a1)**: the same with `workerrmq worker --processes 1`, one engine process (the "
        "efficiency targets compare its CPU per message). **(a0)**: a consumer made by the seed's "
        "`POST /createConsumer` with nothing but the queue and the endpoint: every other field at "
        "its default, no signing secret.",
        f"- **(b) plain relay**: `bench/contenders/plain_relay.py`, aio-pika + aiohttp on uvloop, "
        f"prefetch {prefetch}, one keep-alive session, one ack per message after a 2xx.",
        "- **(c) seed design**: `bench/contenders/seed_relay.py`, pika `BlockingConnection`, "
        "prefetch 1, `requests.post` per message (a new connection each), ack after a 2xx.",
        f"- **(d) floor**: `broker_only.py` consumes and acks with aio-pika "
        f"(prefetch {prefetch}, one ack each, no HTTP); `http_only.py` POSTs the same bodies "
        f"with {prefetch} in flight "
        "on one aiohttp session, no broker.",
        "- Each relay run gets a fresh queue; the contenders' order rotates between runs. All "
        f"processes share {_cores(results)} with RabbitMQ, the endpoint and the benchmark driver.",
        "- **CPU per message**: the CPU time (user + system, all threads and processes) a "
        "contender used from a sample taken before its first message to one after its last, "
        "divided by the messages. A contender process is sampled once it has loaded its "
        "libraries and before it connects, and at its exit; the worker, which keeps running, "
        "once it is quiet before the consumer is made, and at the end of its last busy moment "
        f"within {WORKER_TAIL:g} s of the last delivery (its acks and attempt-log writes).",
        "- Raw figures of every run: `performance.json` beside this file.",
        "",
    ]


# -- chart -----------------------------------------------------------------------------------


COLORS = {
    "workerrmq": "#d62728",
    "workerrmq_1p": "#ff7f0e",
    "workerrmq_defaults": "#e377c2",
    "batch": "#17becf",
    "reply": "#bcbd22",
    "filter": "#8c564b",
    "cloudevents": "#aec7e8",
    "auth": "#c5b0d5",
    "no_attempt_log": "#ff9896",
    "reqwest": "#98df8a",
    "plain": "#1f77b4",
    "seed": "#7f7f7f",
    "broker_only": "#2ca02c",
    "http_only": "#9467bd",
}


def chart(results: dict[str, Any], path: Path) -> None:
    """performance.png: relay, CPU per message, latency, publishing, isolation, scale curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(results)
    fig, axes = plt.subplots(3, 3, figsize=(17, 14))
    title = "WorkerRMQ benchmark"
    if results.get("meta", {}).get("quick"):
        title += " — QUICK MODE, not the benchmark"
    fig.suptitle(f"{title}: medians, {results.get('meta', {}).get('date', '')}")
    for ax, size in zip(axes[0][:2], ("200", "16384"), strict=True):
        _relay_panel(ax, s.get("relay", {}).get(size, {}), size)
    _latency_panel(axes[0][2], s.get("latency", {}))
    _cpu_panel(axes[1][0], s.get("cpu", {}))
    _publish_panel(axes[1][1], s.get("publish", {}))
    _isolation_panel(axes[1][2], s.get("isolation", {}))
    _scale_panels(axes[2], s.get("scale", {}), (results.get("scale") or {}).get("processes"))
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _relay_panel(ax: Any, values: dict[str, float | None], size: str) -> None:
    keys = list(CONTENDER_NAMES)
    heights = [values.get(k) or 0 for k in keys]
    bars = ax.bar([SHORT_NAMES[k] for k in keys], heights, color=[COLORS[k] for k in keys])
    _label_bars(ax, bars, heights, "{:,.0f}")
    ax.set_title(f"Relay throughput, {_size(int(size))} messages")
    ax.set_ylabel("messages/s")
    ax.tick_params(axis="x", rotation=30, labelsize=8)


def _latency_panel(ax: Any, lat: dict[str, dict[str, float | None]]) -> None:
    keys = [k for k in ("workerrmq", "plain") if k in lat]
    width = 0.25
    for i, stat in enumerate(("p50_ms", "p99_ms", "max_ms")):
        heights = [lat[k].get(stat) or 0 for k in keys]
        bars = ax.bar(
            [j + (i - 1) * width for j in range(len(keys))], heights, width, label=stat.replace("_ms", "")
        )
        _label_bars(ax, bars, heights, "{:.1f}")
    ax.set_xticks(range(len(keys)), [SHORT_NAMES[k] for k in keys])
    plain_p99 = lat.get("plain", {}).get("p99_ms")
    if plain_p99:
        ax.axhline(
            plain_p99 * 1.5, color="orange", linestyle=":", linewidth=1, label="(a) p99 limit: 1.5× (b)"
        )
    ax.set_yscale("log")
    tallest = max([lat[k].get(stat) or 0 for k in keys for stat in ("p50_ms", "p99_ms", "max_ms")] + [1])
    ax.set_ylim(top=tallest * 30)  # room for the legend above the bars
    ax.set_ylabel("ms (log)")
    ax.set_title("Publish-to-endpoint latency at 1,000 msg/s")
    ax.legend(fontsize=7, loc="upper left", ncol=2)


def _cpu_panel(ax: Any, cpu: dict[str, dict[str, float | None]]) -> None:
    """CPU per message of each contender (the seed's design, far above, left out)."""
    keys = [k for k in CONTENDER_NAMES if k != "seed"]
    width = 0.4
    for i, size in enumerate(("200", "16384")):
        values = cpu.get(size, {})
        heights = [values.get(k) or 0 for k in keys]
        bars = ax.bar(
            [j + (i - 0.5) * width for j in range(len(keys))],
            heights,
            width,
            color=[COLORS[k] for k in keys],
            alpha=1.0 if i == 0 else 0.55,
            label=_size(int(size)),
        )
        _label_bars(ax, bars, heights, "{:.0f}")
        parts = (values.get("broker_only"), values.get("http_only"))
        if None not in parts:
            floor = sum(parts)  # type: ignore[arg-type]
            ax.axhline(
                floor * 1.3,
                color="orange" if i == 0 else "gold",
                linestyle=":",
                linewidth=1,
                label=f"1.3× floor, {_size(int(size))}",
            )
    ax.set_xticks(range(len(keys)), [SHORT_NAMES[k] for k in keys], rotation=30, fontsize=8)
    ax.set_ylabel("µs of the contender's CPU per message")
    ax.set_title("Relay CPU per message (solid 200 B, light 16 KB)")
    ax.legend(fontsize=7)


def _publish_panel(ax: Any, pub: dict[str, float | None]) -> None:
    keys = list(PUBLISH_NAMES)
    heights = [pub.get(k) or 0 for k in keys]
    bars = ax.bar(
        ["API single", "mgmt API single", "API batch", "AMQP batch\n(ceiling)"],
        heights,
        color=["#d62728", "#7f7f7f", "#ff9896", "#c7c7c7"],
    )
    _label_bars(ax, bars, heights, "{:,.0f}")
    if pub.get("mgmt_single"):
        ax.axhline(pub["mgmt_single"] * 2, color="green", linestyle=":", linewidth=1, label="single: 2× mgmt")
    if pub.get("amqp_batch"):
        ax.axhline(
            pub["amqp_batch"] * 0.9, color="orange", linestyle=":", linewidth=1, label="batch: 90% AMQP"
        )
    if any(heights):
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_ylabel("messages/s (log)")
    ax.set_title("Publishing")


def _isolation_panel(ax: Any, iso: dict[str, float | None]) -> None:
    heights = [iso.get(k) or 0 for k in ISOLATION_NAMES]
    bars = ax.bar(
        ["alone", "+ failing\n(breaker on)", "+ failing\n(breaker off)"],
        heights,
        color=["#d62728", "#ff9896", "#ffbb78"],
    )
    _label_bars(ax, bars, heights, "{:,.0f}")
    if iso.get("alone"):
        ax.axhline(iso["alone"] * 0.9, color="orange", linestyle=":", linewidth=1, label="90% of alone")
        ax.legend(fontsize=8)
    ax.set_ylabel("healthy consumer, messages/s")
    ax.set_title("Isolation")


def _scale_panels(axes: Any, scale: dict[int, dict[str, float | None]], processes: int | None) -> None:
    """Three curves over the consumer count, with the targets at 1,000 and 10,000 as crosses."""
    on = f"{processes} worker process" if processes else "the worker's default processes"
    panels = (
        ("consuming_seconds", "seconds until all consume", {1000: 10, 10000: 30}),
        ("rss_mb", "worker RSS, MB", {1000: 200, 10000: 800}),
        ("idle_cpu_percent", "idle CPU, % of a core", {10000: 10}),
    )
    counts = sorted(scale)
    for ax, (key, label, limits) in zip(axes, panels, strict=True):
        points = [(c, scale[c].get(key)) for c in counts if scale[c].get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", color="#d62728", label="measured")
            for x, y in points:
                ax.annotate(f"{y:,.1f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.scatter(
            list(limits), list(limits.values()), marker="x", color="orange", s=60, label="target (at most)"
        )
        ax.set_xscale("log")
        ax.set_xlim(50, 20_000)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("consumers (log)")
        ax.set_ylabel(label)
        ax.set_title(f"Scale: {label}, {on}", fontsize=10)
        ax.legend(fontsize=8)


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


def write(results: dict[str, Any], out: Path, history: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Write PERFORMANCE.md (with the across-runs table of *history*) and performance.png."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "PERFORMANCE.md"
    png = out / "performance.png"
    md.write_text(markdown(results, history))
    chart(results, png)
    return [md, png]


if __name__ == "__main__":
    import json
    import sys

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/performance.json")
    history = load_history(source.parent / HISTORY_FILE)
    print("\n".join(map(str, write(json.loads(source.read_text()), source.parent, history))))
