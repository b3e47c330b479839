"""``/healthz`` (the process is alive) and ``/readyz`` (broker and database reachable)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from workerrmq import metrics
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
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": results})
    response.status_code = 200 if ready else 503
    return response


@blp.route("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus exposition format; needs a key with scope read."""
    return Response(metrics.render(), content_type=metrics.CONTENT_TYPE_LATEST)
