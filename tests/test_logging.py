"""Logging: one access line per request, never a token; JSON lines with LOG_FORMAT=json."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from workerrmq.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = {name: logging.getLogger(name).level for name in ("aio_pika", "aiormq", "urllib3", "werkzeug")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in noisy.items():
        logging.getLogger(name).setLevel(value)


def access_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "workerrmq.access"]


def test_one_access_line_per_request(client, app, caplog):
    info, token = app.extensions["workerrmq"].keys.create("logged-reader", "read")
    headers = {"Authorization": f"Bearer {token}"}
    with caplog.at_level(logging.INFO, logger="workerrmq.access"):
        client.get("/api/v1/consumers?page_size=1", headers=headers)
        client.get("/healthz")
        client.get("/api/v1/queues", headers={"Authorization": "Bearer wrong"})
        client.post("/api/v1/queues", json={"name": "x"}, headers=headers)
        client.get("/no-such-page")
    records = access_records(caplog)
    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", "/api/v1/consumers", 200),
        ("GET", "/healthz", 200),
        ("GET", "/api/v1/queues", 401),
        ("POST", "/api/v1/queues", 403),
        ("GET", "/no-such-page", 404),
    ]
    assert [r.key_name for r in records] == ["logged-reader", None, None, "logged-reader", None]
    first = records[0].getMessage()
    assert first.startswith("GET /api/v1/consumers 200 ") and "key=logged-reader" in first
    assert "ms" in first and records[0].duration_ms >= 0
    assert records[1].getMessage().endswith("key=-")


def test_tokens_never_reach_the_log(client, app, admin, caplog):
    admin_token = admin["Authorization"].split()[1]
    with caplog.at_level(logging.DEBUG):
        created = client.post("/api/v1/keys", json={"name": "new-one", "scope": "publish"}, headers=admin)
        new_token = created.json["key"]
        client.get("/api/v1/keys", headers={"Authorization": f"Bearer {new_token}"})
        client.get("/api/v1/queues", headers={"Authorization": "Bearer wrmq_guess-me-0000"})
        client.delete(f"/api/v1/keys/{created.json['id']}", headers=admin)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert "new-one" in text  # the key's name is logged...
    for secret in (admin_token, new_token, "wrmq_guess-me-0000"):
        assert secret not in text  # ...its token never
    assert any("key created" in r.getMessage() for r in caplog.records)


def test_json_format_gives_parseable_lines(restore_logging, capsys):
    configure_logging("INFO", "json")
    logger = logging.getLogger("workerrmq.test")
    logger.info("hello %s", "world", extra={"queue": "orders"})
    logger.warning("second line")
    logger.debug("filtered out at INFO")
    try:
        raise ValueError("kaboom")
    except ValueError:
        logger.exception("with a traceback")
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    assert records[0]["message"] == "hello world"
    assert records[0]["level"] == "INFO"
    assert records[0]["logger"] == "workerrmq.test"
    assert records[0]["queue"] == "orders"
    assert "time" in records[0]
    assert records[1]["level"] == "WARNING"
    assert "kaboom" in records[2]["exc_info"]


def test_json_access_lines_carry_fields(restore_logging, client, admin):
    stream = io.StringIO()
    configure_logging("INFO", "json")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    client.get("/api/v1/keys", headers=admin)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line]
    access = [line for line in lines if line["logger"] == "workerrmq.access"]
    assert len(access) == 1
    assert access[0]["method"] == "GET"
    assert access[0]["path"] == "/api/v1/keys"
    assert access[0]["status"] == 200
    assert access[0]["key_name"].startswith("admin-")
    assert access[0]["duration_ms"] >= 0
    assert admin["Authorization"].split()[1] not in stream.getvalue()


def test_text_format(restore_logging, capsys):
    configure_logging("WARNING", "text")
    logging.getLogger("workerrmq.test").info("hidden")
    logging.getLogger("workerrmq.test").warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "WARNING workerrmq.test: shown" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])
