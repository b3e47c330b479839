"""``python -m workerrmq.worker``: one engine process, as ``workerrmq worker --processes 1``
runs it but without the command line's imports (the operator CLI's HTTP client and
terminal tables); the supervisor starts its engines this way."""

from __future__ import annotations

from workerrmq.logs import configure_logging
from workerrmq.settings import Settings
from workerrmq.worker.engine import run_worker


def main() -> None:
    settings = Settings.from_env()  # checked by the command that started the supervisor
    configure_logging(settings.log_level, settings.log_format)
    run_worker(settings)


if __name__ == "__main__":
    main()
