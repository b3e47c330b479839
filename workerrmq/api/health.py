"""``/healthz`` (the process is alive) and ``/readyz`` (broker and database reachable)."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import Blueprint, Response, jsonify

from workerrmq import metrics
from workerrmq.api import no_worker
from workerrmq.api.auth import public
from workerrmq.api.services import services
from workerrmq.errors import WorkerRMQError

blp = Blueprint("health", __name__)


@blp.route("/healthz")
@public
def healthz() -> Any:
    return jsonify({"status": "ok"})


@blp.route("/readyz")
@public
def readyz() -> Any:
    """200 while the broker, its management API and the database answer, else 503 naming
    the one that failed. ``warnings`` lists what is wrong without making this process
    unready: while consumers are set to run and no worker is alive, nothing is delivered,
    but publishing works, and every API process would say the same (see
    :mod:`workerrmq.api.no_worker`)."""
    s = services()
    checks = {"broker": s.publisher.ping, "management": s.management.ping, "database": s.db.ping}
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except WorkerRMQError as exc:
            results[name] = exc.message
    ready = all(v == "ok" for v in results.values())
    warnings: list[str] = []
    if results["database"] == "ok":
        with contextlib.suppress(WorkerRMQError):  # a failure here is in the checks already
            if (text := no_worker.warning(s.workers)) is not None:
                warnings.append(text)
    response = jsonify(
        {"status": "ready" if ready else "unavailable", "checks": results, "warnings": warnings}
    )
    response.status_code = 200 if ready else 503
    return response


@blp.route("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus exposition format; needs a key with scope read."""
    return Response(metrics.render(), content_type=metrics.CONTENT_TYPE_LATEST)
