"""Every error is JSON ``{"error": {"code", "message"}}``; never HTML, never a traceback."""

from __future__ import annotations

import logging

import pytest

from tests.support import json_error


@pytest.mark.parametrize(
    "data",
    ['{"name": ', "not json at all", '{"name": "x",}', "\udcff".encode("utf-8", "surrogatepass")],
)
def test_malformed_json_is_400(client, admin, data):
    response = client.post("/api/v1/queues", data=data, headers={**admin, "Content-Type": "application/json"})
    error = json_error(response, 400, code="invalid_input")
    assert "JSON" in error["message"]


@pytest.mark.parametrize("data", ["[1, 2]", '"a string"', "42", "null"])
def test_json_that_is_not_an_object_is_400(client, admin, data):
    response = client.post("/api/v1/queues", data=data, headers={**admin, "Content-Type": "application/json"})
    json_error(response, 400, code="invalid_input")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/queues", {"name": 5}, "name"),
        ("/api/v1/queues", {"name": ["a"]}, "name"),
        ("/api/v1/queues", {"name": "q", "durable": "maybe"}, "durable"),
        ("/api/v1/queues", {"name": "q", "type": "stream-ish"}, "type"),
        ("/api/v1/queues", {"name": "q", "arguments": "x"}, "arguments"),
        ("/api/v1/queues", {"name": "q", "arguments": {"message_ttl": "soon"}}, "arguments.message_ttl"),
        ("/api/v1/queues/q/messages", {"body": "x", "priority": "high"}, "priority"),
        ("/api/v1/queues/q/messages", {"messages": "x"}, "messages"),
        (
            "/api/v1/queues/q/messages",
            {"messages": [{"body": 1}, {"body": 2, "priority": -1}]},
            "messages.1.priority",
        ),
        ("/api/v1/queues/q/bindings", {"exchange": 3}, "exchange"),
        ("/api/v1/keys", {"name": "k", "scope": 1}, "scope"),
        ("/createQueue", {"queueName": 12}, "queueName"),
    ],
)
def test_wrong_types_are_400_naming_the_field(client, admin, path, body, field):
    error = json_error(client.post(path, json=body, headers=admin), 400, code="invalid_input")
    assert error["field"] == field
    assert field.split(".")[-1] in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/queues", {"name": "q", "colour": "blue"}, "colour"),
        ("/api/v1/queues/q/messages", {"body": "x", "routing_key": "k"}, "routing_key"),
        ("/api/v1/queues/q/messages", {"body": "x", "extra": 1}, "extra"),
        ("/api/v1/queues/q/bindings", {"exchange": "amq.direct", "args": {}}, "args"),
        ("/api/v1/keys", {"name": "k", "scope": "read", "token": "mine"}, "token"),
        ("/createQueue", {"queueName": "q", "durable": False}, "durable"),
    ],
)
def test_unknown_fields_are_400(client, admin, path, body, field):
    error = json_error(client.post(path, json=body, headers=admin), 400, code="invalid_input")
    assert error["field"] == field


def test_missing_required_field_is_400(client, admin):
    error = json_error(client.post("/api/v1/queues", json={}, headers=admin), 400)
    assert error["field"] == "name"


def test_unknown_route_is_404_json(client, admin):
    json_error(client.get("/no/such/route", headers=admin), 404, code="not_found")
    json_error(client.get("/no/such/route"), 404, code="not_found")  # no key: still 404 JSON
    json_error(client.get("/api/v1/nothing-here", headers=admin), 404)


def test_method_not_allowed_is_405_with_allow(client, admin):
    response = client.put("/api/v1/queues", json={}, headers=admin)
    json_error(response, 405, code="method_not_allowed")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    health = client.post("/healthz")
    json_error(health, 405)
    assert "GET" in health.headers["Allow"]


@pytest.mark.parametrize(
    "name",
    ["a/b", "..", ".", "ü-queue", "queue name", "x" * 300, "amq.reserved", "tab\tname", "", "emoji-🐇"],
)
def test_bad_queue_names_in_bodies_are_400(client, admin, name):
    response = client.post("/api/v1/queues", json={"name": name}, headers=admin)
    error = json_error(response, 400, code="invalid_input")
    assert error["field"] == "name"
    seed = client.post("/createQueue", json={"queueName": name}, headers=admin)
    json_error(seed, 400)


@pytest.mark.parametrize(
    "path",
    ["a%2Fb", "a/b", "..", "%2E%2E", "%C3%BC", "x" * 300, "amq.gen-x", "%F0%9F%90%87", "a%00b"],
)
def test_bad_queue_names_in_paths_are_4xx_json(client, admin, path):
    for method, suffix in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/purge"),
        ("GET", "/bindings"),
        ("GET", "/consumers"),
    ]:
        response = client.open(f"/api/v1/queues/{path}{suffix}", method=method, headers=admin)
        assert 400 <= response.status_code < 500, (method, path, suffix, response.status_code)
        json_error(response, response.status_code)
    published = client.post(f"/api/v1/queues/{path}/messages", json={"body": 1}, headers=admin)
    assert 400 <= published.status_code < 500
    json_error(published, published.status_code)


def test_long_name_is_a_clear_400(client, admin):
    error = json_error(client.get("/api/v1/queues/" + "x" * 300, headers=admin), 400)
    assert error["field"] == "name" and "255" in error["message"]


def test_conflict_is_409_json(client, admin, queue_name):
    name = queue_name()
    assert client.post("/api/v1/queues", json={"name": name}, headers=admin).status_code == 201
    response = client.post("/api/v1/queues", json={"name": name, "durable": False}, headers=admin)
    json_error(response, 409, code="conflict")


def test_auth_errors_are_json(client, make_key):
    json_error(client.get("/api/v1/queues"), 401, code="unauthorized")
    json_error(
        client.post("/api/v1/queues", json={"name": "x"}, headers=make_key("read")), 403, code="forbidden"
    )


def test_unexpected_error_is_500_json_without_traceback(app, admin, caplog):
    def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_url_rule("/test-boom", "test_boom", boom)
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="workerrmq.api"):
        response = client.get("/test-boom", headers=admin)
    error = json_error(response, 500, code="internal_error")
    assert "secret internals" not in response.get_data(as_text=True)
    assert "RuntimeError" not in error["message"]
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret internals" in str(logged[0].exc_info[1])


def test_no_html_anywhere(client, admin, make_key):
    """A sweep of error paths: each answers JSON."""
    read = make_key("read")
    attempts = [
        client.get("/index.html"),
        client.get("/static/nothing.css"),
        client.delete("/healthz"),
        client.patch("/api/v1/queues/x", headers=admin),
        client.get("/api/v1/keys/1", headers=admin),
        client.delete("/api/v1/keys/not-a-number", headers=admin),
        client.post("/api/v1/keys", data="<xml/>", headers={**admin, "Content-Type": "application/xml"}),
        client.post("/api/v1/queues", json={"name": "x"}, headers=read),
        client.get("/api/v1/queues", headers={"Authorization": "Bearer nope"}),
    ]
    for response in attempts:
        assert 400 <= response.status_code < 500
        json_error(response, response.status_code)
