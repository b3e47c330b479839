"""Prometheus metrics of the API and the worker.

Under Gunicorn, ``workerrmq api`` sets ``PROMETHEUS_MULTIPROC_DIR`` before its
processes start, so ``/metrics`` sums every API process. A worker serves its
own ``/metrics`` on ``WORKER_BIND``.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as _DEFAULT_REGISTRY

__all__ = [
    "CONTENT_TYPE_LATEST",
    "render",
    "HTTP_REQUESTS",
    "HTTP_DURATION",
    "PUBLISHED",
    "DELIVERIES",
    "OUTCOMES",
    "DELIVERY_DURATION",
    "IN_FLIGHT",
    "CIRCUIT_OPEN",
    "CONSUMERS_RUNNING",
    "ATTEMPT_LOG_DROPPED",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# -- API -------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "workerrmq_http_requests_total",
    "API requests by route and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "workerrmq_http_request_duration_seconds",
    "API request latency by route.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
PUBLISHED = Counter(
    "workerrmq_messages_published_total",
    "Messages published through the API, by outcome.",
    ["outcome"],
)

# -- worker --------------------------------------------------------------------------------------

#: The outcomes DELIVERIES counts: attempts (delivered, retried, dead_lettered), replies
#: published to a message's reply_to (replies, replies_unroutable: no queue took it), and
#: messages acked undelivered by the consumer's filter (filtered: it was false; filter_errors:
#: it failed on the message).
OUTCOMES = (
    "delivered",
    "retried",
    "dead_lettered",
    "replies",
    "replies_unroutable",
    "filtered",
    "filter_errors",
)
DELIVERIES = Counter(
    "workerrmq_deliveries_total",
    "Messages by consumer and outcome (" + ", ".join(OUTCOMES) + ").",
    ["consumer", "outcome"],
)
DELIVERY_DURATION = Histogram(
    "workerrmq_delivery_duration_seconds",
    "Time from request to the endpoint's answer.",
    ["consumer"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "workerrmq_deliveries_in_flight",
    "Deliveries under way.",
    ["consumer"],
    multiprocess_mode="livesum",
)
CIRCUIT_OPEN = Gauge(
    "workerrmq_circuit_open",
    "1 while the consumer's circuit breaker is open or probing.",
    ["consumer"],
    multiprocess_mode="livemax",
)
CONSUMERS_RUNNING = Gauge(
    "workerrmq_consumers_running",
    "Consumers this worker runs.",
    multiprocess_mode="livesum",
)

ATTEMPT_LOG_DROPPED = Counter(
    "workerrmq_attempt_log_dropped_total",
    "Delivery attempts not written to the attempt log: its buffer was full (the database down).",
)


def render() -> bytes:
    """The exposition text: summed over processes when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(_DEFAULT_REGISTRY)
