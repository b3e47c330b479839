"""A real three-node RabbitMQ cluster on this machine: kill nodes while messages flow.

Three private nodes (their own names, ports and data directories; never the shared broker)
are clustered with ``rabbitmqctl join_cluster``. A quorum queue is fed messages through the
API (RATE a second, in batches), whose publisher and the worker processes are given all three
URLs. While they flow, the node leading the queue is killed (SIGKILL) and restarted, then the
node the worker is connected to. The publisher goes on until both nodes are back (and at least
``WORKERRMQ_CLUSTER_N`` messages), so the flow lasts as long as the kills need, not a fixed
time. Every message the API confirmed must reach the endpoint and deliveries must resume after
each kill; duplicates are counted, and the pause in deliveries after each kill is measured and
reported, not asserted.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.nodes import RabbitNode, cluster, management_get, rabbit_nodes
from tests.support import wait_for
from tests.workers import stop_processes, worker_process

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

MIN_MESSAGES = int(os.environ.get("WORKERRMQ_CLUSTER_N", "2000"))
BATCH = 100
RATE = 200.0  # messages a second the publisher aims at
FLOWING = 1000  # deliveries before the first kill


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[RabbitNode]]:
    with rabbit_nodes(3) as started:
        cluster(started)
        yield started


class ApiPublisher(threading.Thread):
    """Publishes batches through the API at RATE until :meth:`finish` (and MIN_MESSAGES at
    least). A batch the API does not confirm (503 while the cluster fails over) is sent again,
    ids unchanged, until it is; ``sent`` counts the ids it started on."""

    def __init__(self, client: Any, headers: dict[str, str], queue: str) -> None:
        super().__init__(daemon=True)
        self.client, self.headers, self.queue = client, headers, queue
        self.sent = 0
        self.confirmed: set[str] = set()
        self.refused = 0  # batches answered with something other than all published
        self.last_refusal = ""
        self.error: BaseException | None = None
        self._finish = threading.Event()
        self._abandon = threading.Event()

    def finish(self) -> None:
        """Publish no batch after the one under way (once MIN_MESSAGES are out)."""
        self._finish.set()

    def abandon(self) -> None:
        """Stop at once, even with a batch unconfirmed (the test failed: do not outlive it)."""
        self._abandon.set()
        self._finish.set()

    def run(self) -> None:
        try:
            self._publish_all()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _publish_all(self) -> None:
        started = time.monotonic()
        interval = BATCH / RATE
        number = 0
        while (self.sent < MIN_MESSAGES or not self._finish.is_set()) and not self._abandon.is_set():
            pending = [f"c-{i}" for i in range(self.sent, self.sent + BATCH)]
            self.sent += BATCH
            while pending and not self._abandon.is_set():
                pending = self._send(pending)
            number += 1
            pause = started + number * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing, not waiting for a condition

    def _send(self, ids: list[str]) -> list[str]:
        body = {"messages": [{"body": i, "message_id": i} for i in ids]}
        response = self.client.post(f"/api/v1/queues/{self.queue}/messages", json=body, headers=self.headers)
        if response.status_code != 200:
            self.last_refusal = f"{response.status_code} {response.get_data(as_text=True)[:300]}"
            self.refused += 1
            time.sleep(0.2)
            return ids
        done = {r["message_id"] for r in response.json["results"] if r["status"] == "published"}
        self.confirmed |= done
        if len(done) < len(ids):
            self.last_refusal = str([r for r in response.json["results"] if r["status"] != "published"][:2])
            self.refused += 1
        return [i for i in ids if i not in done]


def leader_of(nodes: list[RabbitNode], queue: str) -> RabbitNode:
    info = _from_any(nodes, f"/api/queues/%2F/{queue}")
    return next(n for n in nodes if n.nodename == info["leader"])


def node_of_worker(nodes: list[RabbitNode]) -> RabbitNode:
    connections = _from_any(nodes, "/api/connections")
    workers = [
        c
        for c in connections
        if str(c["client_properties"].get("connection_name", "")).startswith("workerrmq-worker")
    ]
    assert workers, "the worker has no connection listed"
    return next(n for n in nodes if n.nodename == workers[0]["node"])


def _from_any(nodes: list[RabbitNode], path: str) -> Any:
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            try:
                return management_get(node, path)
            except Exception:  # noqa: BLE001 - ask the next node
                continue
    raise AssertionError(f"no node answered {path}")


def queue_state(nodes: list[RabbitNode], queue: str) -> dict[str, Any]:
    """What the cluster says of *queue*, for a failure message."""
    info = _from_any(nodes, f"/api/queues/%2F/{queue}")
    keys = ("leader", "members", "online", "messages_ready", "messages_unacknowledged", "consumers")
    return {k: info.get(k) for k in keys}


def deliveries_after(endpoint: Any, moment: float) -> int:
    return sum(1 for r in endpoint.received if r.at > moment)


def resume_time(endpoint: Any, killed_at: float) -> float:
    """Seconds from the kill to the end of the longest pause in deliveries after it."""
    times = sorted(r.at for r in endpoint.received if r.at >= killed_at - 0.05)
    times = [killed_at, *times]
    gaps = [(b - a, b) for a, b in zip(times, times[1:], strict=False) if b <= killed_at + 60]
    if not gaps:
        return float("inf")
    longest, ended = max(gaps)
    return max(0.0, ended - killed_at) if longest > 0.2 else 0.0


def kill_and_restart(
    nodes: list[RabbitNode], victim: RabbitNode, endpoint: Any, publisher: ApiPublisher
) -> float:
    """Kill *victim*, wait until deliveries resume and the API publishes again, restart it."""
    killed_at = time.monotonic()
    confirmed_before = len(publisher.confirmed)
    victim.kill()
    try:
        wait_for(
            lambda: deliveries_after(endpoint, killed_at) > 300,
            timeout=90,
            interval=0.1,
            what=f"deliveries to resume after killing {victim.nodename}",
        )
    except AssertionError as exc:
        stack = "".join(traceback.format_stack(sys._current_frames().get(publisher.ident)))[-3000:]
        raise AssertionError(
            f"{exc}; queue: {queue_state(nodes, publisher.queue)}; publisher: "
            f"{len(publisher.confirmed)} confirmed, {publisher.refused} refused "
            f"(last: {publisher.last_refusal}), "
            f"at {stack}"
        ) from None
    try:
        wait_for(
            lambda: len(publisher.confirmed) > confirmed_before + 300 or not publisher.is_alive(),
            timeout=90,
            what=f"the API to publish again after killing {victim.nodename}",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; publisher: {len(publisher.confirmed)} confirmed, {publisher.refused}"
            f" refused (last: {publisher.last_refusal})"
        ) from None
    resumed = resume_time(endpoint, killed_at)
    victim.start().wait_ready()
    wait_for(
        lambda: all(n["running"] for n in _from_any(nodes, "/api/nodes")),
        timeout=60,
        what=f"{victim.nodename} to rejoin the cluster",
    )
    return resumed


def test_cluster_loses_nothing_when_nodes_die(nodes, make_settings, make_app, endpoint, tmp_path):
    settings = make_settings(
        rabbitmq_url=",".join(n.amqp_url() for n in nodes),
        rabbitmq_management_url=",".join(n.management_url() for n in nodes),
    )
    client, headers = make_app(settings)
    queue = f"cluster-{uuid.uuid4().hex[:8]}"
    answer = client.post("/api/v1/queues", json={"name": queue, "type": "quorum"}, headers=headers)
    assert answer.status_code == 201, answer.json
    consumer = client.post(
        "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=headers
    )
    assert consumer.status_code == 201, consumer.json
    workers = [worker_process(settings, tmp_path / "worker.log")]
    publisher = ApiPublisher(client, headers, queue)
    try:
        wait_for(
            lambda: _from_any(nodes, f"/api/queues/%2F/{queue}").get("consumers", 0) >= 1,
            timeout=60,
            what="the worker to consume from the cluster",
        )
        started = time.monotonic()
        publisher.start()
        wait_for(lambda: len(endpoint.received) > FLOWING, timeout=60, what="messages to flow")

        leader = leader_of(nodes, queue)
        resumed_leader = kill_and_restart(nodes, leader, endpoint, publisher)
        worker_node = node_of_worker(nodes)
        resumed_worker = kill_and_restart(nodes, worker_node, endpoint, publisher)

        publisher.finish()
        publisher.join(300)
        assert publisher.error is None, publisher.error
        assert not publisher.is_alive(), "the API did not publish every message"
        delivered = wait_for(
            lambda: (ids := {r.message_id for r in endpoint.received}) >= publisher.confirmed and ids,
            timeout=180,
            interval=0.5,
            what="every confirmed message to reach the endpoint",
        )
        elapsed = time.monotonic() - started
    finally:
        publisher.abandon()  # it has finished unless the test failed
        stop_processes(*workers)
    lost = publisher.confirmed - delivered
    figures = {
        "messages": publisher.sent,
        "confirmed": len(publisher.confirmed),
        "node_kills": 2,
        "killed": [leader.nodename + " (queue leader)", worker_node.nodename + " (worker's node)"],
        "lost": len(lost),
        "duplicates": len(endpoint.received) - len(delivered),
        "resume_after_leader_kill_s": round(resumed_leader, 2),
        "resume_after_worker_node_kill_s": round(resumed_worker, 2),
        "api_batches_refused_and_retried": publisher.refused,
        "run_s": round(elapsed, 1),
    }
    print("\ncluster figures:", json.dumps(figures))
    assert publisher.sent >= MIN_MESSAGES
    assert publisher.confirmed == {f"c-{i}" for i in range(publisher.sent)}, "not every id was confirmed"
    assert not lost, f"{len(lost)} confirmed messages never arrived"
