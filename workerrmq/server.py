"""The Gunicorn application behind ``workerrmq api``."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from workerrmq.settings import Settings

__all__ = ["Gunicorn"]


class _GunicornLog(GunicornLogger):  # type: ignore[misc]
    """Gunicorn's own messages go through WorkerRMQ's handler, so LOG_FORMAT applies to them."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.error_log.handlers.clear()
        self.error_log.propagate = True


class Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": self.settings.bind,
            "workers": self.settings.api_workers,
            "threads": self.settings.api_threads,
            "worker_class": "gthread",
            "timeout": 60,
            "graceful_timeout": 30,
            "accesslog": None,
            "logger_class": _GunicornLog,
            "loglevel": self.settings.log_level.lower(),
            "child_exit": _child_exit,
            # Gunicorn's control socket is one per user: two APIs on a host would clash.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from workerrmq.api import create_app

        return create_app(self.settings)


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
