"""Trouble around one consumer: broker timeouts, its queue vanishing, poison messages."""

from __future__ import annotations

import collections
import re
import subprocess

import pika
import pytest

from tests.support import wait_for


def _rabbitmqctl_eval(expression: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "eval", expression], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


def _get_broker_env(name: str) -> str | None:
    """The broker's ``rabbit`` setting *name* as Erlang text, or None where it is not set."""
    answer = _rabbitmqctl_eval(f"application:get_env(rabbit, {name}).")
    if answer == "undefined":
        return None
    found = re.fullmatch(r"\{ok,(.*)\}", answer, re.DOTALL)
    assert found, f"rabbitmqctl answered {answer!r} for {name}"
    return found.group(1)


def _set_broker_env(name: str, value: str | None) -> None:
    """Set the broker's ``rabbit`` setting *name*; None unsets it."""
    if value is None:
        _rabbitmqctl_eval(f"application:unset_env(rabbit, {name}).")
    else:
        _rabbitmqctl_eval(f"application:set_env(rabbit, {name}, {value}).")


@pytest.fixture
def broker_env(broker):
    """Change the shared broker's ``rabbit`` settings for one test; each is put back to
    exactly what it was before (unset where it was unset)."""
    found: dict[str, str | None] = {}

    def change(**values: int) -> None:
        for name, value in values.items():
            found.setdefault(name, _get_broker_env(name))
            _set_broker_env(name, str(value))

    try:
        yield change
    finally:
        for name, value in found.items():
            _set_broker_env(name, value)
        assert {name: _get_broker_env(name) for name in found} == found


@pytest.fixture
def short_consumer_timeout(broker_env):
    """The broker closes a channel whose delivery stays unacked for 2 s (checked every second)."""
    broker_env(consumer_timeout=2000, channel_tick_interval=1000)


def test_endpoint_slower_than_consumer_timeout(
    short_consumer_timeout, settings, start_engine, endpoint, make_consumer, client, admin
):
    # The first attempt takes longer than the broker waits for an ack.
    endpoint.delay_for = lambda r: 5.0 if r.headers["X-WorkerRMQ-Redelivered"] == "false" else 0.0
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, timeout=30)
    runner = worker.runner(consumer["id"])
    client.post(
        f"/api/v1/queues/{queue}/messages", json={"body": "slow", "message_id": "slow-1"}, headers=admin
    )

    wait_for(
        lambda: endpoint.delivered_ids().count("slow-1") >= 1 and endpoint.count() >= 2,
        timeout=40,
        what="the message delivered again after the broker's timeout",
    )
    redelivered = [r for r in endpoint.received if r.headers["X-WorkerRMQ-Redelivered"] == "true"]
    assert redelivered, "the broker should have handed the message back"
    # The consumer was rebuilt on a fresh channel and keeps consuming.
    fresh = worker.runner(consumer["id"])
    assert fresh is not runner and fresh.healthy
    client.post(
        f"/api/v1/queues/{queue}/messages", json={"body": "next", "message_id": "next-1"}, headers=admin
    )
    wait_for(lambda: "next-1" in endpoint.delivered_ids(), timeout=20, what="the next message")


def test_queue_deleted_and_recreated(settings, start_engine, endpoint, make_consumer, client, admin):
    worker = start_engine(settings, reconcile_interval=0.5)
    consumer, queue = make_consumer(endpoint.url)
    worker.runner(consumer["id"])

    assert client.delete(f"/api/v1/queues/{queue}", headers=admin).status_code == 204
    worker.runner(consumer["id"], status="queue_missing")
    shown = wait_for(
        lambda: (
            "queue_missing"
            in (s := client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).json["stats"]["status"])
            and s
        ),
        timeout=15,
        what="the state shown by the API",
    )
    assert shown == ["queue_missing"]

    assert client.post("/api/v1/queues", json={"name": queue}, headers=admin).status_code == 201
    worker.runner(consumer["id"], status="consuming")
    client.post(f"/api/v1/queues/{queue}/messages", json={"body": "back"}, headers=admin)
    wait_for(lambda: b"back" in endpoint.bodies(), timeout=15, what="delivery after recreation")


POISON = {
    "empty": (b"", {}),
    "ten megabytes": (bytes(range(256)) * (10 * 1024 * 1024 // 256), {}),
    "not utf-8": (b"\xff\xfe\xfa\x00\x80", {}),
    "not json": (b'{"unterminated": ', {}),
    "odd headers": (
        b"odd",
        {
            "ünïcode-näme": "välue ✓",
            "nested": {"a": [1, {"b": None}]},
            "binary": b"\x00\x01",
            "crlf": "a\r\nInjected: yes",
        },
    ),
    "huge header": (b"huge", {"big": "x" * 100_000}),
    "many headers": (b"many", {f"h{i}": i for i in range(2000)}),
}


def test_poison_messages_are_delivered_or_dead_lettered(
    settings, start_engine, endpoint, make_consumer, amqp
):
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, max_attempts=3, initial_delay=0.05, max_delay=0.1)
    worker.runner(consumer["id"])
    amqp.confirm_delivery()
    for name, (body, headers) in POISON.items():
        amqp.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(message_id=name, headers=headers, delivery_mode=2),
            mandatory=True,
        )

    dead: dict[str, dict] = {}

    def settled() -> bool:
        while (got := amqp.basic_get(f"{queue}.dlq", auto_ack=True))[0] is not None:
            dead[got[1].message_id] = got[1].headers
        delivered = set(endpoint.delivered_ids())
        return all(name in delivered or name in dead for name in POISON)

    wait_for(settled, timeout=60, interval=0.2, what="every poison message delivered or parked")
    by_id = {r.message_id: r for r in endpoint.received if 200 <= r.status < 300}
    for name, (body, _) in POISON.items():
        if name in by_id:
            assert by_id[name].body == body, f"{name} was not delivered byte-exact"
        else:
            assert dead[name]["x-workerrmq-last-error"], f"{name} was parked without a reason"
    assert {"empty", "ten megabytes", "not utf-8", "not json", "odd headers"} <= set(by_id)
    injected = by_id["odd headers"].headers
    assert "Injected" not in injected, "a header value must not inject another header"
    # No hot loop: nothing was tried more often than max_attempts.
    attempts = collections.Counter(r.message_id for r in endpoint.received)
    assert max(attempts.values()) <= 3, attempts
    assert amqp.queue_declare(queue, passive=True).method.message_count == 0
