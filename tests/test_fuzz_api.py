"""Issue 4, item 6: the API fuzzed from its own ``/openapi.json``, plus targeted bad input.

Schemathesis generates valid and invalid requests for every documented operation
and sends them with an admin key to a real app over the real broker. Every
answer must be below 500 and match what ``/openapi.json`` documents for it
(status code, content type, body schema).

The fuzzer must not touch anything but its own objects. Every queue, exchange,
routing key and connection name it sends that could name a real broker object
(a syntactically valid name) is rewritten into the run's own namespace
(``fuzz-<hex>-``) before the request goes out; names that are not valid stay
as generated, so validation is still fuzzed. A sentinel queue outside that
namespace, with one message and a binding, must be untouched afterwards, and
every queue the run created is deleted. The admin key cannot be revoked: a
``DELETE /api/v1/keys/{id}`` aimed at it is redirected to a throwaway key.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from flask import Flask

from workerrmq.broker.management import ManagementClient
from workerrmq.errors import NotFound
from workerrmq.services.names import NAME_MAX, NAME_PATTERN

PREFIX = f"fuzz-{uuid.uuid4().hex[:6]}-"
_VALID_NAME = re.compile(NAME_PATTERN.rstrip("$").lstrip("^"))
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


# -- keeping the fuzzer in its own namespace -----------------------------------------------


def _confined(value: Any, *, any_string: bool = False) -> Any:
    """*value* moved into the run's namespace if it could name a real broker object.

    Queue and exchange names outside ``NAME_PATTERN`` (or too long) cannot name any
    queue the tests or users create, and the API must refuse them, so they are
    left as generated. With *any_string* (routing keys, connection names) every
    string of a legal length is moved.
    """
    if not isinstance(value, str) or len(value) > NAME_MAX or value.startswith(PREFIX):
        return value
    if not any_string and not _VALID_NAME.fullmatch(value):
        return value
    return (PREFIX + value)[:NAME_MAX]


_BODY_NAMES = ("name", "queue", "queueName", "dead_letter_queue")


def confine(case: schemathesis.Case, *, protected_key_id: int, spare_key_id: Any) -> None:
    """Rewrite *case* in place so it can only reach objects of this run."""
    path, method = case.operation.path, case.method.upper()
    params = case.path_parameters or {}
    if path.startswith(("/api/v1/queues/{name}", "/api/v1/exchanges/{name}")):
        params["name"] = _confined(params.get("name"))
    elif path.startswith("/api/v1/connections/{name}"):
        params["name"] = _confined(params.get("name"), any_string=True)
    elif path == "/api/v1/keys/{key_id}" and params.get("key_id") == protected_key_id:
        params["key_id"] = spare_key_id()
    body = case.body
    if isinstance(body, dict) and not path.startswith("/api/v1/keys"):
        for field in _BODY_NAMES:
            if field in body:
                body[field] = _confined(body[field])
        if path.startswith("/api/v1/exchanges/"):
            _confine_routing_keys(body)
    if path == "/getQueue" and isinstance(case.query, dict) and "queueName" in case.query:
        case.query["queueName"] = _confined(case.query["queueName"])
    assert method  # every case names its method


def _confine_routing_keys(body: dict[str, Any]) -> None:
    if "routing_key" in body:
        body["routing_key"] = _confined(body["routing_key"], any_string=True)
    elif "messages" not in body:
        body["routing_key"] = PREFIX + "rk"  # the default ("") must not reach amq.fanout & co.
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                if "routing_key" in message:
                    message["routing_key"] = _confined(message["routing_key"], any_string=True)
                else:
                    message["routing_key"] = PREFIX + "rk"


# -- fixtures --------------------------------------------------------------------------------


def _queue_names(mgmt: ManagementClient) -> set[str]:
    names: set[str] = set()
    page = 1
    while True:
        raw = mgmt.list_queues(name=None, page=page, page_size=500)
        names |= {q["name"] for q in raw.get("items", [])}
        if page >= int(raw.get("page_count", 1)):
            return names
        page += 1


@pytest.fixture
def sentinel(mgmt: ManagementClient, amqp) -> Iterator[str]:
    """A queue outside the fuzz namespace with one message and one binding."""
    name = f"sentinel-{uuid.uuid4().hex[:10]}"
    mgmt.declare_queue(name, durable=True, arguments={})
    mgmt.bind_queue(name, "amq.direct", name)
    amqp.confirm_delivery()
    amqp.basic_publish("", name, b"keep me")
    yield name
    try:
        mgmt.delete_queue(name, if_empty=False, if_unused=False)
    except NotFound:
        pass


@pytest.fixture
def fuzz_app(app: Flask, mgmt: ManagementClient, sentinel: str) -> Iterator[Flask]:
    """The conftest app; afterwards every queue this run created is deleted and the
    sentinel is checked."""
    before = _queue_names(mgmt)
    yield app
    created = _queue_names(mgmt) - before
    # Everything in the namespace, and anything the API should never have accepted.
    strays = {n for n in created if n.startswith(PREFIX) or not _VALID_NAME.fullmatch(n)}
    for name in strays:
        try:
            mgmt.delete_queue(name, if_empty=False, if_unused=False)
        except NotFound:
            pass
    assert not {n for n in strays if not n.startswith(PREFIX)}, (
        f"the API created queues with invalid names: {sorted(strays)}"
    )
    queue = mgmt.get_queue(sentinel)
    assert queue["messages"] == 1, "the fuzzer reached a queue outside its namespace"
    bindings = mgmt.queue_bindings(sentinel)
    assert any(b.get("source") == "amq.direct" for b in bindings), "the sentinel lost its binding"


@pytest.fixture
def api_schema(fuzz_app: Flask) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)


@pytest.fixture
def admin_id(fuzz_app: Flask, admin: dict[str, str]) -> int:
    token = admin["Authorization"].split(" ", 1)[1]
    key = fuzz_app.extensions["workerrmq"].keys.authenticate(token)
    assert key is not None
    return int(key.id)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.timeout(600)
@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms(case, fuzz_app, admin, admin_id):
    keys = fuzz_app.extensions["workerrmq"].keys

    def spare_key() -> int:
        info, _ = keys.create(f"spare-{uuid.uuid4().hex[:8]}", "read")
        return int(info.id)

    confine(case, protected_key_id=admin_id, spare_key_id=spare_key)
    case.call_and_validate(headers=admin)


# -- targeted bad input (what tests/test_errors.py does not already cover) ---------------------


def _json_error(response, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data(True))
    if status is not None:
        assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_json_placeholder(client, admin):
    assert json  # replaced below
