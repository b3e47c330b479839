"""The publish lane on the event loop (api/native.py) against Flask's answers, with a real
broker: what it serves is answered as Flask answers it, and everything else reaches Flask
untouched, with nothing published."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from tests.support import wait_for
from workerrmq import metrics
from workerrmq.api.native import PublishLane
from workerrmq.loop import new_event_loop
from workerrmq.server import BufferedWSGI
from workerrmq.store import keys

Answer = tuple[int, dict[str, str], bytes]
UNKNOWN = "Bearer wrmq_nope"
_ID = re.compile(rb'"message_id":"[0-9a-f]{32}"')


@pytest.fixture(autouse=True)
def _keys_remembered_for_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane uses only keys remembered within keys.CACHE_SECONDS (2 s); on a loaded
    machine a test can take longer than that between remembering a key and offering the
    lane its request, which then goes to Flask. Revocations still clear it at once."""
    monkeypatch.setattr(keys, "CACHE_SECONDS", 300.0)


@pytest.fixture
def loop(app: Flask) -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread, as the server's runs, that the app publishes from."""
    loop = new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app.extensions["workerrmq"].publisher.serve_on(loop)
    yield loop
    app.extensions["workerrmq"].close()  # its connection, on the loop, while the loop runs
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _scope(path: str, headers: dict[str, str], method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 5000),
    }


class Sent:
    """What an ASGI app sent, as (status, headers, body)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def answer(self) -> Answer:
        start, body = self.messages
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers, body["body"]


def _lane(app: Flask, loop: asyncio.AbstractEventLoop, path: str, headers: dict[str, str], body: bytes):
    """Offer a request to the lane: (whether it took it, what it sent)."""
    sent = Sent()
    future = asyncio.run_coroutine_threadsafe(PublishLane(app).serve(_scope(path, headers), body, sent), loop)
    return future.result(30), sent


def _through_server(
    app: Flask, loop: asyncio.AbstractEventLoop, path: str, headers: dict[str, str], body: bytes
):
    """The request through BufferedWSGI as the server runs it, the lane first."""
    server = BufferedWSGI(app, threads=2, max_body=None, body_timeout=10, native=PublishLane(app).serve)
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    sent = Sent()
    asyncio.run_coroutine_threadsafe(server(_scope(path, headers), receive, sent), loop).result(30)
    return sent.answer()


def _flask(app: Flask, path: str, headers: dict[str, str], body: bytes) -> Answer:
    response = app.test_client().post(path, data=body, headers=headers)
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.get_data()


def _masked(answer: Answer) -> Answer:
    status, headers, body = answer
    return status, headers, _ID.sub(b'"message_id":"*"', body)


def _ready(app: Flask, auth: dict[str, str]) -> None:
    """Have the key remembered, as a request through Flask leaves it."""
    token = auth["Authorization"].split(" ", 1)[1]
    assert app.extensions["workerrmq"].keys.authenticate(token) is not None


def _queued(amqp, queue: str) -> int:
    return amqp.queue_declare(queue, passive=True).method.message_count


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("queues/{q}", b'{"body": "one"}'),
        ("queues/{q}", b'{"body": {"n": 1}, "priority": 3, "headers": {"x-a": "b"}, "message_id": "m-1"}'),
        ("queues/{q}", b'{"messages": [{"body": "a"}, {"body_base64": "AAE="}]}'),
        ("exchanges/amq.default", b'{"body": "routed", "routing_key": "{q}"}'),
        ("exchanges/amq.default", b'{"messages": [{"body": "x"}], "routing_key": "{q}"}'),
        ("queues/{q}-missing", b'{"body": "nowhere"}'),  # published, unroutable: 404
        ("exchanges/no-such-exchange-{q}", b'{"body": "nowhere"}'),  # 404 naming the exchange
    ],
)
def test_the_lane_answers_as_flask_does(app, loop, admin, queue, amqp, route, body):
    path = f"/api/v1/{route.format(q=queue)}/messages"
    body = body.replace(b"{q}", queue.encode())
    headers = {**admin, "Content-Type": "application/json"}
    _ready(app, admin)
    before = _queued(amqp, queue)
    flask = _flask(app, path, headers, body)
    took, sent = _lane(app, loop, path, headers, body)
    assert took
    assert _masked(sent.answer()) == _masked(flask)
    if flask[0] < 300:  # both published the same messages
        per_request = flask[2].count(b"message_id")
        wait_for(lambda: _queued(amqp, queue) == before + 2 * per_request, timeout=5, what="both publishes")


def test_what_the_lane_publishes_reaches_the_broker(app, loop, admin, queue, amqp):
    _ready(app, admin)
    body = b'{"body": "hi", "content_type": "text/x", "correlation_id": "c-1", "expiration": 5000}'
    took, sent = _lane(
        app, loop, f"/api/v1/queues/{queue}/messages", {**admin, "Content-Type": "application/json"}, body
    )
    assert took and sent.answer()[0] == 201
    method, properties, content = wait_for(
        lambda: (got := amqp.basic_get(queue, auto_ack=True))[0] and got, timeout=5, what="the message"
    )
    assert content == b"hi"
    assert (properties.content_type, properties.correlation_id) == ("text/x", "c-1")
    assert (properties.expiration, properties.delivery_mode) == ("5000", 2)


@pytest.mark.parametrize(
    ("why", "path", "headers", "body"),
    [
        ("no key", "/api/v1/queues/{q}/messages", {}, b'{"body": "a"}'),
        (
            "unknown key",
            "/api/v1/queues/{q}/messages",
            {"Authorization": "Bearer wrmq_nope"},
            b'{"body": "a"}',
        ),
        ("read key", "/api/v1/queues/{q}/messages", "read", b'{"body": "a"}'),
        ("not JSON", "/api/v1/queues/{q}/messages", {"Content-Type": "text/plain"}, b'{"body": "a"}'),
        ("unusual body", "/api/v1/queues/{q}/messages", None, b'{"body": "a", "priority": 5.0}'),
        ("bad JSON", "/api/v1/queues/{q}/messages", None, b'{"body": '),
        ("bad name", "/api/v1/queues/{q}\r\n/messages", None, b'{"body": "a"}'),
        ("another route", "/api/v1/queues/{q}", None, b'{"body": "a"}'),
        ("trailing slash", "/api/v1/queues/{q}/messages/", None, b'{"body": "a"}'),
    ],
)
def test_anything_else_is_left_to_flask_unpublished(
    app, loop, admin, make_key, queue, amqp, why, path, headers, body
):
    if headers is None:
        headers = {**admin, "Content-Type": "application/json"}
    elif headers == "read":
        headers = {**make_key("read"), "Content-Type": "application/json"}
    _ready(app, admin)
    if headers.get("Authorization", UNKNOWN) != UNKNOWN:
        _ready(app, headers)
    took, sent = _lane(app, loop, path.format(q=queue), headers, body)
    assert not took, why
    assert sent.messages == []
    assert _queued(amqp, queue) == 0


def test_a_key_not_yet_remembered_goes_through_flask_once(app, loop, make_key, queue, amqp):
    """Flask looks the key up (and counts failures); the lane only uses what it remembered."""
    headers = {**make_key("publish"), "Content-Type": "application/json"}
    path = f"/api/v1/queues/{queue}/messages"
    first = _through_server(app, loop, path, headers, b'{"body": "a"}')
    assert first[0] == 201
    took, sent = _lane(app, loop, path, headers, b'{"body": "b"}')
    assert took and sent.answer()[0] == 201
    wait_for(lambda: _queued(amqp, queue) == 2, timeout=5, what="both messages")


def test_a_revoked_key_is_refused_at_once(app, loop, admin, make_key, queue, amqp):
    headers = {**make_key("publish"), "Content-Type": "application/json"}
    _ready(app, headers)
    keys = app.extensions["workerrmq"].keys
    token = headers["Authorization"].split(" ", 1)[1]
    keys.revoke(keys.authenticate(token).id)
    path = f"/api/v1/queues/{queue}/messages"
    status, _, body = _through_server(app, loop, path, headers, b'{"body": "a"}')
    assert status == 401 and b"unauthorized" in body
    assert _queued(amqp, queue) == 0


def test_the_lane_logs_and_counts_as_flask_does(app, loop, admin, queue, caplog):
    _ready(app, admin)
    route = "/api/v1/queues/<name>/messages"
    counter = metrics.HTTP_REQUESTS.labels("POST", route, "201")
    before = counter._value.get()
    path = f"/api/v1/queues/{queue}/messages"
    headers = {**admin, "Content-Type": "application/json; charset=utf-8"}
    with caplog.at_level(logging.INFO, logger="workerrmq.access"):
        _flask(app, path, headers, b'{"body": "a"}')
        took, _ = _lane(app, loop, path, headers, b'{"body": "b"}')
    assert took
    flask_line, lane_line = [r for r in caplog.records if r.name == "workerrmq.access"]
    key_name = app.extensions["workerrmq"].keys.authenticate(admin["Authorization"][7:]).name
    for record in (flask_line, lane_line):
        assert re.fullmatch(rf"POST {path} 201 [0-9.]+ms key={key_name}", record.getMessage())
        assert (record.method, record.path, record.status, record.key_name) == ("POST", path, 201, key_name)
    assert counter._value.get() == before + 2


def test_the_lane_serves_under_the_url_prefix(make_settings, broker, queue_name, amqp):
    from workerrmq.api import create_app

    app = create_app(make_settings(url_prefix="/wrmq"))
    loop = new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app.extensions["workerrmq"].publisher.serve_on(loop)
    try:
        _, token = app.extensions["workerrmq"].keys.create("p", "publish")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        _ready(app, headers)
        queue = queue_name("prefix")
        amqp.queue_declare(queue)
        took, sent = _lane(app, loop, f"/wrmq/api/v1/queues/{queue}/messages", headers, b'{"body": "a"}')
        assert took and sent.answer()[0] == 201
        assert _queued(amqp, queue) == 1
    finally:
        app.extensions["workerrmq"].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_blocking_publish_on_the_publishers_loop_fails_instead_of_hanging(app, loop, queue):
    publisher = app.extensions["workerrmq"].publisher

    async def on_the_loop() -> None:
        publisher.publish("", [])

    with pytest.raises(RuntimeError, match="never return"):
        asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(10)


def test_flask_publishes_through_the_servers_loop(app, loop, admin, queue, amqp):
    """A publish the lane leaves to Flask hops from its thread to the loop and back."""
    headers = {**admin, "Content-Type": "application/json"}
    threads = {t.ident for t in threading.enumerate() if t.name == "workerrmq-publisher"}
    status, _, body = _through_server(
        app, loop, f"/api/v1/queues/{queue}/messages", headers, b'{"body": "a", "priority": 5.0}'
    )
    assert status == 201, body
    assert _queued(amqp, queue) == 1
    assert {t.ident for t in threading.enumerate() if t.name == "workerrmq-publisher"} <= threads
