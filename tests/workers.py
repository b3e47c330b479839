"""Running the real worker engine in tests: on a thread, or as a process."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.support import wait_for
from workerrmq.settings import Settings
from workerrmq.worker.engine import Engine


class EngineThread:
    """A worker engine on its own event loop in a background thread."""

    def __init__(self, settings: Settings, **options: float) -> None:
        options.setdefault("reconcile_interval", 1.0)
        options.setdefault("report_interval", 0.5)
        options.setdefault("reconnect_delay", 0.2)
        if settings.worker_bind:  # many engines share this process: let the OS pick ports
            settings = dataclasses.replace(settings, worker_bind="127.0.0.1:0")
        self.engine = Engine(settings, **options)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._log = io.StringIO()
        handler = logging.StreamHandler(self._log)
        logging.getLogger("workerrmq.worker").addHandler(handler)
        self._handler = handler
        self.error: BaseException | None = None

    def log_text(self) -> str:
        """What the engine logged so far (captured per engine)."""
        return self._log.getvalue()

    def _run(self) -> None:
        try:
            asyncio.run(self.engine.run())
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def start(self, *, connected: bool = True) -> EngineThread:
        """Start the engine; wait until it has connected unless *connected* is False."""
        self._thread.start()
        if connected:
            wait_for(self.engine.connected.is_set, timeout=30, what="the worker to connect")
        return self

    @property
    def running(self) -> bool:
        """True while the engine's thread runs (it may still be waiting to connect)."""
        return self._thread.is_alive()

    def runner(self, consumer_id: str, status: str = "consuming"):  # type: ignore[no-untyped-def]
        """Wait until this worker runs *consumer_id* in *status*; returns the runner."""

        def ready():  # type: ignore[no-untyped-def]
            runner = self.engine.runners.get(consumer_id)
            return runner if runner is not None and runner.status == status else None

        return wait_for(ready, timeout=15, what=f"consumer {consumer_id} to be {status}")

    def stop(self, timeout: float = 30) -> None:
        logging.getLogger("workerrmq.worker").removeHandler(self._handler)
        if not self._thread.is_alive():
            return
        self.engine.request_stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error


def worker_process(
    settings: Settings, log: Path, *, argv: list[str] | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """``workerrmq worker`` as a child process configured like *settings*, logging to *log*
    (*argv*: another Python command line run with that configuration instead)."""
    environ = {
        **os.environ,
        "WORKER_BIND": "127.0.0.1:0",
        "RABBITMQ_URL": settings.rabbitmq_url,
        "RABBITMQ_MANAGEMENT_URL": settings.rabbitmq_management_url,
        "DATABASE_URL": settings.database_url,
        **env,
    }
    command = argv or ["-m", "workerrmq.cli", "worker", "--processes", "1"]
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, *command], env=environ, stdout=out, stderr=subprocess.STDOUT)


def stop_processes(*processes: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM every process still running, wait for each, kill one that hangs."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
