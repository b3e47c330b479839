"""``workerrmq run``: keep the API and a worker running as child processes.

A child that dies is started again after a short pause; SIGTERM or SIGINT is
passed on to every child, which then drain and exit, and the supervisor
waits for them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workerrmq.settings import Settings

__all__ = ["supervise", "nth_bind", "start_supervisor", "stop_supervisor"]

log = logging.getLogger("workerrmq.supervisor")  # also when run as __main__
RESTART_DELAY = 1.0
STOP_TIMEOUT = 60.0


#: The children, as ``python -m`` arguments: an engine without the command line's imports.
ENGINE = ("workerrmq.worker",)
API = ("workerrmq.cli", "api")


def _start(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **env})


def supervise(
    commands: Sequence[Sequence[str]],
    envs: Sequence[Mapping[str, str]] | None = None,
    parent: int | None = None,
) -> int:
    """Run each ``python -m`` command of *commands* (e.g. :data:`ENGINE`, with the
    matching extra environment of *envs*) until a stop signal, or until the process
    *parent* is gone; returns 0."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        log.info("received %s; stopping", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    envs = envs or [{}] * len(commands)
    children = [_start(cmd, env) for cmd, env in zip(commands, envs, strict=True)]
    while not stopping:
        if parent is not None and os.getppid() != parent:
            log.warning("the process that started this supervisor (%d) is gone; stopping", parent)
            break
        for i, child in enumerate(children):
            if child.poll() is not None and not stopping:
                log.warning(
                    "'python -m %s' exited with %s; restarting", " ".join(commands[i]), child.returncode
                )
                time.sleep(RESTART_DELAY)
                children[i] = _start(commands[i], envs[i])
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


def nth_bind(bind: str, index: int) -> str:
    """Process *index*'s health address: the configured port plus *index*."""
    host, _, port = bind.rpartition(":")
    if not bind or int(port) == 0:
        return bind
    return f"{host}:{int(port) + index}"


def start_supervisor(settings: Settings, parent: int) -> subprocess.Popen[bytes]:
    """Start ``python -m workerrmq.supervisor`` with one engine on ``WORKER_BIND``, as a
    child of *parent* (the calling process): it stops when asked (:func:`stop_supervisor`)
    and also when *parent* dies without asking."""
    log.info("starting a supervised worker beside the API")
    # The API's metrics directory is the API processes' own: the engine serves its own.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workerrmq.supervisor",
            "--parent",
            str(parent),
            settings.log_level,
            settings.log_format,
            settings.worker_bind,
        ],
        env=env,
    )


def stop_supervisor(process: subprocess.Popen[bytes]) -> None:
    """Stop a supervisor of :func:`start_supervisor`: its engine drains, then both exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT + 5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workerrmq.supervisor [--parent PID] LOG_LEVEL LOG_FORMAT BIND...``: run
    one engine per BIND (its health and metrics address); what ``workerrmq worker
    --processes N`` becomes. With ``--parent``, stop when process PID is gone. The command
    has read and checked the settings: this process only needs these, and does not load
    the settings module (nor its dependencies)."""
    from workerrmq.logs import configure_logging

    args = list(argv if argv is not None else sys.argv[1:])
    parent = None
    if args[:1] == ["--parent"]:
        parent = int(args[1])
        del args[:2]
    level, fmt, *binds = args
    configure_logging(level, fmt)
    return supervise([ENGINE] * len(binds), [{"WORKER_BIND": bind} for bind in binds], parent)


if __name__ == "__main__":
    sys.exit(main())
