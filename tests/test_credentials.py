"""Endpoint credentials: write-only through every route, encrypted at rest, never logged,
and a wrong SECRET_KEY stops the service at start."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys

import pytest
from alembic import command
from alembic.config import Config
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.support import wait_for
from workerrmq.api import create_app
from workerrmq.core.credentials import PlaceholderUnmatched, redact_url, restore_headers, restore_url
from workerrmq.errors import ConfigError
from workerrmq.settings import Settings
from workerrmq.store import Database
from workerrmq.store.crypto import key_file_path
from workerrmq.store.db import MIGRATIONS
from workerrmq.worker.engine import Engine

PASSWORD = "pw-Vq8HkT3nLs"
TOKEN = "tok-Rz5YwD1mPa"
API_KEY = "key-Hc7NbX2eQu"
COOKIE = "sid=ck-Jm4TgF9sKo"
SIGNING = "whsec_" + base64.b64encode(b"signing-key-Wp6Lx0Ai").decode()
SECRETS = (PASSWORD, TOKEN, API_KEY, COOKIE, SIGNING, SIGNING.removeprefix("whsec_"))


def target(port: int = 9) -> str:
    return f"http://relay:{PASSWORD}@127.0.0.1:{port}/hook?tenant=acme&token={TOKEN}"


SHOWN_URL = "http://relay:***@127.0.0.1:9/hook?tenant=acme&token=***"
HEADERS = {"X-Api-Key": API_KEY, "Cookie": COOKIE, "X-Tenant": "acme"}
SHOWN_HEADERS = {"X-Api-Key": "***", "Cookie": "***", "X-Tenant": "acme"}


@pytest.fixture
def api(make_settings, make_app, database_url) -> tuple[FlaskClient, dict[str, str], Settings]:
    """The API over SQLite, then over PostgreSQL, with an admin key."""
    settings = make_settings(database_url=database_url, secret_key="the SECRET_KEY of these tests")
    client, admin = make_app(settings)
    return client, admin, settings


@pytest.fixture
def queue(api, queue_name) -> str:
    client, admin, _ = api
    name = queue_name("cred")
    assert client.post("/api/v1/queues", json={"name": name}, headers=admin).status_code == 201
    return name


def create_secret_consumer(client: FlaskClient, admin: dict[str, str], queue: str, **extra):
    response = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={
            "queue": queue,
            "name": "creds",
            "target_url": target(),
            "headers": HEADERS,
            "signing_secret": SIGNING,
            **extra,
        },
    )
    assert response.status_code == 201, response.json
    return response


def stored(settings: Settings, ref: str):
    """The definition as a worker reads it."""
    engine = Engine(settings)
    try:
        return engine.store.get(ref)
    finally:
        engine.db.dispose()


# -- pure rules ------------------------------------------------------------------------------


def test_redaction_and_restoration_round_trip():
    assert redact_url(target()) == SHOWN_URL
    assert redact_url("https://tok@example.com/x") == "https://***@example.com/x"
    assert (
        redact_url("https://example.com/x?page=2&sig=abc&api_key=")
        == "https://example.com/x?page=2&sig=***&api_key="
    )
    plain = "https://example.com/a?b=c"
    assert redact_url(plain) == plain
    assert restore_url(SHOWN_URL, target()) == target()
    changed = SHOWN_URL.replace("/hook", "/v2/hook")
    assert restore_url(changed, target()) == target().replace("/hook", "/v2/hook")
    assert restore_url(plain, target()) == plain
    assert restore_headers(SHOWN_HEADERS, HEADERS) == HEADERS
    assert restore_headers({"x-api-key": "***"}, HEADERS) == {"x-api-key": API_KEY}


@pytest.mark.parametrize(
    "new, old",
    [
        (SHOWN_URL.replace("127.0.0.1:9", "attacker.example"), target()),  # another host
        (SHOWN_URL.replace("http:", "https:"), target()),  # another scheme
        (SHOWN_URL, None),  # nothing stored
        ("http://relay:***@127.0.0.1:9/hook", "http://127.0.0.1:9/hook"),  # no password stored
    ],
)
def test_a_placeholder_never_carries_a_credential_elsewhere(new, old):
    with pytest.raises(PlaceholderUnmatched) as raised:
        restore_url(new, old)
    assert raised.value.field == "target_url"


# -- through the API, on SQLite and PostgreSQL ------------------------------------------------


def test_credentials_are_write_only_on_every_route(api, queue):
    client, admin, _ = api
    created = create_secret_consumer(client, admin, queue)
    cid = created.json["id"]
    responses = [created]
    for key in (admin, _key(client, admin, "read"), _key(client, admin, "publish")):
        responses += [
            client.get(f"/api/v1/consumers/{cid}", headers=key),
            client.get("/api/v1/consumers/creds", headers=key),
            client.get("/api/v1/consumers", headers=key),
            client.get("/getConsumers", headers=key),
        ]
    responses += [
        client.patch(f"/api/v1/consumers/{cid}", json={"timeout": 5}, headers=admin),
        client.post(f"/api/v1/consumers/{cid}/pause", headers=admin),
    ]
    for response in responses:
        assert response.status_code in (200, 201), response.json
        body = response.get_data(as_text=True)
        for secret in SECRETS:
            assert secret not in body, f"{secret} in {response.request.path}"
    shown = responses[1].json
    assert shown["target_url"] == SHOWN_URL
    assert shown["headers"] == SHOWN_HEADERS
    assert shown["signing"] is True
    assert responses[3].json["items"][0]["target_url"] == SHOWN_URL
    assert responses[4].json[0]["headers"] == SHOWN_HEADERS


def _key(client: FlaskClient, admin: dict[str, str], scope: str) -> dict[str, str]:
    answer = client.post("/api/v1/keys", json={"name": f"k-{scope}", "scope": scope}, headers=admin)
    assert answer.status_code == 201, answer.json
    return {"Authorization": f"Bearer {answer.json['key']}"}


def test_no_plaintext_credential_in_the_database(api, queue):
    client, admin, settings = api
    create_secret_consumer(client, admin, queue)
    db = Database(settings.database_url)
    try:
        with db.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM consumers")).mappings().all()
    finally:
        db.dispose()
    assert len(rows) == 1
    dumped = repr(dict(rows[0]))
    for secret in SECRETS:
        assert secret not in dumped
    assert rows[0]["target_url"] == SHOWN_URL
    assert rows[0]["credentials"]  # the values, encrypted
    assert rows[0]["signing_secret"] is None


def test_a_read_then_write_back_keeps_every_secret(api, queue):
    client, admin, settings = api
    cid = create_secret_consumer(client, admin, queue).json["id"]
    shown = client.get(f"/api/v1/consumers/{cid}", headers=admin).json
    # What a client that reads, edits one thing and writes everything back sends.
    back = {k: shown[k] for k in ("target_url", "headers", "timeout", "max_attempts")}
    back["timeout"] = 7
    back["target_url"] = shown["target_url"].replace("/hook", "/v2/hook")
    back["headers"] = {**shown["headers"], "X-Extra": "1"}
    answer = client.patch(f"/api/v1/consumers/{cid}", json=back, headers=admin)
    assert answer.status_code == 200, answer.json
    spec = stored(settings, cid)
    assert spec.target_url == target().replace("/hook", "/v2/hook")
    assert dict(spec.headers) == {**HEADERS, "X-Extra": "1"}
    assert spec.signing_secret == SIGNING
    assert spec.timeout == 7
    # A change without the secrets keeps them; "***" as the signing secret keeps it too.
    client.patch(f"/api/v1/consumers/{cid}", json={"signing_secret": "***", "max_attempts": 3}, headers=admin)
    spec = stored(settings, cid)
    assert (spec.signing_secret, dict(spec.headers)["X-Api-Key"]) == (SIGNING, API_KEY)
    # A new value replaces the old one.
    client.patch(f"/api/v1/consumers/{cid}", json={"headers": {"X-Api-Key": "new-key-1"}}, headers=admin)
    assert dict(stored(settings, cid).headers) == {"X-Api-Key": "new-key-1"}


def test_placeholders_that_stand_for_nothing_are_refused(api, queue):
    client, admin, settings = api
    refused = client.post("/api/v1/consumers", headers=admin, json={"queue": queue, "target_url": SHOWN_URL})
    assert refused.status_code == 400 and refused.json["error"]["field"] == "target_url"
    refused = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={"queue": queue, "target_url": "http://127.0.0.1:9/", "headers": {"X-Api-Key": "***"}},
    )
    assert refused.status_code == 400 and refused.json["error"]["field"] == "headers"
    cid = create_secret_consumer(client, admin, queue).json["id"]
    moved = client.patch(
        f"/api/v1/consumers/{cid}",
        headers=admin,
        json={"target_url": SHOWN_URL.replace("127.0.0.1:9", "elsewhere.example")},
    )
    assert moved.status_code == 400, moved.json
    assert moved.json["error"]["field"] == "target_url"
    assert stored(settings, cid).target_url == target()


def test_stored_credentials_never_follow_target_url_to_another_host(api, queue):
    """A PATCH that moves target_url to another scheme, host or port, and leaves stored
    credentials behind unsent (credential headers, auth), is refused naming them: the worker
    would send them to the new host. Sent again, or removed, the move goes through."""
    client, admin, settings = api
    plain = "http://127.0.0.1:9/hook"
    cid = create_secret_consumer(client, admin, queue, target_url=plain).json["id"]
    elsewhere = "http://127.0.0.1:10/hook"  # another port: another origin
    moved = client.patch(f"/api/v1/consumers/{cid}", json={"target_url": elsewhere}, headers=admin)
    assert moved.status_code == 400, moved.json
    assert moved.json["error"]["field"] == "target_url"
    assert "'X-Api-Key'" in moved.json["error"]["message"] and "'Cookie'" in moved.json["error"]["message"]
    shown = client.get(f"/api/v1/consumers/{cid}", headers=admin).json["headers"]
    placeholders = client.patch(
        f"/api/v1/consumers/{cid}", json={"target_url": elsewhere, "headers": shown}, headers=admin
    )
    assert placeholders.status_code == 400, placeholders.json
    spec = stored(settings, cid)
    assert (spec.target_url, dict(spec.headers)) == (plain, HEADERS)
    # The same origin keeps them; sent again, or removed, they may go along.
    same = client.patch(f"/api/v1/consumers/{cid}", json={"target_url": plain + "/v2"}, headers=admin)
    assert same.status_code == 200, same.json
    again = client.patch(
        f"/api/v1/consumers/{cid}", json={"target_url": elsewhere, "headers": HEADERS}, headers=admin
    )
    assert again.status_code == 200, again.json
    assert (stored(settings, cid).target_url, dict(stored(settings, cid).headers)) == (elsewhere, HEADERS)

    bearer = {"type": "bearer", "token": TOKEN}
    cid = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={"queue": queue, "name": "bearer", "target_url": plain, "auth": bearer},
    ).json["id"]
    for change in (
        {"target_url": elsewhere},
        {"target_url": elsewhere, "auth": {"type": "bearer", "token": "***"}},
    ):
        refused = client.patch(f"/api/v1/consumers/{cid}", json=change, headers=admin)
        assert refused.status_code == 400, refused.json
        assert refused.json["error"]["field"] == "target_url" and "auth" in refused.json["error"]["message"]
    assert stored(settings, cid).target_url == plain
    dropped = client.patch(
        f"/api/v1/consumers/{cid}", json={"target_url": elsewhere, "auth": None}, headers=admin
    )
    assert dropped.status_code == 200, dropped.json
    spec = stored(settings, cid)
    assert (spec.target_url, spec.auth) == (elsewhere, None)


def test_url_credentials_with_an_authorization_header_are_refused(api, queue):
    client, admin, _ = api
    both = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={"queue": queue, "target_url": target(), "headers": {"authorization": "Bearer x"}},
    )
    assert both.status_code == 400, both.json
    assert both.json["error"]["field"] == "headers"
    assert "Authorization" in both.json["error"]["message"]
    cid = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={
            "queue": queue,
            "target_url": "http://127.0.0.1:9/hook",
            "headers": {"Authorization": "Bearer x"},
        },
    ).json["id"]
    added = client.patch(f"/api/v1/consumers/{cid}", json={"target_url": target()}, headers=admin)
    assert added.status_code == 400
    assert added.json["error"]["field"] == "target_url"


# -- start-up: the key ------------------------------------------------------------------------


def test_without_secret_key_a_key_file_is_made_once_and_kept(make_settings, make_app, queue_name, caplog):
    settings = make_settings()
    path = key_file_path(settings)
    assert not path.exists()
    with caplog.at_level(logging.WARNING, logger="workerrmq.store.crypto"):
        client, admin = make_app(settings)
    warnings = [r for r in caplog.records if r.name == "workerrmq.store.crypto"]
    assert len(warnings) == 1 and "SECRET_KEY is not set" in warnings[0].getMessage()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    queue = queue_name("keyfile")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    cid = create_secret_consumer(client, admin, queue).json["id"]
    key = path.read_bytes()
    # A restart (a new process would do the same) finds the key and reads the secrets.
    client, admin = make_app(settings)
    assert path.read_bytes() == key
    assert stored(settings, cid).signing_secret == SIGNING


def test_a_wrong_secret_key_stops_api_and_worker_at_start(
    make_settings, make_app, database_url, queue_name, start_engine
):
    right = make_settings(database_url=database_url, secret_key="the right key")
    client, admin = make_app(right)
    queue = queue_name("wrongkey")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    cid = create_secret_consumer(client, admin, queue).json["id"]
    wrong = make_settings(database_url=database_url, secret_key="another key")
    with pytest.raises(ConfigError) as raised:
        create_app(wrong)
    assert raised.value.variable == "SECRET_KEY"
    assert "SECRET_KEY" in str(raised.value)
    engine = Engine(wrong)
    import asyncio

    with pytest.raises(ConfigError) as raised:
        asyncio.run(engine.run())
    assert raised.value.variable == "SECRET_KEY"
    # The old key as a fallback reads everything, and the start re-encrypts under the new key.
    rotated = make_settings(
        database_url=database_url, secret_key="another key", secret_key_fallbacks=("the right key",)
    )
    make_app(rotated)
    assert (
        stored(make_settings(database_url=database_url, secret_key="another key"), cid).signing_secret
        == SIGNING
    )


def test_the_worker_command_exits_naming_secret_key(make_settings, tmp_path, broker):
    database_url = f"sqlite:///{tmp_path}/cli.sqlite3"
    create_app(make_settings(database_url=database_url, secret_key="first")).extensions["workerrmq"].close()
    settings = make_settings(database_url=database_url)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "second",
        "RABBITMQ_URL": settings.rabbitmq_url,
        "WORKER_BIND": "127.0.0.1:0",
        "RABBITMQ_MANAGEMENT_URL": settings.rabbitmq_management_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "workerrmq.cli", "worker", "--processes", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stdout + done.stderr


def test_plaintext_rows_from_before_are_encrypted_at_first_start(make_settings, make_app, database_url):
    settings = make_settings(database_url=database_url, secret_key="upgrade key")
    db = Database(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO consumers (id, name, queue, target_url, method, headers, timeout,"
                " concurrency, max_attempts, initial_delay, max_delay, retry_on, signing_secret,"
                " ordered, circuit_threshold, circuit_cooldown, dead_letter_queue, state, version,"
                " created_at, updated_at) VALUES ('c0ffee', 'old', 'q', :url, 'POST', :headers, 10,"
                " 1, 1, 1, 10, '[]', :secret, false, 1, 1, 'q.dlq', 'paused', 1,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"url": target(), "headers": json.dumps({"X-Api-Key": API_KEY}), "secret": SIGNING},
        )
    client, admin = make_app(settings)  # migrates to the newest schema and seals
    with db.engine.connect() as connection:
        row = repr(connection.execute(text("SELECT * FROM consumers")).mappings().one())
    db.dispose()
    for secret in SECRETS:
        assert secret not in row
    shown = client.get("/api/v1/consumers/old", headers=admin).json
    assert (shown["target_url"], shown["headers"], shown["signing"]) == (
        SHOWN_URL,
        {"X-Api-Key": "***"},
        True,
    )
    spec = stored(settings, "old")
    assert (spec.target_url, dict(spec.headers), spec.signing_secret) == (
        target(),
        {"X-Api-Key": API_KEY},
        SIGNING,
    )


# -- delivery, and what the logs hold ----------------------------------------------------------


def test_credentials_reach_the_endpoint_and_no_log_line(
    make_settings, make_app, queue_name, endpoint, start_engine, amqp, caplog
):
    settings = make_settings(secret_key="delivery key")
    caplog.set_level(logging.DEBUG)
    client, admin = make_app(settings)
    worker = start_engine(settings)
    queue = queue_name("credsend")
    client.post("/api/v1/queues", json={"name": queue}, headers=admin)
    consumer = client.post(
        "/api/v1/consumers",
        headers=admin,
        json={
            "queue": queue,
            "target_url": target(endpoint.port),
            "headers": HEADERS,
            "signing_secret": SIGNING,
            "initial_delay": 0.05,
            "max_delay": 0.1,
        },
    ).json
    worker.runner(consumer["id"])
    endpoint.respond = lambda r: (503, {}) if r.headers["X-WorkerRMQ-Attempt"] == "1" else (200, {})
    client.post(f"/api/v1/queues/{queue}/messages", json={"body": "hello"}, headers=admin)
    wait_for(endpoint.delivered_ids, timeout=30, what="the delivery")
    got = endpoint.received[-1]
    assert got.headers["Authorization"] == "Basic " + base64.b64encode(f"relay:{PASSWORD}".encode()).decode()
    assert (got.headers["X-Api-Key"], got.headers["Cookie"]) == (API_KEY, COOKIE)
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.body == b"hello"
    # Every logger of the process but the test endpoint's own access log (the receiving side).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    logged += worker.log_text()
    assert "consuming" in logged and "127.0.0.1" in logged  # the start line was written
    for secret in SECRETS:
        assert secret not in logged, f"{secret} was logged"
