"""Run the benchmark of issue 5 and write docs/PERFORMANCE.md and docs/performance.png.

    python -m bench.run                 the full benchmark (several minutes)
    python -m bench.run --quick         a tiny version (under a minute), for the smoke test
    python -m bench.run --out DIR       write the report into DIR instead of docs/
    python -m bench.run --cases relay,latency   only some cases

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

from bench import report
from bench.cases import CASES, RELAY_CONTENDERS, Context
from bench.common import (
    ROOT,
    ApiClient,
    Broker,
    Cleanup,
    CpuAccount,
    EndpointClient,
    Plan,
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
    "PYTHONPATH",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny version: 500 messages, 1 run, 20 consumers, short phases"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs",
        help="where PERFORMANCE.md, performance.png and performance.json go",
    )
    parser.add_argument("--runs", type=int, help="runs per case (default 3, 1 with --quick)")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of: {', '.join(CASES)}"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(RELAY_CONTENDERS),
        help=f"relay contenders to run (comma-separated subset of: {', '.join(RELAY_CONTENDERS)})",
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
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    unknown = set(args.contenders.split(",")) - set(RELAY_CONTENDERS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
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


async def run(args: argparse.Namespace, progress: Progress, cleanup: Cleanup, tmp: Path) -> dict[str, Any]:
    plan = Plan.quick_plan() if args.quick else Plan.full()
    if args.runs:
        plan = dataclasses.replace(plan, runs=args.runs)
    if args.messages:
        plan = dataclasses.replace(plan, messages=args.messages)
    if args.sizes:
        plan = dataclasses.replace(plan, sizes=tuple(int(s) for s in args.sizes.split(",")))
    amqp_url, management_url = args.amqp_url, args.management_url
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    api_key = f"wrmq_bench_{uuid.uuid4().hex}"
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _OWN_VARIABLES}
    env.update(
        {
            "RABBITMQ_URL": amqp_url,
            "RABBITMQ_MANAGEMENT_URL": management_url,
            "DATABASE_URL": f"sqlite:///{tmp}/workerrmq.sqlite3",
            "WORKERRMQ_API_KEY": api_key,
            "BIND": f"127.0.0.1:{api_port}",
            "SECRET_KEY": uuid.uuid4().hex,
            # The endpoint is on loopback; the guard against private targets must let it through.
            "BLOCK_PRIVATE_TARGETS": "false",
        }
    )
    if args.source:
        env["PYTHONPATH"] = str(args.source.resolve())
    broker = Broker(amqp_url, cleanup, prefix)
    await broker.open()
    try:
        return await _run_cases(args, plan, progress, cleanup, tmp, broker, env, prefix)
    finally:
        await broker.close()


async def _run_cases(
    args: argparse.Namespace,
    plan: Plan,
    progress: Progress,
    cleanup: Cleanup,
    tmp: Path,
    broker: Broker,
    env: dict[str, str],
    prefix: str,
) -> dict[str, Any]:
    amqp_url, management_url = args.amqp_url, args.management_url
    api_key = env["WORKERRMQ_API_KEY"]
    api_port = int(env["BIND"].rsplit(":", 1)[1])
    endpoint_port = free_port()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        endpoint = EndpointClient(endpoint_port, http)
        api_base = f"http://127.0.0.1:{api_port}"
        api = ApiClient(api_base, api_key, http)
        ctx = Context(
            plan=plan,
            progress=progress,
            cleanup=cleanup,
            broker=broker,
            endpoint=endpoint,
            api=api,
            http=http,
            tmp=tmp,
            amqp_url=amqp_url,
            management_url=management_url,
            api_key=api_key,
            api_base=api_base,
            workerrmq_argv=functools.partial(_workerrmq_argv, worker_processes=args.worker_processes),
            workerrmq_env=env,
        )
        ctx.contenders = tuple(c for c in RELAY_CONTENDERS if c in args.contenders.split(","))
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            ctx.profile_dir = args.profile
        progress.say(
            f"starting the endpoint (port {endpoint_port}) and 'workerrmq api' "
            f"(port {api_port}); queues are named {prefix}-*"
        )
        ep = ctx.spawn(
            "endpoint", [sys.executable, "-m", "bench.endpoint", "--port", str(endpoint_port)], cwd=ROOT
        )
        api_proc = ctx.spawn("api", _workerrmq_argv("api"), env=env, cwd=tmp, profile=True)

        async def endpoint_up() -> bool:
            if not ep.alive():
                raise RuntimeError(f"the endpoint exited:\n{ep.tail()}")
            return await endpoint.ping()

        async def api_up() -> bool:
            if not api_proc.alive():
                raise RuntimeError(f"'workerrmq api' exited:\n{api_proc.tail()}")
            return await api.ready()

        await wait_until(endpoint_up, timeout=30, what="the endpoint")
        await wait_until(api_up, timeout=60, what="'workerrmq api' to be ready")
        progress.say("starting 'workerrmq worker'")
        await ctx.ensure_worker()

        results: dict[str, Any] = {
            "meta": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "quick": plan.quick,
                "plan": dataclasses.asdict(plan),
                "cpus": os.cpu_count(),
                "cpu_model": _cpu_model(),
                "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
                "host": socket.gethostname(),
                "versions": {**_versions(), **await _broker_overview(http, management_url)},
                "command": "python -m bench.run " + " ".join(sys.argv[1:]),
                "worker_processes": args.worker_processes,
                "queue_prefix": prefix,
                "git": _git(args.source),
            },
        }
        started = time.monotonic()
        for name in args.cases.split(","):
            progress.say(f"— case: {name} —")
            try:
                results[name] = await CASES[name](ctx)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - report it, go on with the next case
                progress.say(f"case {name} FAILED: {type(exc).__name__}: {exc}")
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "performance.json").write_text(json.dumps(results, indent=1) + "\n")
    written = report.write(results, args.out)
    progress.say("wrote " + ", ".join(str(p) for p in written))
    if args.keep_logs:
        progress.say(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


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
