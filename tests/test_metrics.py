"""Prometheus metrics and health endpoints, from the API and from a worker."""

from __future__ import annotations

import os
import subprocess
import sys

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, http_up, wait_for
from tests.workers import stop_processes


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_api_metrics_count_requests_and_publishes(client, admin, queue_name):
    queue = queue_name("metrics")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    before = client.get("/metrics", headers=admin).get_data(as_text=True)
    client.post(
        f"/api/v1/queues/{queue}/messages", json={"messages": [{"body": i} for i in range(3)]}, headers=admin
    )
    client.get(f"/api/v1/queues/{queue}", headers=admin)

    response = client.get("/metrics", headers=admin)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    after = response.get_data(as_text=True)
    published = ("workerrmq_messages_published_total", {"outcome": "published"})
    assert value(after, published[0], **published[1]) - value(before, published[0], **published[1]) == 3
    route = {"method": "GET", "route": "/api/v1/queues/<name>", "status": "200"}
    assert value(after, "workerrmq_http_requests_total", **route) >= 1
    assert (
        value(
            after,
            "workerrmq_http_request_duration_seconds_count",
            method="GET",
            route="/api/v1/queues/<name>",
        )
        >= 1
    )
    assert client.get("/metrics").status_code == 401  # metrics need a key like any data


def test_metrics_sum_over_gunicorn_processes(tmp_path):
    port = free_port()
    key = "wrmq_metrics-test-key-0123456789abcdef"
    env = {
        **os.environ,
        "BIND": f"127.0.0.1:{port}",
        "API_WORKERS": "3",
        "API_THREADS": "2",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "WORKERRMQ_API_KEY": key,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "workerrmq.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_for(lambda: http_up(f"{base}/healthz"), timeout=30, what="the API")
        # New connections each time, so the requests spread over the processes.
        for _ in range(30):
            assert requests.get(f"{base}/api/v1/keys", headers=headers, timeout=10).status_code == 200
        for _ in range(3):  # whichever process answers the scrape, it reports all of them
            text = requests.get(f"{base}/metrics", headers=headers, timeout=10).text
            assert (
                value(text, "workerrmq_http_requests_total", method="GET", route="/api/v1/keys", status="200")
                == 30
            )
    finally:
        stop_processes(api)


def test_worker_serves_health_and_metrics(settings, start_engine, endpoint, client, admin, queue_name):
    worker = start_engine(settings)
    base = f"http://127.0.0.1:{worker.engine.health_port}"
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": "ok", "database": "ok"}

    queue = queue_name("wmetrics")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    consumer = client.post(
        "/api/v1/consumers",
        json={"queue": queue, "target_url": endpoint.url, "name": f"metrics-{queue}"},
        headers=admin,
    ).json
    worker.runner(consumer["id"])
    client.post(f"/api/v1/queues/{queue}/messages", json={"body": "x"}, headers=admin)
    wait_for(lambda: endpoint.delivered_ids(), what="the delivery")

    def delivered() -> float:
        text = requests.get(f"{base}/metrics", timeout=5).text
        return value(text, "workerrmq_deliveries_total", consumer=consumer["name"], outcome="delivered")

    assert wait_for(lambda: delivered() == 1, timeout=10, what="the delivery counted")
    text = requests.get(f"{base}/metrics", timeout=5).text
    assert value(text, "workerrmq_delivery_duration_seconds_count", consumer=consumer["name"]) == 1
    assert ("workerrmq_deliveries_in_flight", (("consumer", consumer["name"]),)) in samples(text)
