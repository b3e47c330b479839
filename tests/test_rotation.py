"""Signing-secret rotation: ``POST /api/v1/consumers/{id}/signing-secret/rotate`` sets a new
secret, and for a grace period requests carry the new and the old signature, each verified
here by the Standard Webhooks reference library."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import pika
import pytest
from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.serving import make_server

from tests.endpoint import Received
from tests.support import json_error, wait_for
from workerrmq.cli import main
from workerrmq.core.signing import new_secret, secret_bytes, signature_headers

OLD = "whsec_" + "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC0xMjM0NTY="


def publish(amqp, queue: str, name: str) -> None:
    """Publish a JSON body (the reference library parses what it verifies) named *name*."""
    amqp.confirm_delivery()
    body = json.dumps({"name": name}).encode()
    amqp.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, message_id=name))


def verifies(secret: str, received: Received) -> bool:
    headers = {k.lower(): v for k, v in received.headers.items()}
    try:
        Webhook(secret).verify(received.body, headers)
    except WebhookVerificationError:
        return False
    return True


def rotate(client, admin, consumer_id: str, **body: Any):
    return client.post(f"/api/v1/consumers/{consumer_id}/signing-secret/rotate", json=body, headers=admin)


def stored_bytes(settings) -> bytes:
    path = settings.database_url.removeprefix("sqlite:///")
    return b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))


# -- signing, without I/O ----------------------------------------------------------------------


def test_several_keys_give_one_header_with_each_signature():
    new = new_secret()
    assert new.startswith("whsec_") and len(secret_bytes(new)) == 32 and new != new_secret()
    headers = signature_headers([secret_bytes(new), secret_bytes(OLD)], "msg_1", int(time.time()), b"{}")
    assert headers["webhook-signature"].count("v1,") == 2 and " " in headers["webhook-signature"]
    for secret in (new, OLD):
        Webhook(secret).verify(b"{}", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(b"{}", headers)


# -- through the API and the worker --------------------------------------------------------


def test_rotation_signs_with_both_during_grace_then_only_the_new(
    settings, start_engine, endpoint, make_consumer, client, admin, amqp, caplog
):
    caplog.set_level(logging.DEBUG)
    worker = start_engine(settings)
    consumer, queue = make_consumer(endpoint.url, signing_secret=OLD)
    worker.runner(consumer["id"])

    answer = rotate(client, admin, consumer["id"])
    assert answer.status_code == 200, answer.json
    new = answer.json["signing_secret"]
    assert new.startswith("whsec_") and len(secret_bytes(new)) == 32
    assert answer.json["version"] == consumer["version"] + 1  # running workers restart it
    assert answer.json["signing"] is True and OLD not in json.dumps(answer.json)
    assert answer.json["signing_previous_until"] is not None  # the old secret still signs
    worker.runner(consumer["id"])  # the new version runs
    wait_for(lambda: worker.engine.runners[consumer["id"]].spec.version == answer.json["version"])

    publish(amqp, queue, "during-grace")
    wait_for(endpoint.count, what="a delivery during the grace period")
    during = endpoint.received[0]
    assert during.headers["webhook-signature"].count("v1,") == 2
    assert verifies(new, during) and verifies(OLD, during)

    # Shown once: reading the consumer again shows neither secret.
    for shown in (
        client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).json,
        client.get("/api/v1/consumers", headers=admin).json,
    ):
        text = json.dumps(shown)
        assert new not in text and OLD not in text
    given = "whsec_" + "Z2l2ZW4tc2VjcmV0LWdpdmVuLXNlY3JldC1naXZlbi0x"
    second = rotate(client, admin, consumer["id"], grace_seconds=1, secret=given)
    assert second.status_code == 200 and second.json["signing_secret"] == given

    def after_grace() -> Received | None:
        name = f"after-{time.monotonic()}"
        publish(amqp, queue, name)
        wait_for(lambda: endpoint.received[-1].message_id == name, what="a delivery")
        last = endpoint.received[-1]
        return last if last.headers["webhook-signature"].count("v1,") == 1 else None

    last = wait_for(after_grace, timeout=20, interval=0.3, what="a request signed once")
    assert verifies(given, last) and not verifies(new, last) and not verifies(OLD, last)
    for secret in (OLD, new, given):
        assert secret.encode() not in stored_bytes(settings)
        assert secret not in caplog.text and secret not in worker.log_text()


def test_rotation_of_an_unsigned_consumer_starts_signing(make_consumer, client, admin, endpoint):
    consumer, _ = make_consumer(endpoint.url)
    assert consumer["signing"] is False
    answer = rotate(client, admin, consumer["id"], grace_seconds=0)
    assert answer.status_code == 200 and answer.json["signing"] is True
    assert answer.json["signing_previous_until"] is None  # there was no secret to keep
    assert answer.json["signing_secret"].startswith("whsec_")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grace_seconds": -1}, "grace_seconds"),
        ({"grace_seconds": 604_801}, "grace_seconds"),
        ({"grace_seconds": "60"}, "grace_seconds"),
        ({"grace_seconds": 10**30}, "grace_seconds"),
        ({"secret": "short"}, "secret"),
        ({"secret": "***"}, "secret"),
        ({"secret": "whsec_!!not base64!!"}, "secret"),
        ({"secret": "x" * 300}, "secret"),
        ({"secret": "abcdefghijklmnop\r\nq"}, "secret"),
        ({"grace": 5}, "grace"),
    ],
)
def test_rotation_refuses_bad_input_naming_the_field(make_consumer, client, admin, endpoint, body, field):
    consumer, _ = make_consumer(endpoint.url, signing_secret=OLD)
    answer = rotate(client, admin, consumer["id"], **body)
    json_error(answer, 400, field=field)
    after = client.get(f"/api/v1/consumers/{consumer['id']}", headers=admin).json
    assert after["version"] == consumer["version"]  # nothing changed


def test_rotation_needs_admin_and_an_existing_consumer(make_consumer, client, admin, make_key, endpoint):
    consumer, _ = make_consumer(endpoint.url, signing_secret=OLD)
    for scope in ("read", "publish"):
        assert rotate(client, make_key(scope), consumer["id"]).status_code == 403
    assert rotate(client, admin, "no-such-consumer").status_code == 404
    assert client.post(f"/api/v1/consumers/{consumer['id']}/signing-secret/rotate").status_code == 401


def test_cli_rotate_secret_prints_the_new_secret_once(app, admin, make_consumer, endpoint, tmp_path):
    consumer, _ = make_consumer(endpoint.url, signing_secret=OLD)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": None,
        "WORKERRMQ_CONFIG": None,
        "WORKERRMQ_URL": f"http://127.0.0.1:{server.server_port}",
        "WORKERRMQ_KEY": admin["Authorization"].split()[1],
    }
    try:
        runner = CliRunner()
        result = runner.invoke(
            main, ["consumers", "rotate-secret", consumer["name"], "--grace", "60"], env=env
        )
        assert result.exit_code == 0, result.output
        new = result.stdout.strip()
        assert new.startswith("whsec_") and len(secret_bytes(new)) == 32
        assert "also signs until" in result.stderr and new not in result.stderr
        shown = runner.invoke(main, ["consumers", "show", consumer["name"], "--json"], env=env)
        assert shown.exit_code == 0 and new not in shown.output and OLD not in shown.output
        bad = runner.invoke(main, ["consumers", "rotate-secret", consumer["name"], "--grace", "-1"], env=env)
        assert bad.exit_code != 0 and "'--grace'" in bad.output and "604800" in bad.output
    finally:
        server.shutdown()
        thread.join(10)
