"""Request formats (raw, CloudEvents binary and structured), trace context and filters.

The first part builds requests without I/O and reads them with the official CloudEvents
SDK. The second runs them end to end: consumers made through the API, messages through
the real broker, a real local endpoint that parses every request with the SDK.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time

import pika
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.v1.http import from_http
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook

from tests.support import wait_for
from workerrmq.core.consumer import ConsumerSpec
from workerrmq.worker.delivery import Attempt, Target
from workerrmq.worker.formats import CE_CONTENT_TYPE

SECRET = "whsec_" + base64.b64encode(b"a test signing key, 32 bytes ok").decode()
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SENT_AT = dt.datetime(2024, 5, 1, 12, 30, 5)  # AMQP timestamps: whole seconds, no zone


def make_attempt(**overrides) -> Attempt:
    values = {
        "message_id": "m-1",
        "number": 1,
        "body": b'{"amount": 150}',
        "content_type": "application/json",
        "headers": {"type": "order.created", "traceparent": TRACEPARENT, "tenant": "acme"},
        "correlation_id": None,
        "routing_key": "orders.eu",
        "redelivered": False,
        "timestamp": SENT_AT,
    }
    values.update(overrides)
    return Attempt(**values)


def request(fmt: str, attempt: Attempt, **spec) -> tuple[dict[str, str], bytes]:
    """The headers and body *fmt* sends for *attempt*, as :meth:`Target.send` makes them."""
    target = Target(
        ConsumerSpec(
            id="c0ffee",
            name="orders",
            queue="orders",
            target_url="http://127.0.0.1:9/hook",
            format=fmt,
            **spec,
        ),
        "orders",
    )
    rendered = target._renderer.render(attempt)
    return target.headers(attempt, int(time.time()), rendered), rendered.body


def verify_signature(body: bytes, headers: dict[str, str]) -> None:
    """Check the Standard Webhooks signature over *body*: with the reference library when the
    body is JSON (it parses what it verifies), else by recomputing the HMAC as the spec says."""
    try:
        json.loads(body)
    except ValueError:
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert expected in headers["webhook-signature"].split(" ")
    else:
        Webhook(SECRET).verify(body, headers)  # raises if the signature is over other bytes


def parsed(headers: dict[str, str], body: bytes):
    """The event, read by both of the SDK's HTTP readers (the 1.x API and the core one, which
    checks attribute names and types); they must agree."""
    event = from_http(headers, body)
    core = from_http_event(HTTPMessage(headers={k.lower(): v for k, v in headers.items()}, body=body))
    assert core.get_specversion() == event["specversion"] == "1.0"
    return event, core


@pytest.mark.parametrize("fmt", ["cloudevents-binary", "cloudevents-structured"])
def test_the_sdk_reads_the_mapped_attributes(fmt: str) -> None:
    headers, body = request(fmt, make_attempt())
    event, core = parsed(headers, body)
    assert event["specversion"] == "1.0"
    assert event["id"] == "m-1"
    assert event["source"] == "/workerrmq/orders"
    assert event["type"] == "order.created"  # the type header
    assert core.get_time() == SENT_AT.replace(tzinfo=dt.UTC)
    assert event["datacontenttype"] == "application/json"
    assert event.data == {"amount": 150}
    assert headers["traceparent"] == TRACEPARENT
    assert headers["X-WorkerRMQ-Header-tenant"] == "acme"  # other AMQP headers forwarded as in raw
    if fmt == "cloudevents-structured":
        assert headers["Content-Type"] == CE_CONTENT_TYPE
        assert json.loads(body)["data"] == {"amount": 150}
    else:
        assert body == b'{"amount": 150}'


@pytest.mark.parametrize("fmt", ["cloudevents-binary", "cloudevents-structured"])
def test_type_falls_back_to_the_type_property_then_the_routing_key(fmt: str) -> None:
    bare = make_attempt(headers={}, message_type=None)
    assert parsed(*request(fmt, bare))[0]["type"] == "orders.eu"
    typed = make_attempt(headers={}, message_type="invoice.paid")
    assert parsed(*request(fmt, typed))[0]["type"] == "invoice.paid"
    source = parsed(*request(fmt, bare, ce_source="https://shop.example/orders"))[0]["source"]
    assert source == "https://shop.example/orders"


@pytest.mark.parametrize("fmt", ["cloudevents-binary", "cloudevents-structured"])
def test_a_message_sent_through_the_amqp_binding_keeps_its_attributes(fmt: str) -> None:
    attempt = make_attempt(
        headers={
            "cloudEvents:id": "evt-42",
            "cloudEvents:type": "com.example.shipped",
            "cloudEvents:source": "urn:shop:warehouse",
            "ce_subject": "parcel 7",
            "ce-priorityclass": "gold",
            "cloudEvents:retries": 3,
            "cloudEvents:specversion": "0.3",  # not taken: the request is 1.0
            "cloudEvents:time": "yesterday",  # not a time: the AMQP timestamp stands
        }
    )
    headers, body = request(fmt, attempt)
    event, core = parsed(headers, body)
    assert (event["id"], event["type"], event["source"]) == (
        "evt-42",
        "com.example.shipped",
        "urn:shop:warehouse",
    )
    # A space: percent-encoded in binary mode, as the binding says. The SDK's core reader
    # decodes it; its 1.x reader (cloudevents.v1.http) hands values on as they came.
    assert core.get_subject() == "parcel 7"
    assert event["priorityclass"] == "gold"
    assert str(event["retries"]) == "3"
    assert event["specversion"] == "1.0"
    assert core.get_time() == SENT_AT.replace(tzinfo=dt.UTC)
    assert not any(name.startswith("X-WorkerRMQ-Header-c") for name in headers)  # not forwarded twice


def test_binary_mode_percent_encodes_what_a_header_cannot_carry() -> None:
    attempt = make_attempt(message_id='id with "quotes", 100% and ü', headers={})
    headers, _ = request("cloudevents-binary", attempt)
    assert headers["ce-id"].isascii() and " " not in headers["ce-id"]
    assert parsed(headers, _)[1].get_id() == 'id with "quotes", 100% and ü'


def test_structured_mode_sends_a_body_that_is_not_json_as_data_base64() -> None:
    for content_type, body in [
        ("application/octet-stream", b"\x00\xffbinary"),
        ("application/json", b"{nope"),
    ]:
        attempt = make_attempt(body=body, content_type=content_type)
        headers, sent = request("cloudevents-structured", attempt)
        document = json.loads(sent)
        assert "data" not in document
        assert base64.b64decode(document["data_base64"]) == body
        assert parsed(headers, sent)[0].data == body


def test_a_message_without_content_type_or_timestamp() -> None:
    attempt = make_attempt(content_type=None, timestamp=None, body=b"plain")
    headers, body = request("cloudevents-binary", attempt)
    assert "ce-time" not in headers
    parsed(headers, body)  # (the SDK's readers then make a time up)
    assert headers["Content-Type"] == "application/octet-stream"
    headers, body = request("cloudevents-structured", attempt)
    assert set(json.loads(body)) == {"specversion", "id", "source", "type", "data_base64"}


@pytest.mark.parametrize("fmt", ["raw", "cloudevents-binary", "cloudevents-structured"])
def test_the_signature_covers_exactly_the_bytes_sent(fmt: str) -> None:
    for attempt in (make_attempt(), make_attempt(body=b"\x00\xff", content_type=None)):
        headers, body = request(fmt, attempt, signing_secret=SECRET)
        verify_signature(body, headers)


@pytest.mark.parametrize("fmt", ["raw", "cloudevents-binary", "cloudevents-structured"])
def test_trace_context_goes_out_unprefixed_and_a_bad_value_is_dropped(fmt: str) -> None:
    good = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE", "baggage": b"userId=alice"}
    headers, _ = request(fmt, make_attempt(headers=good))
    assert headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == "congo=t61rcWkgMzE"
    assert headers["baggage"] == "userId=alice"
    bad = {"traceparent": "00-abc\r\nX-Injected: 1", "tracestate": "é=1", "baggage": "k=" + "v" * 9000}
    headers, _ = request(fmt, make_attempt(headers=bad))
    assert not {"traceparent", "tracestate", "baggage"} & set(headers)
    headers, _ = request(fmt, make_attempt(headers={"traceparent": 17}))
    assert "traceparent" not in headers


def test_raw_is_unchanged_by_default() -> None:
    headers, body = request("raw", make_attempt(headers={"tenant": "acme"}))
    assert body == b'{"amount": 150}'
    assert headers["Content-Type"] == "application/json"
    assert not any(name.lower().startswith("ce-") for name in headers)


# -- end to end: the API, the broker, a worker and a real endpoint --------------------------


def publish(amqp, queue: str, body: bytes, **properties) -> None:
    amqp.confirm_delivery()
    amqp.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties), mandatory=True)


def api_stats(client, admin, consumer_id: str) -> dict:
    return client.get(f"/api/v1/consumers/{consumer_id}", headers=admin).json["stats"]


def queue_empty(mgmt, queue: str) -> bool:
    found = mgmt.get_queue(queue)
    return not int(found.get("messages_ready") or 0) and not int(found.get("messages_unacknowledged") or 0)


def test_filtered_messages_are_acked_undelivered_and_counted(
    settings, start_engine, endpoint, make_consumer, amqp, client, admin, mgmt
):
    worker = start_engine(settings, report_interval=0.2)
    consumer, queue = make_consumer(endpoint.url, filter="body.amount > 100")
    worker.runner(consumer["id"])
    publish(amqp, queue, b'{"amount": 50}', message_id="small")  # false: filtered
    publish(amqp, queue, b'{"amount": "lots"}', message_id="text")  # string > int: fails
    publish(amqp, queue, b"\x00 not json", message_id="binary")  # bytes have no fields: fails
    publish(amqp, queue, b'{"amount": 500}', message_id="big", content_type="application/json")
    publish(amqp, queue, b'{"amount": 700}', message_id="bigger")  # delivered after the failures

    def counted() -> dict | None:
        stats = api_stats(client, admin, consumer["id"])
        counts = (stats["delivered"], stats["filtered"], stats["filter_errors"])
        return stats if counts == (2, 1, 2) else None

    stats = wait_for(counted, what="delivered 2, filtered 1, filter_errors 2 in the API's statistics")
    assert stats["failed"] == 0
    assert sorted(endpoint.ids()) == ["big", "bigger"]
    # The worker runs in this process: its Prometheus series are in the default registry.
    for outcome, count in (("filtered", 1), ("filter_errors", 2)):
        labels = {"consumer": consumer["name"], "outcome": outcome}
        assert REGISTRY.get_sample_value("workerrmq_deliveries_total", labels) == count
    wait_for(lambda: queue_empty(mgmt, queue), what="every message acked")
    assert worker.engine.runners[consumer["id"]].healthy


def test_a_bad_filter_is_refused_with_its_position(client, admin) -> None:
    answer = client.post(
        "/api/v1/consumers",
        json={"queue": "anything", "target_url": "http://127.0.0.1:9/hook", "filter": "body.amount >"},
        headers=admin,
    )
    assert answer.status_code == 400
    text = json.dumps(answer.json)
    assert "filter" in text and "line 1, column 14" in text
    answer = client.post(
        "/api/v1/consumers",
        json={"queue": "anything", "target_url": "http://127.0.0.1:9/hook", "filter": "msg.amount > 1"},
        headers=admin,
    )
    assert answer.status_code == 400 and "undeclared reference to 'msg'" in json.dumps(answer.json)


@pytest.mark.parametrize("fmt", ["cloudevents-binary", "cloudevents-structured"])
def test_the_cloudevents_sdk_reads_every_request(fmt, settings, start_engine, endpoint, make_consumer, amqp):
    events: list = []
    failures: list[str] = []
    lock = threading.Lock()

    def read_as_cloudevent(received):
        try:
            event, _ = parsed(received.headers, received.body)
            verify_signature(received.body, received.headers)
        except Exception as exc:  # noqa: BLE001 - the test reports what the SDK refused
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")
            return 400, {}
        with lock:
            events.append((event, received.headers))
        return 200, {}

    endpoint.respond = read_as_cloudevent
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, format=fmt, signing_secret=SECRET, max_attempts=1)
    worker.runner(consumer["id"])
    publish(
        amqp,
        queue,
        b'{"sku": "A-1"}',
        message_id="json-1",
        content_type="application/json",
        timestamp=int(SENT_AT.replace(tzinfo=dt.UTC).timestamp()),
        headers={"type": "order.created", "traceparent": TRACEPARENT, "tracestate": "k=v"},
    )
    publish(amqp, queue, b"\x00\xffbinary", message_id="bin-1", headers={"cloudEvents:type": "blob.put"})
    publish(amqp, queue, b"", message_id="empty-1")

    wait_for(lambda: len(events) + len(failures) >= 3, what="three requests")
    assert failures == []
    by_id = {event["id"]: (event, headers) for event, headers in events}
    first, first_headers = by_id["json-1"]
    assert (first["type"], first["source"], first.data) == (
        "order.created",
        f"/workerrmq/{queue}",
        {"sku": "A-1"},
    )
    assert first["time"].startswith("2024-05-01T12:30:05")
    assert first_headers["traceparent"] == TRACEPARENT and first_headers["tracestate"] == "k=v"
    second, _ = by_id["bin-1"]
    assert second["type"] == "blob.put" and second.data == b"\x00\xffbinary"
    assert by_id["empty-1"][0]["type"] == queue  # no type header: the routing key


def test_raw_requests_carry_trace_context_unprefixed(settings, start_engine, endpoint, make_consumer, amqp):
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url)
    worker.runner(consumer["id"])
    publish(amqp, queue, b"hi", headers={"traceparent": TRACEPARENT, "baggage": "k=\u00e9"})
    wait_for(endpoint.count, what="the delivery")
    got = endpoint.received[0].headers
    assert got["traceparent"] == TRACEPARENT
    assert "baggage" not in got  # not ASCII: dropped, not forwarded
