"""Run the benchmark and write docs/PERFORMANCE.md and docs/performance.png.

    python -m bench.run                 the full benchmark (several minutes)
    python -m bench.run --quick         a tiny version (under a minute), for the smoke test
    python -m bench.run --out DIR       write the report into DIR instead of docs/
    python -m bench.run --cases relay,latency   only some cases
    python -m bench.run --compare REV   the working tree against commit REV (relay, publish)
    python -m bench.run --cases scale --scale-counts 1000,10000 --runs 1   the scale curves alone

It starts what it needs (the endpoint, ``workerrmq api``, ``workerrmq worker``,
the contenders), all on loopback, against the RabbitMQ at RABBITMQ_URL and
RABBITMQ_MANAGEMENT_URL (default guest:guest@127.0.0.1). Every queue it creates
is named ``bench-<run id>-...`` and deleted; every process it starts is stopped,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import uvloop

from bench import compare, report
from bench.cases import CASES, RELAY_CONTENDERS, WORKER_CONTENDERS, Context
from bench.common import (
    ROOT,
    SCALE_COUNTS,
    ApiClient,
    Broker,
    Cleanup,
    CpuAccount,
    EndpointClient,
    Plan,
    Proc,
    Progress,
    basic_auth,
    free_port,
    require_loopback,
    wait_until,
)

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_MANAGEMENT = "http://guest:guest@127.0.0.1:15672"
#: Variables of WorkerRMQ that bench.run sets itself for the processes it starts.
_OWN_VARIABLES = (
    "RABBITMQ_URL",
    "RABBITMQ_MANAGEMENT_URL",
    "DATABASE_URL",
    "SECRET_KEY",
    "DEFAULT_TARGET_URL",
    "EPINTOWER_API_PROCESS_ORDER",
    "WORKERRMQ_API_KEY",
    "BIND",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "MAX_BATCH",
    "MAX_REQUEST_BYTES",
    "API_WORKERS",
    "API_THREADS",
    "BLOCK_PRIVATE_TARGETS",
    "WORKER_BIND",
    "ATTEMPT_LOG",
    "HTTP_CLIENT",
    "PYTHONPATH",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny version: 500 messages, 1 run, 20 consumers, short phases (with --compare: "
        "2,000 messages, 2 runs, about a minute)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where PERFORMANCE.md, performance.png, performance.json and performance-history.json "
        "go (default docs/); with --compare, where compare.json goes (default: printed only)",
    )
    parser.add_argument("--runs", type=int, help="runs per case (default 3, 1 with --quick)")
    parser.add_argument("--cases", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument(
        "--contenders",
        help=f"relay contenders to run (comma-separated subset of: {', '.join(RELAY_CONTENDERS)}; "
        "with --compare, of the WorkerRMQ ones, default workerrmq)",
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="run the relay and publish cases for the working tree and for git revision REV "
        "(exported with 'git archive'), interleaved, and print each side's medians and the "
        "ratios working tree / REV",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the machine to be idle (other "
        "processes use under 15%% of the CPU for 5 s in a row)",
    )
    parser.add_argument(
        "--sizes", help="message sizes of the relay case, bytes, comma-separated (default 200,16384)"
    )
    parser.add_argument("--messages", type=int, help="messages per throughput run (default 20,000)")
    parser.add_argument(
        "--scale-counts",
        help="consumers on one worker process at each point of the scale curves, comma-separated "
        f"(default {','.join(map(str, SCALE_COUNTS))}, 20 with --quick; each point is a cold start "
        "per run; past about 2,000 the worker's channels take several connections)",
    )
    parser.add_argument(
        "--note",
        default="",
        help="what changed, for this run's row of the across-runs table (full runs only)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run 'workerrmq api' and 'workerrmq worker' under py-spy; collapsed "
        "stacks go to DIR (summarise: python -m bench.hotspots DIR/*.txt)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="run WorkerRMQ from this checkout (put on PYTHONPATH) instead of "
        "the installed one, e.g. a 'git worktree' of another commit",
    )
    parser.add_argument(
        "--worker-processes",
        type=int,
        metavar="N",
        help="run 'workerrmq worker --processes N' (default: its own default, one engine process per core)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the temporary directory with every process's log"
    )
    args = parser.parse_args(argv)
    return _check_args(parser, args)


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Defaults that depend on --compare, and a clear error for unknown names and bad counts."""
    all_cases = compare.COMPARE_CASES if args.compare else tuple(CASES)
    unknown = set((args.cases or "").split(",")) - set(all_cases) - {""}
    if unknown:
        parser.error(
            f"unknown case(s) for this run: {', '.join(sorted(unknown))} (choose from {', '.join(all_cases)})"
        )
    args.cases = args.cases or ",".join(all_cases)
    all_contenders = tuple(WORKER_CONTENDERS) if args.compare else RELAY_CONTENDERS
    unknown = set((args.contenders or "").split(",")) - set(all_contenders) - {""}
    if unknown:
        parser.error(
            f"unknown contender(s) for this run: {', '.join(sorted(unknown))} "
            f"(choose from {', '.join(all_contenders)})"
        )
    args.contenders = args.contenders or ("workerrmq" if args.compare else ",".join(all_contenders))
    if args.scale_counts:
        try:
            counts = tuple(int(c) for c in args.scale_counts.split(","))
        except ValueError:
            parser.error(f"--scale-counts: whole numbers, comma-separated, got {args.scale_counts!r}")
        if not counts or min(counts) < 1:
            parser.error("--scale-counts: every count must be at least 1")
        args.scale_counts = counts
    args.explicit_out = args.out is not None
    args.out = args.out or ROOT / "docs"
    return args


def _workerrmq_argv(*args: str, worker_processes: int | None = None) -> list[str]:
    """``workerrmq ARGS`` as users run it: the console script beside this interpreter."""
    if worker_processes and args[:1] == ("worker",):
        args = (*args, "--processes", str(worker_processes))
    script = Path(sys.executable).with_name("workerrmq")
    if script.exists():
        return [str(script), *args]
    found = shutil.which("workerrmq")
    return [found, *args] if found else [sys.executable, "-m", "workerrmq.cli", *args]


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in (
        "workerrmq",
        "aio-pika",
        "aiohttp",
        "uvloop",
        "pika",
        "requests",
        "gunicorn",
        "flask",
        "orjson",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _git(source: Path | None = None) -> dict[str, Any]:
    """The commit measured, and how many files of workerrmq/ differ from it.

    With --source DIR: DIR's commit if it is a checkout, else the first line of DIR/COMMIT
    (write it when exporting one with ``git archive``).
    """
    import subprocess

    if source is not None and not (source / ".git").exists():
        marker = source / "COMMIT"
        commit = marker.read_text().split("\n", 1)[0].strip() if marker.exists() else "unknown"
        return {"commit": commit, "changed_files": 0, "source": str(source)}
    root = source or ROOT

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "--short", "HEAD"),
            "changed_files": len(git("status", "--porcelain", "--", "workerrmq").splitlines()),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def _broker_overview(http: aiohttp.ClientSession, management_url: str) -> dict[str, str]:
    parts = urlsplit(management_url)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
    auth = {"Authorization": basic_auth(parts.username or "guest", parts.password or "guest")}
    try:
        async with http.get(f"{base}/api/overview", headers=auth) as response:
            data = await response.json()
        return {"rabbitmq": data.get("rabbitmq_version", "?"), "erlang": data.get("erlang_version", "?")}
    except (aiohttp.ClientError, ValueError):
        return {}


def _plan(args: argparse.Namespace) -> Plan:
    plan = Plan.quick_plan() if args.quick else Plan.full()
    if args.compare and args.quick:
        plan = dataclasses.replace(plan, runs=2, messages=2000)  # a ratio needs a spread
    if args.runs:
        plan = dataclasses.replace(plan, runs=args.runs)
    if args.messages:
        plan = dataclasses.replace(plan, messages=args.messages)
    if args.sizes:
        plan = dataclasses.replace(plan, sizes=tuple(int(s) for s in args.sizes.split(",")))
    if args.scale_counts:
        plan = dataclasses.replace(plan, scale_counts=args.scale_counts)
    return plan


async def run(args: argparse.Namespace, progress: Progress, cleanup: Cleanup, tmp: Path) -> dict[str, Any]:
    plan = _plan(args)
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    broker = Broker(args.amqp_url, cleanup, prefix)
    await broker.open()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            endpoint = await _start_endpoint(cleanup, http, tmp, progress)
            progress.say(f"queues are named {prefix}-*")
            if args.compare:
                source = compare.export(args.compare, tmp / "compare-source")
                progress.say(f"--compare: {args.compare} exported to {source}")
                sides = {}
                for side, side_source in (("work", args.source), ("rev", source)):
                    sides[side] = await _start_side(
                        args, plan, progress, cleanup, broker, endpoint, http, tmp / side, side_source, side
                    )
                results = await compare.run(sides, args.cases.split(","), args.contenders.split(","))
                results["meta"] = _meta(args, plan, prefix) | {
                    "sides": {side: _git(ctx.source) for side, ctx in sides.items()},
                    "revision": args.compare,
                }
                results["meta"]["versions"] = {
                    **_versions(),
                    **await _broker_overview(http, args.management_url),
                }
                return results
            ctx = await _start_side(
                args, plan, progress, cleanup, broker, endpoint, http, tmp, args.source, ""
            )
            return await _run_cases(args, ctx, http, prefix)
    finally:
        await broker.close()


async def _start_endpoint(
    cleanup: Cleanup, http: aiohttp.ClientSession, tmp: Path, progress: Progress
) -> EndpointClient:
    """The local HTTP endpoint every relay delivers to, in its own process."""
    port = free_port()
    progress.say(f"starting the endpoint (port {port})")
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    proc = cleanup.track(
        Proc(
            "endpoint",
            [sys.executable, "-m", "bench.endpoint", "--port", str(port)],
            cwd=ROOT,
            log=tmp / "logs" / "000-endpoint.log",
        )
    )
    endpoint = EndpointClient(port, http)

    async def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"the endpoint exited:\n{proc.tail()}")
        return await endpoint.ping()

    await wait_until(up, timeout=30, what="the endpoint")
    return endpoint


def _workerrmq_env(args: argparse.Namespace, tmp: Path, source: Path | None) -> dict[str, str]:
    """The environment of one WorkerRMQ's processes: its own database, API port and key, and
    with *source*, that checkout's code first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES}
    env.update(
        {
            "RABBITMQ_URL": args.amqp_url,
            "RABBITMQ_MANAGEMENT_URL": args.management_url,
            "DATABASE_URL": f"sqlite:///{tmp}/workerrmq.sqlite3",
            "WORKERRMQ_API_KEY": f"wrmq_bench_{uuid.uuid4().hex}",
            "BIND": f"127.0.0.1:{free_port()}",
            "SECRET_KEY": uuid.uuid4().hex,
            # The endpoint is on loopback; the guard against private targets must let it through.
            "BLOCK_PRIVATE_TARGETS": "false",
        }
    )
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    return env


def _check_source(env: dict[str, str], cwd: Path, source: Path) -> None:
    """Fail unless ``workerrmq`` imported with *env* in *cwd* is *source*'s own code."""
    import subprocess

    found = subprocess.run(
        [sys.executable, "-c", "import workerrmq; print(workerrmq.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    path = Path(found.stdout.strip() or "?").resolve()
    if found.returncode != 0 or not path.is_relative_to(source.resolve()):
        raise RuntimeError(
            f"workerrmq would be imported from {path}, not from {source}: {found.stderr[-500:]}"
        )


async def _start_side(
    args: argparse.Namespace,
    plan: Plan,
    progress: Progress,
    cleanup: Cleanup,
    broker: Broker,
    endpoint: EndpointClient,
    http: aiohttp.ClientSession,
    tmp: Path,
    source: Path | None,
    label: str,
) -> Context:
    """Start one WorkerRMQ (``workerrmq api``, then ``workerrmq worker``) from *source* (None:
    the installed code, which is this working tree); returns the cases' context for it."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = _workerrmq_env(args, tmp, source)
    if source is not None:
        _check_source(env, tmp, source)
    api_base = f"http://{env['BIND']}"
    ctx = Context(
        plan=plan,
        progress=progress,
        cleanup=cleanup,
        broker=broker,
        endpoint=endpoint,
        api=ApiClient(api_base, env["WORKERRMQ_API_KEY"], http),
        http=http,
        tmp=tmp,
        amqp_url=args.amqp_url,
        management_url=args.management_url,
        api_key=env["WORKERRMQ_API_KEY"],
        api_base=api_base,
        workerrmq_argv=functools.partial(_workerrmq_argv, worker_processes=args.worker_processes),
        workerrmq_env=env,
    )
    ctx.label, ctx.source = label, source
    ctx.contenders = tuple(c for c in RELAY_CONTENDERS if c in args.contenders.split(","))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        ctx.profile_dir = args.profile
    named = f" ({label}: {source or 'working tree'})" if label else ""
    progress.say(f"starting 'workerrmq api' on {env['BIND']}{named}")
    api_proc = ctx.spawn("api", _workerrmq_argv("api"), env=env, cwd=tmp, profile=True)

    async def api_up() -> bool:
        if not api_proc.alive():
            raise RuntimeError(f"'workerrmq api'{named} exited:\n{api_proc.tail()}")
        return await ctx.api.ready()

    await wait_until(api_up, timeout=60, what=f"'workerrmq api'{named} to be ready")
    progress.say(f"starting 'workerrmq worker'{named}")
    await ctx.ensure_worker()
    return ctx


def _meta(args: argparse.Namespace, plan: Plan, prefix: str) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": plan.quick,
        "plan": dataclasses.asdict(plan),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "host": socket.gethostname(),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "worker_processes": args.worker_processes,
        "queue_prefix": prefix,
        "git": _git(args.source),
    }


async def _run_cases(
    args: argparse.Namespace, ctx: Context, http: aiohttp.ClientSession, prefix: str
) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": _meta(args, ctx.plan, prefix)}
    results["meta"]["versions"] = {**_versions(), **await _broker_overview(http, args.management_url)}
    results["meta"]["note"] = args.note
    results["meta"]["complete"] = set(args.cases.split(",")) == set(CASES) and set(
        args.contenders.split(",")
    ) == set(RELAY_CONTENDERS)
    started = time.monotonic()
    for name in args.cases.split(","):
        ctx.progress.say(f"— case: {name} —")
        try:
            results[name] = await CASES[name](ctx)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - report it, go on with the next case
            ctx.progress.say(f"case {name} FAILED: {type(exc).__name__}: {exc}")
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    results["meta"]["seconds"] = round(time.monotonic() - started)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.amqp_url = os.environ.get("RABBITMQ_URL") or DEFAULT_AMQP
    args.management_url = os.environ.get("RABBITMQ_MANAGEMENT_URL") or DEFAULT_MANAGEMENT
    require_loopback(args.amqp_url, "RABBITMQ_URL")
    require_loopback(args.management_url, "RABBITMQ_MANAGEMENT_URL")
    parts = urlsplit(args.amqp_url)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=3).close()
    except OSError as exc:
        print(
            f"bench: RabbitMQ is not reachable at {parts.hostname}:{parts.port or 5672} ({exc})",
            file=sys.stderr,
        )
        return 2
    progress = Progress()
    if args.wait_quiet:
        _wait_quiet(args.wait_quiet, progress)
    load = os.getloadavg()
    busy = _cpu_busy()
    if busy > 25:
        progress.say(
            f"warning: the machine is busy ({busy:.0f}% CPU before the start); "
            "the figures will be noisy (--wait-quiet waits for a quiet machine)"
        )
    account = CpuAccount()
    cleanup = Cleanup(args.amqp_url)
    tmp = Path(tempfile.mkdtemp(prefix="workerrmq-bench-"))
    results: dict[str, Any] | None = None
    interrupted = failed = False
    progress.say(f"WorkerRMQ benchmark ({'quick' if args.quick else 'full'}); logs in {tmp}")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(_stoppable(run(args, progress, cleanup, tmp), progress))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        progress.say("interrupted: stopping everything and deleting the benchmark's queues")
    except Exception as exc:  # noqa: BLE001 - one line, then the clean-up below
        progress.say(f"bench failed: {type(exc).__name__}: {exc}")
        failed = True
    finally:
        _cleanup_patiently(cleanup, progress)
    if interrupted or failed:
        progress.say(f"stopped; no report written (logs in {tmp})")
        return 130 if interrupted else 1
    assert results is not None
    results["meta"]["load_average_at_start"] = [round(x, 2) for x in load]
    results["meta"]["cpu"] = account.finish()
    if args.compare:
        print(compare.render(results))
        written = []
        if args.explicit_out:
            args.out.mkdir(parents=True, exist_ok=True)
            written.append(args.out / "compare.json")
            written[0].write_text(json.dumps(results, indent=1) + "\n")
    else:
        written = _write_report(args, results)
    if written:
        progress.say("wrote " + ", ".join(str(p) for p in written))
    if args.keep_logs:
        progress.say(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _write_report(args: argparse.Namespace, results: dict[str, Any]) -> list[Path]:
    """performance.json, and PERFORMANCE.md with performance.png; a complete full run also gets
    its row in performance-history.json (started from docs/'s when *args.out* has none)."""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "performance.json").write_text(json.dumps(results, indent=1) + "\n")
    history_path = args.out / report.HISTORY_FILE
    history = report.load_history(
        history_path if history_path.exists() else ROOT / "docs" / report.HISTORY_FILE
    )
    written = []
    if results["meta"].get("complete") and not results["meta"].get("quick"):
        history.append(report.history_entry(results))
        history_path.write_text(json.dumps(history, indent=1) + "\n")
        written.append(history_path)
    return [*report.write(results, args.out, history), *written]


async def _stoppable(work: Coroutine[Any, Any, dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """Run *work*; Ctrl-C or SIGTERM cancels it, so every ``finally`` of the cases runs.

    The handlers are the loop's own, so they work even where SIGINT was ignored on start
    (a background job of a non-interactive shell).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def stop(signum: int) -> None:
        progress.say(f"{signal.Signals(signum).name}: stopping")
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await work
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _cpu_busy() -> float:
    import psutil

    return float(psutil.cpu_percent(interval=1.0))


def _wait_quiet(limit: float, progress: Progress) -> None:
    """Wait (at most *limit* s) until the CPU is under 15% busy for 5 s in a row."""
    import psutil

    progress.say(f"waiting (at most {limit:.0f}s) for the machine to be quiet")
    deadline = time.monotonic() + limit
    quiet = 0
    psutil.cpu_percent(interval=None)
    while time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
        quiet = quiet + 1 if busy < 15 else 0
        if quiet >= 5:
            progress.say("the machine is quiet")
            return
        progress.tick(f"waiting for a quiet machine: CPU {busy:.0f}% busy")
    progress.say(f"the machine did not get quiet within {limit:.0f}s; going ahead")


def _cleanup_patiently(cleanup: Cleanup, progress: Progress) -> None:
    """Undo everything; a first Ctrl-C meanwhile only says to wait, a second one gives up."""
    presses = 0

    def on_sigint(_signum: int, _frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        progress.say("still cleaning up (stopping processes, deleting queues); Ctrl-C again to abandon")

    previous = signal.signal(signal.SIGINT, on_sigint)
    previous_term = signal.signal(signal.SIGTERM, on_sigint)
    try:
        cleanup.close()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    if cleanup.queues:
        progress.say(
            f"could not delete {len(cleanup.queues)} queues: " + ", ".join(sorted(cleanup.queues)[:10])
        )


if __name__ == "__main__":
    sys.exit(main())
