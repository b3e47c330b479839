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

__all__ = ["supervise", "nth_bind"]

log = logging.getLogger("workerrmq.supervisor")  # also when run as __main__
RESTART_DELAY = 1.0
STOP_TIMEOUT = 60.0


#: The children, as ``python -m`` arguments: an engine without the command line's imports.
ENGINE = ("workerrmq.worker",)
API = ("workerrmq.cli", "api")


def _start(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **env})


def supervise(
    commands: Sequence[Sequence[str]], envs: Sequence[Mapping[str, str]] | None = None
) -> int:
    """Run each ``python -m`` command of *commands* (e.g. :data:`ENGINE`, with the
    matching extra environment of *envs*) until a stop signal; returns 0."""
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
        for i, child in enumerate(children):
            if child.poll() is not None and not stopping:
                log.warning("'python -m %s' exited with %s; restarting",
                            " ".join(commands[i]), child.returncode)
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workerrmq.supervisor LOG_LEVEL LOG_FORMAT BIND...``: run one engine per
    BIND (its health and metrics address); what ``workerrmq worker --processes N``
    becomes. The command has read and checked the settings: this process only needs
    these, and does not load the settings module (nor its dependencies)."""
    from workerrmq.logs import configure_logging

    level, fmt, *binds = argv if argv is not None else sys.argv[1:]
    configure_logging(level, fmt)
    return supervise([ENGINE] * len(binds), [{"WORKER_BIND": bind} for bind in binds])


if __name__ == "__main__":
    sys.exit(main())
