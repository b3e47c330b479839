"""The access log line and the request metrics, the same for every request however it
was served (through Flask, or by the publish lane on the event loop)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from workerrmq import metrics

__all__ = ["access_log", "record"]

access_log = logging.getLogger("workerrmq.access")


@functools.lru_cache(maxsize=1024)
def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The request counter and duration histogram of one method, route and status, looked up
    once (routes are URL rules, not paths, so there are few)."""
    return metrics.HTTP_REQUESTS.labels(method, route, str(status)), metrics.HTTP_DURATION.labels(
        method, route
    )


def record(method: str, path: str, route: str, status: int, elapsed: float, key_name: str | None) -> None:
    """Count the request under *route* (the URL rule, or ``unmatched``), time it, and log
    its line: ``METHOD PATH STATUS 1.2ms key=NAME``, with the same fields as extras."""
    elapsed_ms = elapsed * 1000
    count, duration = _series(method, route, status)
    count.inc()
    duration.observe(elapsed)
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "%s %s %s %.1fms key=%s",
        method,
        path,
        status,
        elapsed_ms,
        "-" if key_name is None else key_name,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(elapsed_ms, 2),
            "key_name": key_name,
        },
    )
