"""Who gets in, where deliveries may go, and what never shows up in output."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import uuid

import pytest
import requests

from tests.conftest import MANAGEMENT_URL
from tests.endpoint import Endpoint
from tests.support import broker_user, free_port, http_up, wait_for
from tests.workers import stop_processes, worker_process

FORBIDDEN_TARGETS = [
    "http://127.0.0.1/hook",
    "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/hook",
    "http://0.0.0.0/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://localhost/hook",
]


def _dead_letter(amqp, queue: str):
    """The properties of the next message in *queue*'s dead-letter queue, or None."""
    method, props, _ = amqp.basic_get(f"{queue}.dlq", auto_ack=True)
    return props if method else None


def test_repeated_failed_authentication_is_limited(make_settings):
    from workerrmq.api import create_app

    app = create_app(make_settings(auth_failure_limit=5))
    try:
        client = app.test_client()
        attacker = {"REMOTE_ADDR": "198.51.100.7"}
        for _ in range(5):
            assert (
                client.get(
                    "/api/v1/queues", headers={"Authorization": "Bearer nope"}, environ_base=attacker
                ).status_code
                == 401
            )
        limited = client.get(
            "/api/v1/queues", headers={"Authorization": "Bearer nope"}, environ_base=attacker
        )
        assert limited.status_code == 429
        assert limited.json["error"]["code"] == "too_many_requests"
        assert int(limited.headers["Retry-After"]) >= 1
        # Another client is not affected.
        other = client.get("/api/v1/queues", environ_base={"REMOTE_ADDR": "198.51.100.8"})
        assert other.status_code == 401
    finally:
        app.extensions["workerrmq"].close()


@pytest.mark.parametrize("target", FORBIDDEN_TARGETS)
def test_guard_refuses_internal_targets(make_settings, make_app, queue_name, target):
    client, headers = make_app(make_settings(block_private_targets=True))
    queue = queue_name("guard")
    client.post("/api/v1/queues", json={"name": queue}, headers=headers)
    response = client.post("/api/v1/consumers", json={"queue": queue, "target_url": target}, headers=headers)
    assert response.status_code == 400, response.json
    assert response.json["error"]["field"] == "target_url"
    message = response.json["error"]["message"]
    assert "refused" in message or "Not a valid URL" in message, message


def test_guard_checks_again_at_connect_time(
    make_settings, client, admin, queue_name, endpoint, start_engine, amqp
):
    """The API allowed the target (its guard is off), the worker's guard is on: the
    worker refuses to connect and dead-letters the message with the reason."""
    worker = start_engine(make_settings(block_private_targets=True))
    queue = queue_name("guard")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    target = endpoint.url.replace("127.0.0.1", "localhost")
    consumer = client.post(
        "/api/v1/consumers", json={"queue": queue, "target_url": target}, headers=admin
    ).json
    worker.runner(consumer["id"])
    client.post(f"/api/v1/queues/{queue}/messages", json={"body": "x"}, headers=admin)

    props = wait_for(lambda: _dead_letter(amqp, queue), timeout=20, what="the refused message in the DLQ")
    assert "blocked" in props.headers["x-workerrmq-last-error"]
    assert endpoint.count() == 0


def test_redirects_are_not_followed(settings, client, admin, queue_name, endpoint, start_engine, amqp):
    with Endpoint() as internal:
        endpoint.respond = lambda r: (302, {"Location": internal.url})
        worker = start_engine(settings)
        queue = queue_name("redirect")
        client.post("/api/v1/queues", json={"name": queue}, headers=admin)
        consumer = client.post(
            "/api/v1/consumers", json={"queue": queue, "target_url": endpoint.url}, headers=admin
        ).json
        worker.runner(consumer["id"])
        client.post(f"/api/v1/queues/{queue}/messages", json={"body": "x"}, headers=admin)

        props = wait_for(
            lambda: _dead_letter(amqp, queue), timeout=20, what="the redirected message in the DLQ"
        )
        assert props.headers["x-workerrmq-last-status"] == 302
        assert internal.count() == 0


@pytest.fixture
def secret_broker_user(broker):
    """A RabbitMQ user with a distinctive password, deleted afterwards."""
    user = f"wrmq-{uuid.uuid4().hex[:8]}"
    password = f"brokerpw-{secrets.token_hex(12)}"
    with broker_user(MANAGEMENT_URL, user, password, tags="administrator"):
        yield user, password


def test_no_secret_in_any_output(secret_broker_user, tmp_path, endpoint, queue_name, make_settings):
    """API and worker run as processes at DEBUG level with distinctive secrets; the
    secrets appear in no log line and no response (a created key's token is shown
    once, in the answer that created it, and nowhere else)."""
    user, password = secret_broker_user
    api_key = f"wrmq_apikey{secrets.token_hex(16)}"
    signing = "whsec_" + base64.b64encode(b"signing-" + secrets.token_bytes(16)).decode()
    port = free_port()
    env = {
        **os.environ,
        "RABBITMQ_URL": f"amqp://{user}:{password}@127.0.0.1:5672/%2F",
        "RABBITMQ_MANAGEMENT_URL": f"http://{user}:{password}@127.0.0.1:15672",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "WORKERRMQ_API_KEY": api_key,
        "BIND": f"127.0.0.1:{port}",
        "API_WORKERS": "1",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
    }
    api_log = tmp_path / "api.log"
    with api_log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "workerrmq.cli", "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    worker = worker_process(
        make_settings(
            database_url=env["DATABASE_URL"],
            rabbitmq_url=env["RABBITMQ_URL"],
            rabbitmq_management_url=env["RABBITMQ_MANAGEMENT_URL"],
        ),
        tmp_path / "worker.log",
        LOG_LEVEL="DEBUG",
    )
    base = f"http://127.0.0.1:{port}"
    answers: list[str] = []
    try:
        wait_for(lambda: http_up(f"{base}/healthz"), timeout=30, what="the API process")
        headers = {"Authorization": f"Bearer {api_key}"}

        def call(method: str, path: str, **kwargs) -> requests.Response:
            kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
            response = requests.request(method, base + path, timeout=10, **kwargs)
            answers.append(response.text)
            return response

        queue = queue_name("secret")
        call("POST", "/api/v1/queues", json={"name": queue})
        endpoint.respond = lambda r: (503, {}) if r.headers["X-WorkerRMQ-Attempt"] == "1" else (200, {})
        consumer = call(
            "POST",
            "/api/v1/consumers",
            json={
                "queue": queue,
                "target_url": endpoint.url,
                "signing_secret": signing,
                "initial_delay": 0.05,
                "max_delay": 0.1,
            },
        ).json()
        call("GET", f"/api/v1/consumers/{consumer['id']}")
        call("GET", "/getConsumers")
        call("GET", "/api/v1/connections")
        created = requests.post(
            base + "/api/v1/keys", headers=headers, timeout=10, json={"name": "second", "scope": "read"}
        ).json()
        new_token = created["key"]
        call("GET", "/api/v1/keys")
        call("GET", "/api/v1/queues", headers={"Authorization": f"Bearer {new_token}x"})
        call("POST", f"/api/v1/queues/{queue}/messages", json={"body": "hello"})
        wait_for(lambda: endpoint.delivered_ids(), timeout=30, what="the delivery")
        call("GET", "/readyz")
    finally:
        stop_processes(api, worker)

    output = api_log.read_text() + (tmp_path / "worker.log").read_text()
    assert "workerrmq.access" in output and "DEBUG" in output  # the logs were really written
    for secret in (api_key, new_token, signing, signing[len("whsec_") :], password):
        assert secret not in output, f"a secret leaked into the logs: {secret[:10]}..."
        assert all(secret not in answer for answer in answers), "a secret leaked into a response"


def test_a_stored_definition_with_a_framing_header_sends_nothing(
    settings, client, admin, queue_name, endpoint, start_engine, amqp
):
    """A definition stored before the API refused ``Content-Length: 0`` (which made every
    endpoint read an empty body, answer 200, and the message count as delivered): the
    worker does not run it, its status and last error say why, and its messages wait in
    the queue; once the header is gone they arrive whole."""
    worker = start_engine(settings)
    queue = queue_name("framing")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    spec = worker.engine.store.create(
        {"name": "framing", "queue": queue, "target_url": endpoint.url, "headers": {"content-length": "0"}}
    )
    client.post(f"/api/v1/queues/{queue}/messages", json={"body": "the whole body"}, headers=admin)
    worker.runner(spec.id, status="invalid_definition")
    url = f"/api/v1/consumers/{spec.id}"
    stats = wait_for(
        lambda: (
            client.get(url, headers=admin).json["stats"]["last_error"]
            and client.get(url, headers=admin).json["stats"]
        ),
        timeout=15,
        what="the consumer's last error",
    )
    assert "content-length" in stats["last_error"]
    assert stats["status"] == ["invalid_definition"]
    assert amqp.queue_declare(queue, passive=True).method.message_count == 1
    assert endpoint.count() == 0

    fixed = client.patch(url, json={"headers": {"X-Tenant": "acme"}}, headers=admin)
    assert fixed.status_code == 200, fixed.json
    wait_for(endpoint.delivered_ids, timeout=20, what="the delivery after the fix")
    assert endpoint.bodies() == [b"the whole body"]
