"""Selective replay and discard of dead letters: only the matching ones move or go, the
others stay in their order, and a replay killed mid-way loses nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pika
import pytest

from tests.conftest import RABBITMQ_URL
from tests.support import wait_for
from workerrmq.core.dead_letters import DeadLetterSelector, error_kind

TARGET = "http://127.0.0.1:9/hook"
DAY = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

# -- the selector, without a broker ----------------------------------------------------------------


def _headers(status: Any = 503, error: str = "attempts exhausted: HTTP 503: down", hour: int = 0) -> dict:
    return {
        "x-workerrmq-last-status": status,
        "x-workerrmq-last-error": error,
        "x-workerrmq-dead-lettered-at": (DAY + dt.timedelta(hours=hour)).isoformat(),
    }


def test_error_kind_reads_the_workers_last_error():
    assert error_kind("attempts exhausted: HTTP 503: down") == "HTTP 503"
    assert error_kind("permanent failure: timeout: no answer within 5s") == "timeout"
    assert error_kind("attempts exhausted: connection: ClientConnectorError: refused") == "connection"
    assert error_kind("internal error: KeyError: 'x'") == "internal"
    assert error_kind("HTTP 404: gone") == "HTTP 404"


def test_each_selector_and_all_together():
    h = _headers()
    assert DeadLetterSelector().everything and DeadLetterSelector().matches(None, None)
    assert DeadLetterSelector(message_ids=frozenset({"a"})).matches("a", h)
    assert not DeadLetterSelector(message_ids=frozenset({"a"})).matches("b", h)
    assert DeadLetterSelector(status="503").matches("a", h)
    assert not DeadLetterSelector(status="504").matches("a", h)
    assert DeadLetterSelector(status="HTTP 503").matches("a", h)
    timeout = _headers("none", "permanent failure: timeout: no answer within 5s")
    assert DeadLetterSelector(status="timeout").matches("a", timeout)
    assert DeadLetterSelector(status="TIMEOUT").matches("a", timeout)
    assert not DeadLetterSelector(status="timeout").matches("a", h)
    assert DeadLetterSelector(error_contains="DOWN").matches("a", h)
    assert not DeadLetterSelector(error_contains="refused").matches("a", h)
    late = _headers(hour=5)
    since = DeadLetterSelector(since=DAY + dt.timedelta(hours=1))
    assert since.matches("a", late) and not since.matches("a", h)
    until = DeadLetterSelector(until=DAY + dt.timedelta(hours=5))
    assert until.matches("a", h) and not until.matches("a", late)  # until is exclusive
    assert not since.matches("a", {})  # no time: a time selector does not pick it
    both = DeadLetterSelector(status="503", error_contains="nope")
    assert not both.matches("a", h)


# -- through the API ---------------------------------------------------------------------------------


def _put(amqp: Any, queue: str, letters: list[tuple[str, dict]]) -> None:
    """Queue dead letters (message id, failure headers) in *queue*, in this order."""
    amqp.queue_declare(queue, durable=True)
    for message_id, headers in letters:
        amqp.basic_publish(
            "",
            queue,
            json.dumps({"id": message_id}).encode(),
            pika.BasicProperties(
                message_id=message_id, delivery_mode=2, headers={**headers, "tenant": "acme"}
            ),
        )
    wait_for(lambda: amqp.queue_declare(queue, passive=True).method.message_count == len(letters), timeout=10)


def _drain(amqp: Any, queue: str) -> list[str]:
    """Take every message of *queue*; their ids in order."""
    ids = []
    while True:
        method, properties, _ = amqp.basic_get(queue, auto_ack=True)
        if method is None:
            return ids
        ids.append(properties.message_id)


LETTERS = [
    ("m-1", _headers(503, "attempts exhausted: HTTP 503: down", 0)),
    ("m-2", _headers("none", "permanent failure: timeout: no answer within 5s", 1)),
    ("m-3", _headers(404, "permanent failure: HTTP 404: no such order", 2)),
    ("m-4", _headers(503, "attempts exhausted: HTTP 503: maintenance", 3)),
    ("m-5", _headers("none", "attempts exhausted: connection: refused", 4)),
]


@pytest.fixture
def dead(client, admin, make_consumer, amqp) -> Callable[..., tuple[str, str, str]]:
    """A consumer with LETTERS in its dead-letter queue; (its dead-letters URL, queue, dlq)."""

    def make() -> tuple[str, str, str]:
        consumer, queue = make_consumer(TARGET)
        _put(amqp, f"{queue}.dlq", LETTERS)
        return f"/api/v1/consumers/{consumer['id']}/dead-letters", queue, f"{queue}.dlq"

    return make


@pytest.mark.parametrize(
    ("selector", "picked"),
    [
        ({"message_ids": ["m-4", "m-2", "nope"]}, ["m-2", "m-4"]),
        ({"status": "503"}, ["m-1", "m-4"]),
        ({"status": "timeout"}, ["m-2"]),
        ({"error_contains": "NO SUCH"}, ["m-3"]),
        ({"since": "2025-01-01T01:00:00Z", "until": "2025-01-01T03:00:00+00:00"}, ["m-2", "m-3"]),
        ({"status": "503", "since": "2025-01-01T01:00:00"}, ["m-4"]),
    ],
)
def test_replay_moves_only_the_matching_and_keeps_the_others_in_order(
    client, admin, dead, amqp, selector, picked
):
    url, queue, dlq = dead()
    response = client.post(f"{url}/replay", json=selector, headers=admin)
    assert response.status_code == 200, response.json
    left = len(LETTERS) - len(picked)
    assert response.json == {
        "replayed": len(picked),
        "matched": len(picked),
        "moved": len(picked),
        "remaining": left,
    }
    moved = wait_for(
        lambda: amqp.queue_declare(queue, passive=True).method.message_count == len(picked) and 1
    )
    assert moved
    assert _drain(amqp, queue) == picked
    assert _drain(amqp, dlq) == [m for m, _ in LETTERS if m not in picked]


def test_replay_count_caps_the_moved_not_the_matched(client, admin, dead, amqp):
    url, queue, dlq = dead()
    response = client.post(f"{url}/replay", json={"status": "503", "count": 1}, headers=admin)
    assert response.json == {"replayed": 1, "matched": 2, "moved": 1, "remaining": 4}
    assert _drain(amqp, queue) == ["m-1"]
    assert _drain(amqp, dlq) == ["m-2", "m-3", "m-4", "m-5"]


def test_replay_without_selectors_answers_the_counts(client, admin, dead, amqp):
    url, queue, dlq = dead()
    assert client.post(f"{url}/replay", json={"count": 2}, headers=admin).json == {
        "replayed": 2,
        "matched": 2,
        "moved": 2,
        "remaining": 3,
    }
    assert _drain(amqp, queue) == ["m-1", "m-2"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "50 3"}, "status"),
        ({"status": "x" * 21}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, "until"),
        ({"message_ids": []}, "message_ids"),
        ({"message_ids": ["a"] * 1001}, "message_ids"),
        ({"message_ids": "m-1"}, "message_ids"),
        ({"error_contains": "x" * 501}, "error_contains"),
        ({"error_contains": ""}, "error_contains"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_selectors_are_400_naming_the_field(client, admin, make_consumer, body, field):
    consumer, _ = make_consumer(TARGET)
    response = client.post(
        f"/api/v1/consumers/{consumer['id']}/dead-letters/replay", json=body, headers=admin
    )
    assert response.status_code == 400, response.json
    assert field in json.dumps(response.json)


def test_discard_by_query_or_body_needs_admin_and_a_selector(client, admin, make_key, dead, amqp):
    url, _, dlq = dead()
    assert client.delete(f"{url}?status=503", headers=make_key("publish")).status_code == 403
    nothing = client.delete(url, headers=admin)
    assert nothing.status_code == 400 and nothing.json["error"]["field"] == "all"

    by_query = client.delete(f"{url}?status=503&message_ids=m-4&message_ids=m-1", headers=admin)
    assert by_query.status_code == 200, by_query.json
    assert by_query.json == {"matched": 2, "discarded": 2, "remaining": 3}
    by_body = client.delete(url, json={"error_contains": "timeout"}, headers=admin)
    assert by_body.json == {"matched": 1, "discarded": 1, "remaining": 2}
    both = client.delete(f"{url}?status=404", json={"status": "404"}, headers=admin)
    assert both.status_code == 400
    assert client.delete(f"{url}?since=nonsense", headers=admin).status_code == 400
    peek = client.get(url, headers=admin).json
    assert [i["message_id"] for i in peek["items"]] == ["m-3", "m-5"]

    everything = client.delete(f"{url}?all=true", headers=admin)
    assert everything.json == {"matched": 2, "discarded": 2, "remaining": 0}
    assert amqp.queue_declare(dlq, passive=True).method.message_count == 0


def test_discard_of_a_consumer_without_a_dead_letter_queue(client, admin, make_consumer):
    consumer, _ = make_consumer(TARGET)
    url = f"/api/v1/consumers/{consumer['id']}/dead-letters"
    assert client.delete(f"{url}?all=true", headers=admin).json == {
        "matched": 0,
        "discarded": 0,
        "remaining": 0,
    }
    assert client.post(f"{url}/replay", json={"status": "503"}, headers=admin).json == {
        "replayed": 0,
        "matched": 0,
        "moved": 0,
        "remaining": 0,
    }
    assert client.delete("/api/v1/consumers/nope/dead-letters?all=true", headers=admin).status_code == 404


# -- killed mid-replay -------------------------------------------------------------------------------

_REPLAYER = textwrap.dedent(
    """
    import sys
    from workerrmq.broker.publisher import Publisher
    from workerrmq.core.dead_letters import DeadLetterSelector

    url, dlq, queue = sys.argv[1:]
    Publisher([url], timeout=30).sift(dlq, queue, DeadLetterSelector(status="503"), None, timeout=600)
    print("finished", flush=True)
    """
)


def test_a_replay_killed_mid_way_loses_nothing_and_keeps_the_order(amqp, queue_name):
    queue = queue_name("kill")
    dlq = f"{queue}.dlq"
    amqp.queue_declare(queue, durable=True)
    letters = [
        (f"k-{n:04d}", _headers(503 if n % 2 == 0 else 404, "attempts exhausted: HTTP 5xx: x"))
        for n in range(2000)
    ]
    _put(amqp, dlq, letters)
    order = {message_id: n for n, (message_id, _) in enumerate(letters)}
    matching = {m for m, h in letters if h["x-workerrmq-last-status"] == 503}

    replayer = subprocess.Popen(
        [sys.executable, "-c", _REPLAYER, RABBITMQ_URL, dlq, queue],
        cwd=os.getcwd(),
        stdout=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: amqp.queue_declare(queue, passive=True).method.message_count >= 50,
            timeout=60,
            interval=0.01,
            what="the replay under way",
        )
        os.kill(replayer.pid, signal.SIGKILL)
    finally:
        replayer.wait(10)
    assert replayer.returncode == -signal.SIGKILL  # killed, not finished

    # The broker hands the held messages back once it sees the connection gone.
    wait_for(
        lambda: (
            amqp.queue_declare(queue, passive=True).method.message_count
            + amqp.queue_declare(dlq, passive=True).method.message_count
            >= 2000
        ),
        timeout=30,
        what="the killed replay's messages back",
    )
    moved = _drain(amqp, queue)
    assert 50 <= len(moved) < len(matching), "the kill did not land mid-way"
    left = _peek_all(amqp, dlq)
    assert set(moved) <= matching
    assert set(moved) | set(left) == set(order), "a dead letter was lost"
    assert len(set(moved) & set(left)) <= 1  # at most the one in flight, confirmed and not acked
    assert len(left) == len(set(left))
    assert [order[m] for m in left] == sorted(order[m] for m in left), "the order changed"

    # A second replay finishes the job; the others are still in order.
    from workerrmq.broker.publisher import Publisher

    publisher = Publisher([RABBITMQ_URL])
    try:
        done = publisher.sift(dlq, queue, DeadLetterSelector(status="503"), None)
    finally:
        publisher.close()
    assert done.remaining == len(letters) - len(matching)
    assert set(_drain(amqp, queue)) | set(moved) == matching
    assert _drain(amqp, dlq) == [m for m, _ in letters if m not in matching]


def _peek_all(amqp: Any, queue: str) -> list[str]:
    """The ids of every message of *queue* in order, left in place (requeued on close)."""
    channel = amqp.connection.channel()
    ids = []
    while True:
        method, properties, _ = channel.basic_get(queue, auto_ack=False)
        if method is None:
            break
        ids.append(properties.message_id)
    channel.close()
    return ids
