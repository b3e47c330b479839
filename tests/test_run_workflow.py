"""The seed's core workflow against ``workerrmq run`` (what ``./run.sh`` starts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.support import free_port, http_up, wait_for


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_seed_workflow_with_run(tmp_path, endpoint, queue_name, amqp):
    port = free_port()
    key = "wrmq_run-workflow-key-0123456789abcdef"
    env = {
        **os.environ,
        "BIND": f"127.0.0.1:{port}",
        "WORKER_BIND": "127.0.0.1:0",
        "API_WORKERS": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "WORKERRMQ_API_KEY": key,
        "DEFAULT_TARGET_URL": endpoint.url,
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "workerrmq.cli", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    children: list[int] = []
    try:
        wait_for(lambda: http_up(f"{base}/readyz"), timeout=60, what="the API of 'workerrmq run'")
        children = _children(run.pid)
        assert len(children) == 2, "run supervises the API and a worker"
        wait_for(
            lambda: any(
                w["state"] == "alive"
                for w in requests.get(f"{base}/api/v1/workers", headers=headers, timeout=10).json()
            ),
            timeout=60,
            what="the worker to register (else the answers below carry a warning)",
        )
        queue = queue_name("run")

        def post(path: str, body: dict) -> dict:
            response = requests.post(base + path, json=body, headers=headers, timeout=10)
            assert response.status_code == 200, response.text
            return response.json()

        assert post("/createQueue", {"queueName": queue}) == {
            "message": "Queue has been created successfully."
        }
        assert post(
            "/createConsumer",
            {"queueName": queue, "max_attempts": 2, "initial_delay": 0.05, "max_delay": 0.1},
        ) == {"message": "Consumer has been created successfully."}
        for i in range(5):
            assert post("/messagePublish", {"queueName": queue, "message": f"order {i}"}) == {
                "message": "Message has been published successfully."
            }
        wait_for(lambda: len(endpoint.delivered_ids()) == 5, timeout=30, what="five deliveries")
        assert sorted(endpoint.bodies()) == [f"order {i}".encode() for i in range(5)]

        # The endpoint goes down: retried, then dead-lettered; replay brings them back.
        endpoint.respond = lambda r: (503, {})
        post("/messagePublish", {"queueName": queue, "message": "while down"})
        consumer = requests.get(f"{base}/getConsumers", headers=headers, timeout=10).json()[0]
        assert consumer["queueName"] == queue
        wait_for(
            lambda: amqp.queue_declare(f"{queue}.dlq", passive=True).method.message_count == 1,
            timeout=30,
            what="the dead letter",
        )
        attempts = [r for r in endpoint.received if r.body == b"while down"]
        assert len(attempts) == 2
        endpoint.respond = lambda r: (200, {})
        replay = requests.post(
            f"{base}/api/v1/consumers/{consumer['consumerId']}/dead-letters/replay",
            json={},
            headers=headers,
            timeout=30,
        )
        assert replay.json()["replayed"] == 1
        wait_for(lambda: len(endpoint.delivered_ids()) == 6, timeout=30, what="the replayed message")
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(60)
    assert code == 0, log.read_text()[-2000:]
    assert not any(_alive(pid) for pid in children), "SIGTERM must stop the API and the worker"
