"""The ``workerrmq`` command: keys, start-up errors, and the API served for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from tests.support import free_port, wait_for
from workerrmq.cli import main
from workerrmq.store import Database
from workerrmq.store.keys import TOKEN_PREFIX, KeyStore

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> dict[str, str]:
    """Run in an empty directory (no stray .env) with a throwaway SQLite database."""
    monkeypatch.chdir(tmp_path)
    return {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3"}


def invoke(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_keys_db_create_list_revoke(cli_env):
    created = invoke(cli_env, "keys", "db", "create", "ci-publisher", "--scope", "publish", "--create")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith(TOKEN_PREFIX) and "\n" not in token  # stdout is just the token
    assert "ci-publisher" in created.stderr and "publish" in created.stderr
    assert f"database: {cli_env['DATABASE_URL']} (new file " in created.stderr  # which one, and new

    store = KeyStore(Database(cli_env["DATABASE_URL"]))
    key = store.authenticate(token)
    assert key is not None and (key.name, key.scope) == ("ci-publisher", "publish")

    default = invoke(cli_env, "keys", "db", "create", "reader")  # the file exists now: no --create
    assert default.exit_code == 0, default.output
    path = cli_env["DATABASE_URL"].removeprefix("sqlite:///")
    assert f"database: {cli_env['DATABASE_URL']} ({path})\n" in default.stderr
    assert store.authenticate(default.stdout.strip()).scope == "read"

    for spelling in ("ls", "list"):
        listed = invoke(cli_env, "keys", "db", spelling)
        assert listed.exit_code == 0
        lines = listed.stdout.splitlines()
        assert len(lines) == 2
        assert "ci-publisher" in lines[0] and "publish" in lines[0] and "active" in lines[0]
        assert token[:12] in lines[0]
        assert token not in listed.output and token[12:] not in listed.output
    as_json = json.loads(invoke(cli_env, "keys", "db", "ls", "--json").stdout)
    assert as_json["total"] == 2 and [k["name"] for k in as_json["items"]] == ["ci-publisher", "reader"]
    assert token[12:] not in json.dumps(as_json)

    revoked = invoke(cli_env, "keys", "db", "revoke", str(key.id))
    assert revoked.exit_code == 0
    assert "ci-publisher" in revoked.stdout
    # A fresh store, as another process would have (this one trusts the key for 2 s).
    assert KeyStore(store.db).authenticate(token) is None
    assert "revoked" in invoke(cli_env, "keys", "db", "ls").stdout.splitlines()[0]
    store.db.dispose()


def test_keys_db_refuses_to_start_a_new_sqlite_file_unless_asked(cli_env, tmp_path):
    """Run from another directory, a relative sqlite URL names a file the API does not read:
    refused, and nothing created, unless --create."""
    elsewhere = {"DATABASE_URL": "sqlite:///var/workerrmq.sqlite3"}  # the default, relative to the cwd
    for args in (["create", "ops-admin", "--scope", "admin"], ["ls"], ["revoke", "1"]):
        refused = invoke(elsewhere, "keys", "db", *args)
        assert refused.exit_code == 1, refused.output
        expected = tmp_path / "var" / "workerrmq.sqlite3"
        assert f"no database at {expected}" in refused.stderr and "--create" in refused.stderr
        assert not expected.exists() and not expected.parent.exists()
        assert refused.stdout == ""
    made = invoke(elsewhere, "keys", "db", "create", "ops-admin", "--scope", "admin", "--create")
    assert made.exit_code == 0, made.output
    assert (tmp_path / "var" / "workerrmq.sqlite3").exists()
    assert (
        f"database: sqlite:///var/workerrmq.sqlite3 (new file {tmp_path}/var/workerrmq.sqlite3)"
        in made.stderr
    )
    listed = invoke(elsewhere, "keys", "db", "ls")  # the relative path, resolved where it ran
    assert f"database: sqlite:///var/workerrmq.sqlite3 ({tmp_path}/var/workerrmq.sqlite3)" in listed.stderr


def test_keys_db_names_a_postgres_database_without_its_password(cli_env, postgres_url):
    user, at, rest = postgres_url.partition("@")
    url = f"{user}:pw-Hx7c{at}{rest}"  # trust authentication: the password is not checked
    listed = invoke({"DATABASE_URL": url}, "keys", "db", "ls")  # no file: no --create needed
    assert listed.exit_code == 0, listed.output
    assert f"database: {user}:***{at}{rest}" in listed.stderr
    assert "pw-Hx7c" not in listed.output


def test_keys_errors(cli_env):
    assert invoke(cli_env, "keys", "db", "create", "twice", "--create").exit_code == 0
    duplicate = invoke(cli_env, "keys", "db", "create", "twice")
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.stderr and "Traceback" not in duplicate.output
    unknown = invoke(cli_env, "keys", "db", "revoke", "4242")
    assert unknown.exit_code == 1 and "4242" in unknown.stderr
    bad_scope = invoke(cli_env, "keys", "db", "create", "x", "--scope", "root")
    assert bad_scope.exit_code == 1 and "scope" in bad_scope.stderr


def test_keys_with_invalid_configuration(cli_env):
    result = invoke({**cli_env, "DATABASE_URL": "no-scheme.db"}, "keys", "db", "ls")
    assert result.exit_code == 1
    assert "DATABASE_URL" in result.stderr and "Traceback" not in result.output


def run_cli(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workerrmq.cli", *args],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_api_with_unreachable_broker_prints_one_line(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    url = f"amqp://guest:hunter2@127.0.0.1:{port}/%2F"
    result = run_cli(
        tmp_path, {"RABBITMQ_URL": url, "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3"}, "api"
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"amqp://guest:***@127.0.0.1:{port}/%2F" in lines[0]
    assert "rabbitmq-server" in lines[0]
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_api_with_invalid_setting_names_it(tmp_path):
    result = run_cli(tmp_path, {"LOG_FORMAT": "xml"}, "api")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOG_FORMAT" in lines[0]
    assert "Traceback" not in result.stderr


class Server:
    """A server process with its output in files; stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log_dir: Path) -> None:
        self.stdout = log_dir / "server.out"
        self.stderr = log_dir / "server.err"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(args, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=err)

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def wait_healthy(self, base: str) -> None:
        def healthy() -> bool:
            assert self.process.poll() is None, f"server exited:\n{self.output()}"
            try:
                return requests.get(f"{base}/healthz", timeout=5).status_code == 200
            except requests.RequestException:  # not listening yet, or workers still booting
                return False

        wait_for(healthy, timeout=30, interval=0.1, what=f"{base}/healthz")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def server(tmp_path) -> Iterator:
    started: list[Server] = []

    def start(args: list[str], env: dict[str, str], cwd: Path) -> Server:
        s = Server(args, env, cwd, tmp_path)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.process.poll() is None:
            s.process.kill()
            s.process.wait()


def exercise(base: str, token: str, queue: str, amqp) -> None:
    """The seed's examples over real HTTP with the configured key."""
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{base}/getQueues", timeout=10).status_code == 401
    created = requests.post(f"{base}/createQueue", json={"queueName": queue}, headers=headers, timeout=10)
    assert created.json() == {"message": "Queue has been created successfully."}
    queues = requests.get(f"{base}/getQueues", headers=headers, timeout=10)
    assert queues.status_code == 200
    assert queue in [q["queueName"] for q in queues.json()]
    for n in range(4):  # several requests: they may land on either worker
        published = requests.post(
            f"{base}/messagePublish",
            json={"queueName": queue, "message": f"over http {n}"},
            headers=headers,
            timeout=10,
        )
        assert published.status_code == 200
        assert published.json() == {"message": "Message has been published successfully."}
    bodies = [amqp.basic_get(queue, auto_ack=True)[2] for _ in range(4)]
    assert bodies == [f"over http {n}".encode() for n in range(4)]


def test_workerrmq_api_end_to_end(server, tmp_path, queue_name, amqp):
    port = free_port()
    token = "wrmq_end-to-end-admin-key-abcdefghijkl"
    env = {
        "BIND": f"127.0.0.1:{port}",
        "API_WORKERS": "2",
        "API_THREADS": "2",
        "DATABASE_URL": f"sqlite:///{tmp_path}/e2e.sqlite3",
        "WORKERRMQ_API_KEY": token,
        "LOG_FORMAT": "json",
    }
    api = server([str(BIN / "workerrmq"), "api"], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    api.wait_healthy(base)
    exercise(base, token, queue_name("e2e"), amqp)
    assert api.stop() == 0
    output = api.output()
    assert token not in output
    lines = [line for line in api.stderr.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # LOG_FORMAT=json: every line is JSON
    access = [r for r in records if r.get("logger") == "workerrmq.access"]
    assert {"path": "/messagePublish", "status": 200, "key_name": "bootstrap"}.items() <= next(
        r for r in access if r["path"] == "/messagePublish"
    ).items()
    booted = [
        r for r in records if r["logger"] == "gunicorn.error" and r["message"].startswith("Booting worker")
    ]
    assert len(booted) == 2  # API_WORKERS=2; and Gunicorn's own lines are JSON too


def test_gunicorn_wsgi_app(server, tmp_path, queue_name, amqp):
    port = free_port()
    token = "wrmq_gunicorn-admin-key-abcdefghijklmn"
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/wsgi.sqlite3",
        "WORKERRMQ_API_KEY": token,
    }
    gunicorn = server(
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--no-control-socket",
            "wsgi:app",
        ],
        env,
        PROJECT,
    )
    base = f"http://127.0.0.1:{port}"
    gunicorn.wait_healthy(base)
    exercise(base, token, queue_name("wsgi"), amqp)
    assert gunicorn.stop() == 0
    assert token not in gunicorn.output()
