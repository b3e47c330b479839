"""``workerrmq run``: keep the API and a worker running as child processes.

A child that dies is started again after a short pause; SIGTERM or SIGINT is
passed on to every child, which then drain and exit, and the supervisor
waits for them.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["supervise"]

log = logging.getLogger(__name__)
RESTART_DELAY = 1.0
STOP_TIMEOUT = 60.0


def _start(args: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "workerrmq.cli", *args])


def supervise(commands: Sequence[Sequence[str]]) -> int:
    """Run each ``workerrmq`` sub-command in *commands* until a stop signal; returns 0."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        log.info("received %s; stopping", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = {tuple(cmd): _start(cmd) for cmd in commands}
    while not stopping:
        for cmd, child in children.items():
            if child.poll() is not None and not stopping:
                log.warning("'workerrmq %s' exited with %s; restarting", " ".join(cmd), child.returncode)
                time.sleep(RESTART_DELAY)
                children[cmd] = _start(cmd)
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0
